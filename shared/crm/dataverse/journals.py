"""Journals as Dataverse `email` activities, a page at a time in two `$batch` requests.

1. Read: the emails that already carry these messages' `messageid` (with their activity parties),
   and which of the messages' addresses are Dynamics 365 users. An email found by `messageid` is the
   one this message becomes, whoever made it: Dynamics 365's own server-side synchronization and the
   App for Outlook key tracked mail on the same Message-ID, so a message they tracked is linked, never
   duplicated.
2. Write: one change set per message (atomic), all in one `$batch` with `continue-on-error`, so one
   refused message stops only itself.
   - new: create the email (a primary key derived from the Message-ID, so a create whose answer was
     lost meets the first one instead of making a second), with its parties, then close it as Sent or
     Received;
   - made by the sync: reopen if closed (closed activities are read-only), rewrite it, replace its
     parties, close it again; the first operation carries the etag read in step 1;
   - made by Dynamics 365 (no sync details, or adopted before): keep its subject, body, direction and
     owner; add the linked people as parties and as regarding (when it has none and there is one),
     record the sync's details, and leave it in its state.
   A 412 (the row changed since step 1, or a concurrent writer created it) or a 429/5xx answer sends
   that message round again from step 1, up to `max_attempts`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from shared.crm.dataverse import activity_rows as activity
from shared.crm.dataverse import wire
from shared.crm.dataverse.batch import BatchBody, ChangeSet, PartResult
from shared.crm.dataverse.users import Users
from shared.crm.dataverse.webapi import Conflict, WebApi, error_of
from shared.errors import CrmError, CrmRejectedError, CrmRetryableError
from shared.model import CrmRef, Journal
from shared.retry_after import parse_retry_after

PARTY_NOT_ALLOWED = "0x80043506"  # ActivityPartyObjectTypeNotAllowed
CHUNK = 100  # messages per $batch (at most 4 operations each: far below Dataverse's 1,000)
LOOKUP_CHUNK = 50  # Message-IDs per query
ANNOTATIONS = 'odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"'
ROUTE = "POST $batch (emails)"


def choose(rows: Sequence[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The email a message becomes, among those with its Message-ID (compared exactly: Dataverse's
    `eq` ignores case): the one the sync created, else one it adopted, else the oldest."""
    exact = [r for r in rows if activity.journal_from_row(r, {}).key == key]
    mine = wire.deterministic_id("email", key)
    return min(
        exact,
        key=lambda r: (
            str(r["activityid"]) != mine,
            not r.get("crmsync_outlookdetails"),
            str(r.get("createdon") or ""),
            str(r["activityid"]),
        ),
        default=None,
    )


