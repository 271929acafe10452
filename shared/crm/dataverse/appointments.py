"""Appointments as Dataverse `appointment` activities, keyed by `globalobjectid` (the meeting's
iCalUId) and, for an occurrence of a series, `crmsync_occurrencestart` (its original start).

A write reads the appointment (and which addresses are Dynamics 365 users) in one `$batch`, then
writes it in one change set: create it (a primary key derived from the key, so a create whose answer
was lost is not made twice) with its parties and set it Scheduled (Busy) or Canceled; or reopen it if
canceled or completed (they are read-only), rewrite it, replace its parties and set its state. The
first operation carries the etag read before: a 412 means someone changed it meanwhile, and the write
starts over from the read. Cancel is a state change (Canceled); delete deletes. The CRM → Outlook push
reads appointments through change tracking: those made in Dynamics 365 (no key) and those the sync
wrote, for the owner's systemuser; ones Dynamics 365's own synchronization tracked from Outlook (a
`globalobjectid` but no sync details) are left out, since Outlook already has them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from shared.crm.dataverse import activity_rows as activity
from shared.crm.dataverse import wire
from shared.crm.dataverse.batch import BatchBody
from shared.crm.dataverse.tracking import read_changes
from shared.crm.dataverse.users import Users
from shared.crm.dataverse.webapi import Conflict, WebApi, error_of
from shared.errors import CrmRejectedError, CrmRetryableError
from shared.model import Appointment, CrmAppointmentChange, CrmRef
from shared.retry_after import parse_retry_after

ANNOTATIONS = 'odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"'
EXPAND = f"appointment_activity_parties($select={wire.PARTIES})"


class Appointments:
    def __init__(self, api: WebApi, users: Users, *, max_attempts: int, page_size: int) -> None:
        self._api = api
        self._users = users
        self._attempts = max(1, max_attempts)
        self._page_size = page_size

    async def upsert(self, appointment: Appointment) -> CrmRef:
        if appointment.end < appointment.start:
            raise CrmRejectedError("the appointment ends before it starts", status=422)
        for person in appointment.people:
            if person.kind != "contact" or not wire.is_guid(person.id):
                raise CrmRejectedError(
                    f"the appointment links {person.id!r}, which is not a Dataverse contact id"
                )
        owner = await self._users.owner_id(appointment.owner)
        for attempt in range(self._attempts):
            try:
                return await self._write(appointment, owner)
            except (Conflict, CrmRetryableError) as failure:
                too_long = (failure.retry_after or 0.0) > self._api.max_retry_wait
                if attempt + 1 == self._attempts or too_long:
                    if isinstance(failure, Conflict):
                        raise _retryable(failure) from failure
                    raise
                await asyncio.sleep(failure.retry_after or self._api.backoff(attempt))
        raise AssertionError("unreachable")

    async def _write(self, appointment: Appointment, owner: str) -> CrmRef:
        lookup = BatchBody()
        goid, occurrence = activity.split_key(appointment.key)
        index = lookup.get(
            wire.url(
                self._api.root,
                "appointments",
                select=activity.APPOINTMENT_SELECT,
                filter=_filter(goid, occurrence),
                expand=EXPAND,
            ),
            Prefer=ANNOTATIONS,
        )
        addresses = [appointment.organizer.address] if appointment.organizer else []
        user_reads = self._users.queries(
            addresses + [a.address.address for a in appointment.attendees], lookup
        )
        results = await self._api.batch(lookup, "POST $batch (appointment lookup)", resend=True)
        self._users.take(user_reads, results)
        if results[index].status >= 400:
            raise error_of(results[index].status, results[index].body, "GET appointments")
        row = _choose(results[index].body.get("value") or [], appointment.key)
        body = BatchBody()
        changes = body.changeset("appointments")
        root = self._api.root
        columns = {**activity.appointment_columns(appointment, owner), **_regarding(appointment, row)}
        parties = activity.appointment_parties(appointment, self._users.known())
        state, status = activity.state_of(appointment)
        if row is None:
            appointment_id = wire.deterministic_id("appointment", appointment.key)
            created = changes.add(
                "POST",
                root + "appointments",
                {**columns, "activityid": appointment_id, "appointment_activity_parties": parties},
            )
            changes.add("PATCH", created, {"statecode": state, "statuscode": status})
        else:
            appointment_id = str(row["activityid"])
            entity = f"{root}appointments({appointment_id})"
            guard = {"If_Match": str(row.get("@odata.etag") or "*")}
            now = (row.get("statecode"), row.get("statuscode"))
            if now[0] in (1, 2):  # completed or canceled: read-only until reopened
                changes.add("PATCH", entity, {"statecode": 3, "statuscode": 5}, **guard)
                guard, now = {}, (3, 5)
            changes.add("PATCH", entity, columns, **guard)
            changes.add("PUT", entity + "/appointment_activity_parties", {"value": parties})
            if now != (state, status):
                changes.add("PATCH", entity, {"statecode": state, "statuscode": status})
        results = await self._api.batch(body, "POST $batch (appointments)", resend=False)
        failed = next((r for r in results if r.status >= 400), None)
        if failed is not None:
            raise error_of(
                failed.status,
                failed.body,
                "this appointment",
                parse_retry_after(failed.headers.get("retry-after")),
            )
        return CrmRef(appointment_id)

    async def _find(self, key: str) -> dict[str, Any] | None:
        goid, occurrence = activity.split_key(key)
        data = await self._api.json(
            "GET",
            "appointments",
            "GET appointments",
            params={
                "$select": activity.APPOINTMENT_SELECT,
                "$filter": _filter(goid, occurrence),
                "$expand": EXPAND,
            },
            headers={"Prefer": ANNOTATIONS},
        )
        return _choose(data.get("value") or [], key)

    async def cancel(self, key: str) -> None:
        await self._settle(key, cancel=True)

    async def delete(self, key: str) -> None:
        await self._settle(key, cancel=False)

    async def _settle(self, key: str, *, cancel: bool) -> None:
        """Cancel or delete the appointment with this key, guarded by its etag (idempotent)."""
        for attempt in range(self._attempts):
            row = await self._find(key)
            if row is None or (cancel and row.get("statecode") == 2):
                return
            path = f"appointments({row['activityid']})"
            guard = {"If-Match": str(row.get("@odata.etag") or "*")}
            try:
                if cancel:
                    route = "PATCH appointments({id})"
                    body = {"statecode": 2, "statuscode": 4}
                    await self._api.send("PATCH", path, route, json=body, headers=guard, missing_ok=True)
                else:
                    await self._api.send(
                        "DELETE", path, "DELETE appointments({id})", headers=guard, missing_ok=True
                    )
                return
            except Conflict as conflict:
                if attempt + 1 == self._attempts:
                    raise _retryable(conflict) from conflict

    async def get(self, key: str) -> Appointment | None:
        row = await self._find(key)
        if row is None:
            return None
        owner = str(row.get("_ownerid_value") or "")
        return activity.appointment_from_row(row, {owner: await self._users.owner_of(owner)} if owner else {})

    async def changes(self, owner: str, cursor: str | None) -> tuple[list[CrmAppointmentChange], str]:
        owner_id = await self._users.owner_id(owner)
        read = await read_changes(
            self._api, "appointments", activity.APPOINTMENT_SELECT, cursor, self._page_size
        )
        out = []
        for row in read.rows:
            if str(row.get("_ownerid_value") or "") != owner_id:
                continue
            if row.get("globalobjectid") and not row.get("crmsync_outlookdetails"):
                continue  # tracked from Outlook by Dynamics 365 itself: Outlook has it already
            out.append(activity.change_from_row(row, owner))
        return out, read.token


def _filter(goid: str, occurrence: str) -> str:
    start = wire.literal(occurrence) if occurrence else "null"
    return f"globalobjectid eq {wire.literal(goid)} and crmsync_occurrencestart eq {start}"


def _choose(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    exact = [r for r in rows if activity.appointment_key(r) == key]  # `eq` ignores case; keys do not
    mine = wire.deterministic_id("appointment", key)
    return min(exact, key=lambda r: (str(r["activityid"]) != mine, str(r["activityid"])), default=None)


def _regarding(appointment: Appointment, row: dict[str, Any] | None) -> dict[str, Any]:
    contacts = [p for p in appointment.people if p.kind == "contact"]
    if len(contacts) == 1:
        return {"regardingobjectid_contact_appointment@odata.bind": f"/contacts({contacts[0].id})"}
    before = (
        [p.id for p in activity.appointment_from_row(row, {}).people if p.kind == "contact"] if row else []
    )
    current = str((row or {}).get("_regardingobjectid_value") or "")
    return (
        {"regardingobjectid_contact_appointment@odata.bind": None} if current and before == [current] else {}
    )


def _retryable(failure: Conflict) -> CrmRetryableError:
    return CrmRetryableError(f"{failure} (the appointment kept changing)", status=412)
