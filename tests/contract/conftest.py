"""Fixtures for the CRM port contract suite: one `crm` harness per connector.

To run the suite against another connector, add one async factory to `CRM_FACTORIES` (and, if it
needs something optional such as a running BottleCRM, a mark in `CRM_MARKS`). A harness gives the
suite the connector under test plus what only the CRM side can do: act as a CRM user (add people,
edit, reassign, delete, create appointments) and make the CRM fail. The suite reads
`harness.connector.capabilities` and adapts; it is never skipped wholesale for a connector.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import date, datetime
from typing import Any, Protocol

import pytest

from emulators.crm.launcher import ReferenceCrm, reference_crm
from shared.crm.memory import InMemoryCrm
from shared.crm.reference import ReferenceCrmConnector, parse_retry_after
from shared.errors import CrmError, CrmRejectedError, CrmRetryableError
from shared.model import TaskStatus
from shared.ports.crm import Capabilities, CrmPort
from tests.contract.bottlecrm_factory import bottlecrm_harness, bottlecrm_server  # noqa: F401 (fixture)
from tests.contract.dataverse_factory import dataverse_harness, dataverse_server  # noqa: F401 (fixture)
from tests.contract.graph_harness import contract_graph  # noqa: F401 (fixture)

# Port operation → (HTTP method, path fragment) of the reference API, for fault injection.
_ROUTES = {
    "find_people": ("POST", "/people/lookup"),
    "upsert_journal": ("PUT", "/journals/"),
    "upsert_journals": ("POST", "/journals/bulk"),
    "get_journal": ("GET", "/journals/"),
    "upsert_appointment": ("PUT", "/appointments/by-key/"),
    "cancel_appointment": ("POST", "/cancel"),
    "appointment_changes": ("GET", "/appointments/changes"),
    "upsert_contact": ("", "/contacts/"),
    "delete_contact": ("DELETE", "/contacts/"),
    "contact_changes": ("GET", "/contacts/changes"),
    "upsert_task": ("", "/tasks/"),
    "task_changes": ("GET", "/tasks/changes"),
    "check": ("GET", "/health"),
}


class CrmHarness(Protocol):
    connector: CrmPort
    # How many failed requests in a row the connector rides out by itself (0: it has no transport).
    retry_budget: int

    def add_person(
        self, emails: str | Sequence[str] = (), *, name: str = "", owner: str = "", kind: str = "contact"
    ) -> str: ...
    def edit_person(
        self, person_id: str, *, owner: str | None = None, job_title: str | None = None
    ) -> None: ...
    def delete_person(self, person_id: str) -> None: ...
    def share_person(self, person_id: str, owner: str) -> bool:
        """Assign the person to `owner` too; False when this CRM assigns a contact to one owner only."""

    def create_appointment(self, *, owner: str, subject: str, start: datetime, end: datetime) -> str: ...
    def edit_appointment(self, appointment_id: str, *, subject: str) -> None: ...
    def journal_keys(self) -> list[str]: ...
    def contact_ids(self, owner: str) -> list[str]: ...
    def add_task(self, *, owner: str, title: str, due: date | None = None) -> str: ...
    def edit_task(
        self, task_id: str, *, owner: str | None = None, title: str | None = None, done: bool = False
    ) -> None: ...
    def delete_task(self, task_id: str) -> None: ...
    def task_ids(self, owner: str) -> list[str]: ...
    def fail(
        self,
        op: str,
        *,
        status: int,
        times: int,
        retry_after: str | None = None,
        apply_then_fail: bool = False,
    ) -> None:
        """The next `times` requests the CRM receives for port operation `op` fail with `status`."""

    def with_bad_credentials(self) -> CrmPort: ...


class MemoryHarness:
    retry_budget = 0

    def __init__(self, capabilities: Capabilities | None = None) -> None:
        self.fake = InMemoryCrm(capabilities)
        self.connector: CrmPort = self.fake

    def add_person(
        self, emails: str | Sequence[str] = (), *, name: str = "", owner: str = "", kind: str = "contact"
    ) -> str:
        return self.fake.add_person(emails, name=name, owner=owner, kind=kind)

    def edit_person(self, person_id: str, *, owner: str | None = None, job_title: str | None = None) -> None:
        fields = {} if job_title is None else {"job_title": job_title}
        self.fake.update_person(person_id, owner=owner, **fields)

    def delete_person(self, person_id: str) -> None:
        self.fake.delete_person(person_id)

    def share_person(self, person_id: str, owner: str) -> bool:
        return False  # one owner per contact

    def create_appointment(self, *, owner: str, subject: str, start: datetime, end: datetime) -> str:
        return self.fake.create_appointment(owner=owner, subject=subject, start=start, end=end)

    def edit_appointment(self, appointment_id: str, *, subject: str) -> None:
        self.fake.update_appointment(appointment_id, subject=subject)

    def journal_keys(self) -> list[str]:
        return list(self.fake.journals)

    def contact_ids(self, owner: str) -> list[str]:
        return [c.ref.id for c in self.fake.contacts.values() if c.owner == owner and c.ref]

    def add_task(self, *, owner: str, title: str, due: date | None = None) -> str:
        return self.fake.add_task(owner=owner, title=title, due=due)

    def edit_task(
        self, task_id: str, *, owner: str | None = None, title: str | None = None, done: bool = False
    ) -> None:
        fields: dict[str, Any] = {} if title is None else {"title": title}
        if done:
            fields.update(status=TaskStatus.COMPLETED, completed=date.today())
        self.fake.update_task(task_id, owner=owner, **fields)

    def delete_task(self, task_id: str) -> None:
        self.fake.remove_task(task_id)

    def task_ids(self, owner: str) -> list[str]:
        return [t.ref.id for t in self.fake.tasks.values() if t.owner == owner and t.ref]

    def fail(
        self,
        op: str,
        *,
        status: int,
        times: int,
        retry_after: str | None = None,
        apply_then_fail: bool = False,
    ) -> None:
        error: CrmError
        if status == 429 or status >= 500:
            error = CrmRetryableError(
                f"CRM answered {status}", status=status, retry_after=parse_retry_after(retry_after)
            )
        else:
            error = CrmRejectedError(f"CRM rejected ({status}): injected fault", status=status)
        self.fake.fail_next(op, error, times=times, after_apply=apply_then_fail)

    def with_bad_credentials(self) -> CrmPort:
        bad = InMemoryCrm()
        bad.credentials_ok = False
        return bad


class ReferenceHarness:
    retry_budget = 2

    def __init__(self, server: ReferenceCrm) -> None:
        self.server = server
        self.connector: CrmPort = self._connector(server.token)

    def _connector(self, token: str) -> ReferenceCrmConnector:
        return ReferenceCrmConnector(
            self.server.base_url, token, max_retries=self.retry_budget, backoff_base=0.01, backoff_max=0.05,
            max_retry_after=5.0, timeout=10.0, page_size=2,
        )  # fmt: skip

    def add_person(
        self, emails: str | Sequence[str] = (), *, name: str = "", owner: str = "", kind: str = "contact"
    ) -> str:
        return self.server.add_person(emails, name=name, owner=owner, kind=kind)

    def edit_person(self, person_id: str, *, owner: str | None = None, job_title: str | None = None) -> None:
        fields: dict[str, Any] = {} if job_title is None else {"jobTitle": job_title}
        self.server.update_person(person_id, **fields, **({} if owner is None else {"owner": owner}))

    def delete_person(self, person_id: str) -> None:
        self.server.delete_person(person_id)

    def share_person(self, person_id: str, owner: str) -> bool:
        return False  # the API's contacts have one owner

    def create_appointment(self, *, owner: str, subject: str, start: datetime, end: datetime) -> str:
        return self.server.create_appointment(
            owner=owner, subject=subject, start=start.isoformat(), end=end.isoformat()
        )

    def edit_appointment(self, appointment_id: str, *, subject: str) -> None:
        self.server.update_appointment(appointment_id, subject=subject)

    def journal_keys(self) -> list[str]:
        return [j["key"] for j in self.server.journals()]

    def contact_ids(self, owner: str) -> list[str]:
        return [c["id"] for c in self.server.contacts(owner)]

    def add_task(self, *, owner: str, title: str, due: date | None = None) -> str:
        return self.server.add_task(owner=owner, title=title, **({"due": due.isoformat()} if due else {}))

    def edit_task(
        self, task_id: str, *, owner: str | None = None, title: str | None = None, done: bool = False
    ) -> None:
        fields: dict[str, Any] = {} if title is None else {"title": title}
        if owner is not None:
            fields["owner"] = owner
        if done:
            fields.update(status="completed", completed=date.today().isoformat())
        self.server.update_task(task_id, **fields)

    def delete_task(self, task_id: str) -> None:
        self.server.delete_task(task_id)

    def task_ids(self, owner: str) -> list[str]:
        return [t["id"] for t in self.server.tasks(owner)]

    def fail(
        self,
        op: str,
        *,
        status: int,
        times: int,
        retry_after: str | None = None,
        apply_then_fail: bool = False,
    ) -> None:
        method, fragment = _ROUTES[op]
        self.server.fault(
            status, count=times, method=method, path_contains=fragment, retry_after=retry_after,
            apply_then_fail=apply_then_fail, message=f"injected {status} for {op}",
        )  # fmt: skip

    def with_bad_credentials(self) -> CrmPort:
        return self._connector("not-the-token")


@pytest.fixture(scope="session")
def reference_server() -> Iterator[ReferenceCrm]:
    with reference_crm() as server:
        yield server


@contextlib.asynccontextmanager
async def _memory(request: pytest.FixtureRequest) -> AsyncIterator[CrmHarness]:
    yield MemoryHarness()


# The fake declaring what a limited CRM (BottleCRM-like) cannot do: proves the suite honours capabilities.
LIMITED = Capabilities(
    multi_person_journal=False,
    contact_change_feed=False,
    appointment_times=False,
    appointment_change_feed=False,
    task_change_feed=False,
    task_fields=frozenset({"title", "body", "due", "importance", "status"}),
)


@contextlib.asynccontextmanager
async def _memory_limited(request: pytest.FixtureRequest) -> AsyncIterator[CrmHarness]:
    yield MemoryHarness(LIMITED)


@contextlib.asynccontextmanager
async def _reference(request: pytest.FixtureRequest) -> AsyncIterator[CrmHarness]:
    server: ReferenceCrm = request.getfixturevalue("reference_server")
    server.reset()
    harness = ReferenceHarness(server)
    try:
        yield harness
    finally:
        await harness.connector.aclose()


CRM_FACTORIES: dict[
    str, Callable[[pytest.FixtureRequest], contextlib.AbstractAsyncContextManager[CrmHarness]]
] = {
    "memory": _memory,
    "memory-limited": _memory_limited,
    "reference": _reference,
    "bottlecrm": bottlecrm_harness,
    "dataverse": dataverse_harness,
}
CRM_MARKS: dict[str, list[pytest.MarkDecorator]] = {"bottlecrm": [pytest.mark.bottlecrm]}


@pytest.fixture(params=[pytest.param(name, marks=CRM_MARKS.get(name, []), id=name) for name in CRM_FACTORIES])
async def crm(request: pytest.FixtureRequest) -> AsyncIterator[CrmHarness]:
    async with CRM_FACTORIES[request.param](request) as harness:
        yield harness