class Journals:
    def __init__(self, api: WebApi, users: Users, *, max_attempts: int) -> None:
        self._api = api
        self._users = users
        self._attempts = max(1, max_attempts)

    async def upsert_many(self, journals: Sequence[Journal]) -> list[CrmRef | CrmError]:
        outcomes: list[CrmRef | CrmError | None] = [None] * len(journals)
        rounds: list[list[int]] = []  # a key given twice is written twice, in the order given
        times: dict[str, int] = {}
        for n, journal in enumerate(journals):
            k = times[journal.key] = times.get(journal.key, -1) + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(n)
        for numbers in rounds:
            for start in range(0, len(numbers), CHUNK):
                chunk = numbers[start : start + CHUNK]
                for n, outcome in zip(chunk, await self._write([journals[n] for n in chunk]), strict=True):
                    outcomes[n] = outcome
        return [o for o in outcomes if o is not None]

    async def get(self, key: str) -> Journal | None:
        data = await self._api.json(
            "GET",
            "emails",
            "GET emails",
            params={
                "$select": activity.EMAIL_SELECT,
                "$filter": f"messageid eq {wire.literal(activity.message_id(key))}",
                "$expand": f"email_activity_parties($select={wire.PARTIES})",
            },
            headers={"Prefer": ANNOTATIONS},
        )
        row = choose(data.get("value") or [], key)
        if row is None:
            return None
        owner = str(row.get("_ownerid_value") or "")
        names = {owner: await self._users.owner_of(owner)} if owner else {}
        return activity.journal_from_row(row, names)

    # -- inside ----------------------------------------------------------------------------------

    async def _write(self, journals: Sequence[Journal]) -> list[CrmRef | CrmError]:
        outcomes: dict[int, CrmRef | CrmError] = {}
        owners: dict[int, str] = {}
        for n, journal in enumerate(journals):
            try:
                _check(journal)
                owners[n] = await self._users.owner_id(journal.owner)
            except CrmRejectedError as refused:
                outcomes[n] = refused
        todo = [n for n in range(len(journals)) if n not in outcomes]
        plain_sender: set[int] = set()  # messages whose contact sender Dataverse refused as a party
        for attempt in range(self._attempts):
            if not todo:
                break
            last = attempt + 1 == self._attempts
            try:
                found = await self._read([journals[n] for n in todo])
                body = BatchBody()
                sets = {
                    n: self._plan(
                        body, journals[n], found.get(journals[n].key), owners[n], n not in plain_sender
                    )
                    for n in todo
                }
                results = await self._api.batch(body, ROUTE, resend=False)
            except CrmRetryableError as failure:  # the whole request: nothing is known of any message
                too_long = (failure.retry_after or 0.0) > self._api.max_retry_wait
                if last or too_long:
                    raise
                await asyncio.sleep(failure.retry_after or self._api.backoff(attempt))
                continue
            todo, wait = self._outcomes(todo, sets, results, outcomes, last, plain_sender)
            if todo:
                await asyncio.sleep(wait if wait is not None else self._api.backoff(attempt))
        return [outcomes[n] for n in range(len(journals))]

    def _outcomes(
        self,
        todo: list[int],
        sets: dict[int, tuple[int, str]],
        results: list[PartResult],
        outcomes: dict[int, CrmRef | CrmError],
        last: bool,
        plain_sender: set[int],
    ) -> tuple[list[int], float | None]:
        by_item: dict[int, list[PartResult]] = {}
        for result in results:
            by_item.setdefault(result.item, []).append(result)
        again: list[int] = []
        wait: float | None = None
        for n in todo:
            item, email_id = sets[n]
            failed = next((r for r in by_item.get(item, []) if r.status >= 400), None)
            if failed is None and item in by_item:
                outcomes[n] = CrmRef(email_id)
                continue
            if failed is None:  # the batch stopped before this change set
                error: CrmError = CrmRetryableError("Dataverse did not run this message's change set")
            else:
                retry_after = parse_retry_after(failed.headers.get("retry-after"))
                error = error_of(failed.status, failed.body, "this email", retry_after)
                if failed.error[0] == PARTY_NOT_ALLOWED and n not in plain_sender and not last:
                    plain_sender.add(n)  # once more, the sender as its address alone
                    again.append(n)
                    continue
            too_long = (error.retry_after or 0.0) > self._api.max_retry_wait
            if isinstance(error, Conflict | CrmRetryableError) and not last and not too_long:
                again.append(n)
                if error.retry_after is not None:
                    wait = max(wait or 0.0, error.retry_after)
            elif isinstance(error, Conflict):
                outcomes[n] = CrmRetryableError(
                    f"{error} (still changing after {self._attempts} attempts)", status=412
                )
            else:
                outcomes[n] = error
        return again, wait

    async def _read(self, journals: Sequence[Journal]) -> dict[str, dict[str, Any]]:
        """key -> the email each message becomes (where one exists); learns which addresses are users."""
        body = BatchBody()
        ids = sorted({activity.message_id(j.key) for j in journals})
        reads = []
        for start in range(0, len(ids), LOOKUP_CHUNK):
            chunk = ids[start : start + LOOKUP_CHUNK]
            reads.append(
                body.get(
                    wire.url(
                        self._api.root,
                        "emails",
                        select=activity.EMAIL_SELECT,
                        filter=wire.among("messageid", chunk),
                        expand=f"email_activity_parties($select={wire.PARTIES})",
                    ),
                    Prefer=ANNOTATIONS,
                )
            )
        addresses = [a.address for j in journals for a in ([j.sender] if j.sender else []) + [*j.to, *j.cc]]
        user_reads = self._users.queries(addresses, body)
        if body.size() == 0:
            return {}
        results = await self._api.batch(body, "POST $batch (email lookup)", resend=True)
        self._users.take(user_reads, results)
        rows: list[dict[str, Any]] = []
        for index in reads:
            result = results[index]
            if result.status >= 400 or not isinstance(result.body, dict):
                raise error_of(result.status, result.body, "GET emails")
            rows += result.body.get("value") or []
        found = {}
        for journal in journals:
            row = choose(rows, journal.key)
            if row is not None:
                found[journal.key] = row
        return found

    def _plan(
        self, body: BatchBody, journal: Journal, row: dict[str, Any] | None, owner: str, bind_sender: bool
    ) -> tuple[int, str]:
        """Add the message's change set; returns (its index among the batch's items, the email's id)."""
        changes = body.changeset("emails")
        item = len(body.items) - 1
        users = self._users.known()
        root = self._api.root
        if row is None:
            email_id = wire.deterministic_id("email", journal.key)
            columns = {**activity.email_columns(journal, owner), **_regarding(journal, None)}
            columns |= {
                "activityid": email_id,
                "email_activity_parties": activity.email_parties(journal, users, bind_sender=bind_sender),
            }
            created = changes.add("POST", root + "emails", columns)
            changes.add("PATCH", created, {"statecode": 1, "statuscode": activity.closed_status(journal)})
            return item, email_id
        email_id = str(row["activityid"])
        entity = f"{root}emails({email_id})"
        guard = {"If_Match": str(row.get("@odata.etag") or "*")}
        state = (row.get("statecode"), row.get("statuscode"))
        if state[0] in (1, 2):  # completed or canceled activities are read-only: reopen first
            changes.add("PATCH", entity, {"statecode": 0, "statuscode": 1}, **guard)
            guard = {}
        details = activity.journal_from_row(row, {})
        mark = wire.details(row, "crmsync_outlookdetails")
        adopted = not mark or bool(mark.get("adopted"))
        if adopted:
            _link(changes, entity, journal, row, guard)
            if state[0] in (1, 2):
                changes.add("PATCH", entity, {"statecode": state[0], "statuscode": state[1]})
            return item, email_id
        columns = {**activity.email_columns(journal, owner), **_regarding(journal, row, details.people)}
        changes.add("PATCH", entity, columns, **guard)
        changes.add(
            "PUT",
            entity + "/email_activity_parties",
            {"value": activity.email_parties(journal, users, bind_sender=bind_sender)},
        )
        changes.add("PATCH", entity, {"statecode": 1, "statuscode": activity.closed_status(journal)})
        return item, email_id


