"""The CRM contract suite against BottleCRM itself: one CRM per test session, emptied before each test.

The harness acts as a BottleCRM user through BottleCRM's own REST API (add, edit, reassign, delete
people) and reads end states through the API or, for what the API cannot list (every interaction of the
organisation), through SQL. Faults are injected between the connector and the CRM by an httpx
transport: answered without reaching the CRM, or after the CRM did the work (`apply_then_fail`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from emulators.bottlecrm import BottleCrm
from shared.crm.bottlecrm import CUSTOM_FIELDS, BottleCrmConnector, journal_key
from shared.ports.crm import CrmPort
from tests.bottlecrm_server import bottlecrm_session

# Everything the suite creates; CASCADE takes the link tables with it. Users and fields stay.
_RESET = "TRUNCATE contacts, lead, accounts, task, interaction, activity CASCADE"


def _find_people(r: httpx.Request) -> bool:
    q = r.url.params
    return (
        r.method == "GET"
        and r.url.path in ("/api/contacts/", "/api/leads/")
        and ("email" in q or any(k.startswith("cf_outlook_email") for k in q))
    )


def _writes(path: str, *methods: str) -> Callable[[httpx.Request], bool]:
    return lambda r: r.method in methods and r.url.path.startswith(path)


# Port operation → which requests of the BottleCRM connector a fault for it hits.
_ROUTES: dict[str, Callable[[httpx.Request], bool]] = {
    "find_people": _find_people,
    "upsert_journal": _writes("/api/interactions/", "POST", "PATCH"),
    "upsert_journals": _writes("/api/interactions/", "POST", "PATCH"),  # no bulk API: one write each
    "get_journal": _writes("/api/interactions/", "GET"),
    "upsert_appointment": _writes("/api/tasks/", "POST", "PATCH"),
    "cancel_appointment": _writes("/api/tasks/", "PATCH"),
    "delete_appointment": _writes("/api/tasks/", "DELETE"),
    "appointment_changes": lambda r: False,  # no requests: the feed is declared absent
    "upsert_contact": _writes("/api/contacts/", "POST", "PATCH"),
    "delete_contact": _writes("/api/contacts/", "DELETE"),
    "contact_changes": lambda r: r.method == "GET" and "assigned_to" in r.url.params,
    "check": lambda r: (
        r.method == "GET" and r.url.path == "/api/contacts/" and set(r.url.params) == {"limit"}
    ),
}


@dataclass
class _Fault:
    matches: Callable[[httpx.Request], bool]
    status: int
    times: int
    retry_after: str | None
    after_apply: bool
    message: str


class FaultyTransport(httpx.AsyncBaseTransport):
    """The real transport, with the next matching requests answered by an injected fault."""

    def __init__(self) -> None:
        self._real = httpx.AsyncHTTPTransport()
        self.faults: list[_Fault] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        fault = next((f for f in self.faults if f.times > 0 and f.matches(request)), None)
        if fault is None:
            return await self._real.handle_async_request(request)
        fault.times -= 1
        if fault.after_apply:
            done = await self._real.handle_async_request(request)
            await done.aread()
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        return httpx.Response(fault.status, headers=headers, json={"error": True, "errors": fault.message})

    async def aclose(self) -> None:
        await self._real.aclose()


class BottleCrmHarness:
    retry_budget = 2

    def __init__(self, server: BottleCrm) -> None:
        self.server = server
        self.transport = FaultyTransport()
        self.client = httpx.AsyncClient(transport=self.transport, timeout=30.0)
        self.connector: CrmPort = BottleCrmConnector(
            server.base_url, server.token, client=self.client, provision_owners=True,
            max_attempts=self.retry_budget + 1, max_retry_wait=5.0,
        )  # fmt: skip
        self.api = httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {server.token}"}, timeout=30.0
        )

    def close(self) -> None:
        self.api.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def _profiles(self) -> dict[str, str]:
        data = self._call("GET", "/api/users/get-teams-and-users/")
        return {p["user_details"]["email"].lower(): p["id"] for p in data["profiles"]}

    def _profile(self, owner: str) -> str:
        owner = owner.lower()
        if owner not in self._profiles():
            self._call("POST", "/api/users/", json={"email": owner, "role": "USER"})
        return self._profiles()[owner]

    def ensure_fields(self) -> None:
        """The custom fields an admin (or the connector) sets up once per organisation."""
        for model, fields in CUSTOM_FIELDS.items():
            have = {
                d["key"]
                for d in self._call("GET", "/api/custom-fields/", params={"target_model": model})[
                    "definitions"
                ]
            }
            for key, label, kind, filterable in fields:
                if key not in have:
                    self._call("POST", "/api/custom-fields/", json={
                        "target_model": model, "key": key, "label": label, "field_type": kind,
                        "is_filterable": filterable,
                    })  # fmt: skip

    # -- acting as a BottleCRM user ------------------------------------------------------------

    def add_person(
        self, emails: str | Sequence[str] = (), *, name: str = "", owner: str = "", kind: str = "contact"
    ) -> str:
        addresses = [emails] if isinstance(emails, str) else list(emails)
        first, _, last = (name or "No Name").partition(" ")
        email = addresses[0] if addresses else None
        if kind == "company":
            return str(self._call("POST", "/api/accounts/", json={"name": name, "email": email})["id"])
        body: dict[str, Any] = {"first_name": first, "last_name": last or "-", "email": email}
        if owner:
            body["assigned_to"] = [self._profile(owner)]
        if kind == "lead":
            return str(self._call("POST", "/api/leads/", json={**body, "title": name})["id"])
        slots = {f"outlook_email{i}": a.lower() for i, a in enumerate(addresses[1:3], start=2)}
        return str(self._call("POST", "/api/contacts/", json={**body, "custom_fields": slots})["id"])

    def edit_person(self, person_id: str, *, owner: str | None = None, job_title: str | None = None) -> None:
        body: dict[str, Any] = {}
        if job_title is not None:
            body["title"] = job_title
        if owner is not None:
            body["assigned_to"] = [self._profile(owner)]
        self._call("PATCH", f"/api/contacts/{person_id}/", json=body)

    def share_person(self, person_id: str, owner: str) -> bool:
        row = self._call("GET", f"/api/contacts/{person_id}/")["contact_obj"]
        assignees = [a["id"] for a in row["assigned_to"]]
        self._call(
            "PATCH", f"/api/contacts/{person_id}/", json={"assigned_to": [*assignees, self._profile(owner)]}
        )
        return True

    def delete_person(self, person_id: str) -> None:
        for kind in ("contacts", "leads"):
            if self.api.delete(f"/api/{kind}/{person_id}/").status_code < 400:
                return
        raise AssertionError(f"no person {person_id}")

    def create_appointment(self, *, owner: str, subject: str, start: datetime, end: datetime) -> str:
        self._call("POST", "/api/tasks/", json={
            "title": subject, "status": "New", "priority": "Medium", "due_date": start.date().isoformat(),
            "assigned_to": [self._profile(owner)],
        })  # fmt: skip
        return str(self._call("GET", "/api/tasks/", params={"title": subject})["tasks"][0]["id"])

    def edit_appointment(self, appointment_id: str, *, subject: str) -> None:
        self._call("PATCH", f"/api/tasks/{appointment_id}/", json={"title": subject})

    # -- end states ----------------------------------------------------------------------------

    def journal_keys(self) -> list[str]:
        bodies = json.loads(self.server.sql("SELECT coalesce(json_agg(body), '[]') FROM interaction") or "[]")
        return sorted(k for k in map(journal_key, bodies) if k is not None)

    def contact_ids(self, owner: str) -> list[str]:
        profile = self._profiles().get(owner.lower())
        if profile is None:
            return []
        data = self._call("GET", "/api/contacts/", params={"assigned_to": profile, "limit": 500})
        return [str(r["id"]) for r in data["results"]]

    def fail(
        self,
        op: str,
        *,
        status: int,
        times: int,
        retry_after: str | None = None,
        apply_then_fail: bool = False,
    ) -> None:
        self.transport.faults.append(
            _Fault(_ROUTES[op], status, times, retry_after, apply_then_fail, f"injected {status} for {op}")
        )

    def with_bad_credentials(self) -> CrmPort:
        return BottleCrmConnector(self.server.base_url, "bcrm_pat_not-the-token")


@pytest.fixture(scope="session")
def bottlecrm_server() -> Iterator[BottleCrm]:
    yield from bottlecrm_session()


@contextlib.asynccontextmanager
async def bottlecrm_harness(request: pytest.FixtureRequest) -> AsyncIterator[BottleCrmHarness]:
    server: BottleCrm = request.getfixturevalue("bottlecrm_server")
    server.sql(_RESET)
    harness = BottleCrmHarness(server)
    harness.ensure_fields()
    try:
        yield harness
    finally:
        await harness.connector.aclose()
        await harness.client.aclose()
        harness.close()
