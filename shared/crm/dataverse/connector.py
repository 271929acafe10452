"""`DataverseConnector`: the CRM port over the Dataverse Web API, for Dynamics 365.

How our records map (docs/connectors.md §8 has the table; `wire` and `activity_rows` the columns):

- owners are Dynamics 365 users (`systemuser`), found by e-mail or user name (`users`);
- people are active contacts with the address in `emailaddress1`, `2` or `3` (case-insensitive);
  never accounts;
- journals are `email` activities found by `messageid` first (`journals`): one per message, however
  many mailboxes saw it, linked (never duplicated) when Dynamics 365 tracked it already;
- appointments are `appointment` activities keyed by `globalobjectid` (+ the occurrence's original
  start), cancelled as Canceled (`appointments`);
- contacts are `contact` rows owned by the user's systemuser, our key in `crmsync_outlookkey`; their
  change feed is Dataverse's change tracking. Deleting one deactivates it (statecode Inactive):
  deleting a contact in Dataverse would delete every email and appointment regarding it.

Capabilities: everything the port offers, except that a contact a Dynamics 365 user deleted is gone
for good (no tombstones). Subjects are capped at 800 (an email's limit); an appointment keeps the
first 200 characters where Dynamics shows them, and the rest in the sync's details.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx

from shared.crm.dataverse import wire
from shared.crm.dataverse.appointments import Appointments
from shared.crm.dataverse.auth import StaticToken
from shared.crm.dataverse.batch import BatchBody
from shared.crm.dataverse.journals import Journals
from shared.crm.dataverse.tracking import read_changes
from shared.crm.dataverse.users import Users
from shared.crm.dataverse.webapi import Conflict, TokenSource, WebApi, error_of
from shared.errors import CrmError, CrmRejectedError, CrmRetryableError
from shared.model import (
    Appointment,
    ContactFeedPage,
    CrmAppointmentChange,
    CrmContact,
    CrmContactRemoved,
    CrmRef,
    CrmTask,
    Journal,
    PersonRef,
    TaskFeedPage,
)
from shared.ports.crm import Capabilities, Health

PEOPLE_CHUNK = 50  # addresses per contact query (each in a $batch: three `In` lists of 50)
PERSON_SELECT = (
    "contactid,fullname,firstname,lastname,emailaddress1,emailaddress2,emailaddress3,crmsync_outlookfields,"
    "createdon"
)
# The custom columns the connector needs (docs/deploy.md: create them once per environment).
CUSTOM_COLUMNS = (
    ("contact", "crmsync_outlookkey"),
    ("contact", "crmsync_outlookfields"),
    ("email", "crmsync_outlookdetails"),
    ("appointment", "crmsync_outlookdetails"),
    ("appointment", "crmsync_occurrencestart"),
)


NO_TASKS = "the Dataverse connector does not sync To Do tasks yet (Capabilities.tasks is False)"


class DataverseConnector:
    capabilities = Capabilities(
        subject_limit=800, contact_tombstones=False, tasks=False, task_change_feed=False
    )

    def __init__(
        self,
        environment_url: str,
        token: TokenSource | str,
        *,
        client: httpx.AsyncClient | None = None,
        max_attempts: int = 5,
        max_retry_wait: float = 30.0,
        backoff_base: float = 0.5,
        page_size: int = 5000,
        provision_owners: bool = False,
    ) -> None:
        self._token = StaticToken(token) if isinstance(token, str) else token
        self._api = WebApi(
            environment_url,
            self._token,
            client=client,
            max_attempts=max_attempts,
            max_retry_wait=max_retry_wait,
            backoff_base=backoff_base,
        )
        self._attempts = max(1, max_attempts)
        self._page_size = page_size
        self._users = Users(self._api, provision=provision_owners)
        self._journals = Journals(self._api, self._users, max_attempts=max_attempts)
        self._appointments = Appointments(
            self._api, self._users, max_attempts=max_attempts, page_size=page_size
        )

    async def upsert_task(self, task: CrmTask) -> CrmRef:
        raise CrmRejectedError(NO_TASKS, status=501)

    async def get_task(self, ref: CrmRef) -> CrmTask | None:
        raise CrmRejectedError(NO_TASKS, status=501)

    async def delete_task(self, ref: CrmRef) -> None:
        raise CrmRejectedError(NO_TASKS, status=501)

    async def task_changes(self, owner: str, cursor: str | None) -> TaskFeedPage:
        raise CrmRejectedError(NO_TASKS, status=501)

    async def aclose(self) -> None:
        await self._api.aclose()
        close = getattr(self._token, "aclose", None)
        if close is not None:
            await close()

    async def check(self) -> Health:
        try:
            await self._api.json("GET", "WhoAmI", "GET WhoAmI")
            missing = []
            for table, column in CUSTOM_COLUMNS:
                path = f"EntityDefinitions(LogicalName='{table}')/Attributes(LogicalName='{column}')"
                found = await self._api.json(
                    "GET",
                    path,
                    "GET EntityDefinitions/Attributes",
                    params={"$select": "LogicalName"},
                    missing_ok=True,
                )
                if found is None:
                    missing.append(f"{table}.{column}")
        except CrmError as exc:
            return Health(False, str(exc))
        if missing:
            return Health(
                False, f"Dataverse answers, but these custom columns are missing: {', '.join(missing)}"
            )
        return Health(True, "Dataverse answers, accepts the credentials and has the sync's columns")

    # -- people ----------------------------------------------------------------------------------

    async def find_people(self, addresses: Sequence[str]) -> dict[str, list[PersonRef]]:
        wanted = sorted({a.strip().lower() for a in addresses if a.strip()})
        if not wanted:
            return {}
        body = BatchBody()
        for start in range(0, len(wanted), PEOPLE_CHUNK):
            chunk = wanted[start : start + PEOPLE_CHUNK]
            slots = " or ".join(wire.among(column, chunk) for column in wire.EMAILS)
            body.get(
                wire.url(
                    self._api.root, "contacts", select=PERSON_SELECT, filter=f"statecode eq 0 and ({slots})"
                )
            )
        rows: dict[str, dict[str, Any]] = {}
        for result in await self._api.batch(body, "POST $batch (people lookup)", resend=True):
            if result.status >= 400 or not isinstance(result.body, dict):
                raise error_of(result.status, result.body, "GET contacts")
            rows.update((str(r["contactid"]), r) for r in result.body.get("value") or [])
        ordered = sorted(rows.values(), key=lambda r: (str(r.get("createdon") or ""), str(r["contactid"])))
        found: dict[str, list[PersonRef]] = {}
        for address in wanted:
            holders = [r for r in ordered if address in {str(r.get(c) or "").lower() for c in wire.EMAILS}]
            found[address] = [wire.person_from_row(r, address) for r in holders]
        return found

    # -- journals and appointments ---------------------------------------------------------------

    async def upsert_journal(self, journal: Journal) -> CrmRef:
        outcome = (await self._journals.upsert_many([journal]))[0]
        if isinstance(outcome, CrmError):
            raise outcome
        return outcome

    async def upsert_journals(self, journals: Sequence[Journal]) -> list[CrmRef | CrmError]:
        return await self._journals.upsert_many(journals)

    async def get_journal(self, key: str) -> Journal | None:
        return await self._journals.get(key)

    async def upsert_appointment(self, appointment: Appointment) -> CrmRef:
        return await self._appointments.upsert(appointment)

    async def cancel_appointment(self, key: str) -> None:
        await self._appointments.cancel(key)

    async def delete_appointment(self, key: str) -> None:
        await self._appointments.delete(key)

    async def get_appointment(self, key: str) -> Appointment | None:
        return await self._appointments.get(key)

    async def appointment_changes(
        self, owner: str, cursor: str | None
    ) -> tuple[list[CrmAppointmentChange], str]:
        return await self._appointments.changes(owner, cursor)

    # -- contacts --------------------------------------------------------------------------------

    async def upsert_contact(self, contact: CrmContact) -> CrmRef:
        try:
            columns = wire.contact_columns(contact.fields)
        except ValueError as exc:
            raise CrmRejectedError(str(exc), status=422) from None
        owner = await self._users.owner_id(contact.owner)
        for attempt in range(self._attempts):
            try:
                return await self._write_contact(contact, columns, owner)
            except (Conflict, CrmRetryableError) as failure:
                too_long = (failure.retry_after or 0.0) > self._api.max_retry_wait
                if attempt + 1 == self._attempts or too_long:
                    if isinstance(failure, Conflict):
                        raise CrmRetryableError(
                            f"{failure} (the contact kept changing)", status=412
                        ) from failure
                    raise
                await asyncio.sleep(failure.retry_after or self._api.backoff(attempt))
        raise AssertionError("unreachable")

    async def _write_contact(self, contact: CrmContact, columns: dict[str, Any], owner: str) -> CrmRef:
        row = None
        if contact.ref is not None:
            row = await self._contact_row(contact.ref.id)
            if row is None or row.get("statecode") != 0:
                raise CrmRejectedError(
                    f"contact {contact.ref.id} was deleted or deactivated in Dynamics 365: an update does "
                    "not bring it back",
                    status=404,
                )
        elif contact.key:
            data = await self._api.json(
                "GET",
                "contacts",
                "GET contacts",
                params={
                    "$select": wire.CONTACT_SELECT,
                    "$filter": f"crmsync_outlookkey eq {wire.literal(contact.key)}",
                },
            )
            row = next(
                (r for r in data.get("value") or [] if r.get("crmsync_outlookkey") == contact.key), None
            )
        if row is not None:
            if str(row.get("_ownerid_value") or "") != owner:
                raise CrmRejectedError(
                    f"contact {row['contactid']} is assigned to another user in Dynamics 365: the sync "
                    "does not take it over",
                    status=409,
                )
            body = dict(columns)
            if contact.key and not row.get("crmsync_outlookkey"):
                body["crmsync_outlookkey"] = contact.key
            if row.get("statecode") != 0:  # deactivated by the sync's own delete: written again, as created
                body |= {"statecode": 0, "statuscode": 1}
            guard = {"If-Match": str(row.get("@odata.etag") or "*")}
            path = f"contacts({row['contactid']})"
            await self._api.send(
                "PATCH", path, "PATCH contacts({id})", json=body, headers=guard, resend=False
            )
            return CrmRef(str(row["contactid"]))
        body = {**columns, "ownerid@odata.bind": f"/systemusers({owner})"}
        if contact.key:
            body |= {
                "crmsync_outlookkey": contact.key,
                "contactid": wire.deterministic_id("contact", contact.key),
            }
        response = await self._api.send("POST", "contacts", "POST contacts", json=body, resend=False)
        assert response is not None
        return CrmRef(response.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")"))

    async def _contact_row(self, contact_id: str) -> dict[str, Any] | None:
        if not wire.is_guid(contact_id):
            return None
        row = await self._api.json(
            "GET",
            f"contacts({contact_id})",
            "GET contacts({id})",
            params={"$select": wire.CONTACT_SELECT},
            missing_ok=True,
        )
        return row if isinstance(row, dict) else None

    async def get_contact(self, ref: CrmRef) -> CrmContact | None:
        row = await self._contact_row(ref.id)
        if row is None or row.get("statecode") != 0:
            return None
        return wire.contact_from_row(row, await self._users.owner_of(str(row.get("_ownerid_value") or "")))

    async def delete_contact(self, ref: CrmRef, owner: str) -> None:
        """Deactivate (idempotent): a deleted contact would take its emails and appointments with it.
        Only the owner's own contact: one assigned to another user is refused."""
        if not wire.is_guid(ref.id):
            return
        row = await self._contact_row(ref.id)
        if row is None or row.get("statecode") != 0:
            return
        if str(row.get("_ownerid_value") or "") != await self._users.owner_id(owner):
            raise CrmRejectedError(
                f"contact {ref.id} is assigned to another user in Dynamics 365: not deleted", status=409
            )
        await self._api.send(
            "PATCH",
            f"contacts({ref.id})",
            "PATCH contacts({id})",
            json={"statecode": 1, "statuscode": 2},
            headers={"If-Match": "*"},
            missing_ok=True,
        )

    async def contact_changes(self, owner: str, cursor: str | None) -> ContactFeedPage:
        """The owner's active contacts changed since the cursor (Dataverse's change tracking), and as
        removals those deleted, deactivated or owned by someone else since. A cursor older than the
        organisation's change-tracking retention starts over: every contact, as a snapshot."""
        owner_id = await self._users.owner_id(owner)
        read = await read_changes(self._api, "contacts", wire.CONTACT_SELECT, cursor, self._page_size)
        changes: dict[str, CrmContact | CrmContactRemoved] = {}
        for row in read.rows:
            contact_id = str(row["contactid"])
            if str(row.get("_ownerid_value") or "") == owner_id and row.get("statecode") == 0:
                changes[contact_id] = wire.contact_from_row(row, owner)
            elif not read.fresh:  # tracked rows cannot be filtered: "not (or no longer) this owner's"
                changes[contact_id] = CrmContactRemoved(CrmRef(contact_id), owner)
        if not read.fresh:
            for contact_id in read.deleted:
                changes[contact_id] = CrmContactRemoved(CrmRef(contact_id), owner)
        return ContactFeedPage(
            tuple(changes.values()), read.token, snapshot=read.fresh and cursor is not None
        )