def _link(
    changes: ChangeSet, entity: str, journal: Journal, row: dict[str, Any], guard: dict[str, str]
) -> None:
    """Link a message Dynamics 365 already tracked: its people as parties and regarding, our details."""
    columns: dict[str, Any] = {"crmsync_outlookdetails": activity.email_details(journal, adopted=True)}
    if not row.get("_regardingobjectid_value"):
        columns |= _regarding(journal, None)
    changes.add("PATCH", entity, columns, **guard)
    parties = row.get("email_activity_parties") or []
    bound = {str(p.get("_partyid_value")) for p in parties if p.get("_partyid_value")}
    roles = {
        a.normalized: mask
        for mask, group in ((activity.CC, journal.cc), (activity.TO, journal.to))
        for a in group
    }
    if journal.sender:
        roles[journal.sender.normalized] = activity.SENDER
    value = wire.existing_parties(row, "email_activity_parties")
    changed = False
    for person in journal.people:
        if person.id in bound or person.kind != "contact":
            continue
        bind = {"partyid_contact@odata.bind": f"/contacts({person.id})"}
        same = [p for p in value if str(p.get("addressused") or "").lower() == person.email.lower()]
        unbound = [p for p in same if not any(k.endswith("@odata.bind") for k in p)]
        role = roles.get(person.email.lower(), activity.TO)
        if unbound:  # Dynamics kept the address unresolved: resolve it to the person
            unbound[0].update(bind)
        elif same or (role == activity.SENDER and any(p["participationtypemask"] == role for p in value)):
            continue  # that address is bound to another record already: an email has one sender
        else:
            value.append({"participationtypemask": role, "addressused": person.email, **bind})
        changed = True
    if changed:
        changes.add("PUT", entity + "/email_activity_parties", {"value": value})


def _regarding(journal: Journal, row: dict[str, Any] | None, before: Sequence[Any] = ()) -> dict[str, Any]:
    """Regarding the one linked person, as Dynamics 365 does; cleared only where the sync set it."""
    contacts = [p for p in journal.people if p.kind == "contact"]
    if len(contacts) == 1:
        return {"regardingobjectid_contact_email@odata.bind": f"/contacts({contacts[0].id})"}
    current = str((row or {}).get("_regardingobjectid_value") or "")
    earlier = [p.id for p in before if p.kind == "contact"]
    if current and earlier == [current]:
        return {"regardingobjectid_contact_email@odata.bind": None}
    return {}


def _check(journal: Journal) -> None:
    for person in journal.people:
        if person.kind != "contact" or not wire.is_guid(person.id):
            raise CrmRejectedError(
                f"the journal links {person.id!r}, which is not the id of a Dataverse contact", status=422
            )
