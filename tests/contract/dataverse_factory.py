"""The CRM contract suite against the Dataverse connector on the Dataverse stand-in (HTTPS, its test
CA): one stand-in per session, emptied before each test.

The harness acts as a Dynamics 365 user through the Web API itself (add, edit, reassign, delete
contacts; make appointments) and makes Dataverse fail through the stand-in's control API: a fault
for a port operation hits the requests that operation sends (a change set's boundary names its
table, so a journal write is told from the lookup before it)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime

import httpx
import pytest

from emulators.dataverse.launcher import DataverseStandIn, dataverse_stand_in
from shared.crm.dataverse import DataverseConnector
from shared.ports.crm import CrmPort

# Port operation → (method, path fragment, body fragment) of the requests the connector sends for it.
_ROUTES = {
    "find_people": ("POST", "$batch", "contacts?$select="),
    "upsert_journal": ("POST", "$batch", "changeset_emails"),
    "upsert_journals": ("POST", "$batch", "changeset_emails"),
    "get_journal": ("GET", "emails", ""),
    "upsert_appointment": ("POST", "$batch", "changeset_appointments"),
    "cancel_appointment": ("PATCH", "appointments", ""),
    "delete_appointment": ("DELETE", "appointments", ""),
    "appointment_changes": ("GET", "appointments", ""),
    "upsert_contact": ("POST", "contacts", ""),
    "delete_contact": ("PATCH", "contacts", ""),
    "contact_changes": ("GET", "contacts", ""),
    "check": ("GET", "WhoAmI", ""),
}
TOKEN = "contract-suite-token"


class DataverseHarness:
    retry_budget = 2

    def __init__(self, stand_in: DataverseStandIn) -> None:
        self.dv = stand_in
        self.clients: list[httpx.AsyncClient] = []
        self.connector: CrmPort = self._connector(TOKEN)

    def _connector(self, token: str) -> DataverseConnector:
        client = httpx.AsyncClient(verify=self.dv.ssl_context(), timeout=30.0)
        self.clients.append(client)
        return DataverseConnector(
            self.dv.url,
            token,
            client=client,
            max_attempts=self.retry_budget + 1,
            max_retry_wait=5.0,
            backoff_base=0.01,
            page_size=2,
            provision_owners=True,
        )

    # -- acting as a Dynamics 365 user ---------------------------------------------------------

    def add_person(
        self, emails: str | Sequence[str] = (), *, name: str = "", owner: str = "", kind: str = "contact"
    ) -> str:
        if kind == "company":
            addresses = [emails] if isinstance(emails, str) else list(emails)
            return self.dv.add_account(name, addresses[0] if addresses else "")
        return self.dv.add_contact(emails, name=name, owner=owner)  # Dataverse's people are contacts

    def edit_person(self, person_id: str, *, owner: str | None = None, job_title: str | None = None) -> None:
        if job_title is not None:
            self.dv.update("contacts", person_id, {"jobtitle": job_title})
        if owner is not None:
            self.dv.reassign("contacts", person_id, owner)

    def share_person(self, person_id: str, owner: str) -> bool:
        """A Dataverse row has one owner (sharing it with GrantAccess gives access, not ownership)."""
        return False

    def delete_person(self, person_id: str) -> None:
        self.dv.delete("contacts", person_id)

    def create_appointment(self, *, owner: str, subject: str, start: datetime, end: datetime) -> str:
        return self.dv.add_appointment(owner=owner, subject=subject, start=start, end=end)

    def edit_appointment(self, appointment_id: str, *, subject: str) -> None:
        self.dv.update("appointments", appointment_id, {"subject": subject})

    # -- end states ----------------------------------------------------------------------------

    def journal_keys(self) -> list[str]:
        keys = []
        for row in self.dv.rows("emails", select="messageid,crmsync_outlookdetails"):
            details = json.loads(row.get("crmsync_outlookdetails") or "{}")
            keys.append(str(details.get("key") or row["messageid"]))
        return sorted(keys)

    def contact_ids(self, owner: str) -> list[str]:
        users = self.dv.rows(
            "systemusers", filter=f"internalemailaddress eq '{owner}'", select="systemuserid"
        )
        if not users:
            return []
        mine = f"_ownerid_value eq {users[0]['systemuserid']} and statecode eq 0"
        return [str(r["contactid"]) for r in self.dv.rows("contacts", filter=mine, select="contactid")]

    def fail(
        self,
        op: str,
        *,
        status: int,
        times: int,
        retry_after: str | None = None,
        apply_then_fail: bool = False,
    ) -> None:
        method, path, body = _ROUTES[op]
        self.dv.fault(
            status,
            count=times,
            method=method,
            path_contains=path,
            body_contains=body,
            retry_after=retry_after,
            apply_then_fail=apply_then_fail,
            message=f"injected {status} for {op}",
        )

    def with_bad_credentials(self) -> CrmPort:
        self.dv.deny_token("not-the-token")
        return self._connector("not-the-token")


@pytest.fixture(scope="session")
def dataverse_server() -> Iterator[DataverseStandIn]:
    with dataverse_stand_in() as stand_in:
        yield stand_in


@contextlib.asynccontextmanager
async def dataverse_harness(request: pytest.FixtureRequest) -> AsyncIterator[DataverseHarness]:
    stand_in: DataverseStandIn = request.getfixturevalue("dataverse_server")
    stand_in.reset()
    harness = DataverseHarness(stand_in)
    try:
        yield harness
    finally:
        await harness.connector.aclose()
        for client in harness.clients:
            await client.aclose()
