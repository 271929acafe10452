"""The CRM port over BottleCRM's REST API (PyPI `django-crm`, tested against 1.35.0).

How our records map onto BottleCRM, and why:

- **Owners** are BottleCRM users: `owner` is the e-mail address of a user of the organisation (or the id
  of their profile). It is resolved through `/api/users/get-teams-and-users/` and written as
  `assigned_to`. An owner with no user is refused (`CrmRejectedError`) unless the connector was built
  with `provision_owners=True`, which invites the user into the organisation (tests and the demo do).
- **People** are contacts. `find_people` asks `?email=` (a substring match) and keeps exact,
  case-insensitive matches only. Leads are not matched.
- **Contacts** carry our key in the filterable custom field `outlook_key`; the fields BottleCRM has no
  column for (further e-mails and phones, mobile, display name, country as text, blank names) are kept
  as JSON in the custom field `outlook_fields`, so a contact reads back as it was written. A write
  never changes `assigned_to` and never touches a contact the owner is not assigned to: an update of
  a contact reassigned to someone else, and a new contact whose address another user's contact holds
  (BottleCRM allows one contact per e-mail address in an organisation, so the create is refused), are
  refused with a `CrmRejectedError` naming the contact, which the contacts stream records as an
  issue. Only a contact already assigned to the owner is adopted in that case (it never overwrites
  another key). A contact assigned to several users is never deleted: `delete_contact` refuses.
- **Journals** are e-mail interactions. An interaction has exactly one home record, so the connector
  declares `multi_person_journal=False`: the engine writes one journal per person, keyed
  `<internetMessageId>|<contact id>`, homed on that contact (or lead). A journal nobody matched is homed
  on one account the connector keeps for that purpose ("Outlook: e-mail with no CRM contact"). The API
  cannot write an interaction's `external_id`, so the idempotency key rides in the body, on a line the
  connector appends: `[outlook-sync <first 24 hex of sha256(key)> <base64url(zlib(JSON of the fields
  BottleCRM has no column for))>]`. The hash is fixed-length and has no characters an editor could
  mangle; text a person adds below it does no harm. `upsert_journal` lists the home record's
  interactions (200 a page) and looks for that line: O(interactions on that person) per write. A
  person who deletes the line makes the next upsert create a second interaction. `get_journal` finds
  keys of the engine's form (`...|<person id>`) and unmatched ones; another key with a person only in
  the process that wrote it. Bodies stay within BottleCRM's 10,000 characters: the engine caps them at
  `journal_body_limit` (the rest is room for the key line), and the connector cuts further, visibly,
  if a huge recipient list makes that line longer.
- **Appointments** are tasks (BottleCRM has no calendar): `due_date` is the start date, the exact
  start and end are in the custom fields `outlook_starts_at` / `outlook_ends_at` (UTC ISO text), our
  key in the filterable `outlook_event_key`, and the rest (location, organizer, attendees, ...) as JSON
  in `outlook_meeting`. Attendees that are contacts are linked through `contacts`. A cancelled meeting
  keeps its task, titled "[Cancelled] ...". Tasks made in BottleCRM are not pushed to Outlook
  (`appointment_change_feed=False`).
- **Contact change feed**: BottleCRM has no modified-since filter and no ordering parameter, and
  reports deletes only in its last-50 activity list. So `contact_changes` scans every contact
  assigned to the owner (500 a page, restarted if the total moves during the scan) and returns them
  all as a snapshot (`ContactFeedPage(snapshot=True)`); the engine finds removals by comparing with
  its link rows. Cost: ceil(n / 500) requests of ~0.5 MB each per owner per sweep, n the owner's
  contacts. Fine at thousands, poor at 10^5 per owner.

Errors: 429 and 5xx are retried with exponential backoff, honouring Retry-After, then raised as
`CrmRetryableError`; timeouts and connection errors likewise. A create (POST) is never blindly re-sent
after a 5xx or a timeout, since it may have been applied: the upsert looks the record up again first.
4xx answers become `CrmRejectedError` with the API's reason; a missing or bad token is a 403 in
BottleCRM, reported as a credentials problem.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import random
import re
import uuid
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import httpx

from shared.errors import CrmError, CrmRejectedError, CrmRetryableError
from shared.model import (
    Address,
    Appointment,
    Attachment,
    Attendee,
    ContactFeedPage,
    ContactFields,
    CrmAppointmentChange,
    CrmContact,
    CrmRef,
    CrmTask,
    Direction,
    Journal,
    PersonRef,
    PostalAddress,
    TaskFeedPage,
)
from shared.ports.crm import Capabilities, Health
from shared.retry_after import parse_retry_after

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

BODY_LIMIT = 10_000  # interaction body, enforced by the API
SUBJECT_LIMIT = 200  # interaction subject and task title
MARKER_RESERVE = 1_500  # room kept for the marker line below the engine's body cap
PAGE = 500  # contacts per page in a scan
INTERACTION_PAGE = 200  # the API's maximum
CANCELLED = "[Cancelled] "
EMAIL_SLOTS = ("outlook_email2", "outlook_email3")  # BottleCRM's `email` is the first
CUT = "\n[… cut to fit BottleCRM's 10,000-character limit]"
UNMATCHED_ROLE = "unmatched-mail"
_PHONE = re.compile(r"^[\d\s\-\(\)\+\.]{7,25}$")  # BottleCRM's own phone validator
_MARKER = re.compile(r"^\[outlook-sync ([0-9a-f]{24}) ([A-Za-z0-9_\-]+=*)\]\s*$")

# (key, label, type, filterable) per BottleCRM model; created in the organisation when missing.
CUSTOM_FIELDS: Mapping[str, Sequence[tuple[str, str, str, bool]]] = {
    "Contact": (
        ("outlook_key", "Outlook sync key", "text", True),
        ("outlook_email2", "E-mail 2", "text", True),
        ("outlook_email3", "E-mail 3", "text", True),
        ("outlook_fields", "Outlook fields with no BottleCRM column", "textarea", False),
    ),
    "Task": (
        ("outlook_event_key", "Outlook meeting key", "text", True),
        ("outlook_starts_at", "Meeting starts (UTC)", "text", False),
        ("outlook_ends_at", "Meeting ends (UTC)", "text", False),
        ("outlook_meeting", "Outlook meeting details", "textarea", False),
    ),
    "Account": (("outlook_role", "Outlook sync role", "text", True),),
}


NO_TASKS = "the BottleCRM connector does not sync To Do tasks yet (Capabilities.tasks is False)"


class BottleCrmConnector:
    """`CrmPort` over BottleCRM's REST API with a personal access token (`bcrm_pat_...`)."""

    capabilities = Capabilities(
        multi_person_journal=False,
        journal_body_limit=BODY_LIMIT - MARKER_RESERVE,
        subject_limit=SUBJECT_LIMIT,
        contact_change_feed=False,
        appointment_times=False,
        appointment_change_feed=False,
        contact_tombstones=False,
        tasks=False,  # not yet: its tasks hold our appointments (docs/connectors.md)
        task_change_feed=False,
    )

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
        max_attempts: int = 5,
        max_retry_wait: float = 30.0,
        provision_owners: bool = False,
        unmatched_account_name: str = "Outlook: e-mail with no CRM contact",
        concurrency: int = 8,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {token}"}
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._max_attempts = max(1, max_attempts)
        self._max_retry_wait = max_retry_wait
        self._provision_owners = provision_owners
        self._unmatched_name = unmatched_account_name
        self._gate = asyncio.Semaphore(concurrency)
        self._setup_lock = asyncio.Lock()
        self._account_lock = asyncio.Lock()  # journals written side by side make the account once
        self._fields_ready: set[str] = set()
        self._profiles: dict[str, str] = {}  # lower-cased e-mail -> profile id
        self._unmatched_account = ""
        self._journal_homes: dict[str, tuple[str, str]] = {}  # key -> home, seen in this process

    # -----------------------------------------------------------------------------------------
    # HTTP

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Mapping[str, Any] | None = None,
        missing_ok: bool = False,
        resend: bool = True,
    ) -> Any:
        """One API call with retries. `resend=False`: a 5xx or a timeout is not retried (the request
        may have been applied); a 429 still is, since BottleCRM answers it before doing anything."""
        error: CrmRetryableError | None = None
        for attempt in range(1, self._max_attempts + 1):
            wait = self._backoff(attempt)
            try:
                async with self._gate:
                    response = await self._client.request(
                        method, self._base + path, params=params, json=body, headers=self._auth
                    )
            except httpx.TransportError as exc:
                error = CrmRetryableError(f"BottleCRM {method} failed: {type(exc).__name__}")
                if not resend:
                    raise error from exc
            else:
                status = response.status_code
                if status < 400:
                    return _json(method, response)
                if status == 404 and missing_ok:
                    return None
                if status != 429 and status < 500:
                    raise _rejected(method, response)
                retry_after = _retry_after(response)
                error = CrmRetryableError(
                    f"BottleCRM {method} answered {status}", status=status, retry_after=retry_after
                )
                if status >= 500 and not resend:
                    raise error
                if retry_after is not None:
                    if retry_after > self._max_retry_wait:
                        raise error
                    wait = retry_after
            if attempt < self._max_attempts:
                logger.info("BottleCRM %s: retry %d in %.1f s (%s)", method, attempt, wait, error)
                await asyncio.sleep(wait)
        assert error is not None
        raise error

    async def _steps(self, step: Callable[[], Awaitable[_T]]) -> _T:
        """Run a look-up-then-write step until it succeeds. Its writes are sent once each
        (`resend=False`), so after a 5xx or a timeout the record is looked up again before any
        second write: a create whose answer was lost is found, not made twice."""
        for attempt in range(1, self._max_attempts + 1):
            try:
                return await step()
            except CrmRetryableError as exc:
                too_long = exc.retry_after is not None and exc.retry_after > self._max_retry_wait
                if too_long or attempt == self._max_attempts:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else self._backoff(attempt)
                logger.info("BottleCRM write: attempt %d failed, again in %.1f s (%s)", attempt, wait, exc)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        return min(self._max_retry_wait, 0.25 * 2.0 ** (attempt - 1)) + random.uniform(0, 0.1)

    async def upsert_task(self, task: CrmTask) -> CrmRef:
        raise CrmRejectedError(NO_TASKS, status=501)

    async def get_task(self, ref: CrmRef) -> CrmTask | None:
        raise CrmRejectedError(NO_TASKS, status=501)

    async def delete_task(self, ref: CrmRef) -> None:
        raise CrmRejectedError(NO_TASKS, status=501)

    async def task_changes(self, owner: str, cursor: str | None) -> TaskFeedPage:
        raise CrmRejectedError(NO_TASKS, status=501)

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def check(self) -> Health:
        try:
            await self._call("GET", "/api/contacts/", params={"limit": 1})
        except (CrmRejectedError, CrmRetryableError) as exc:
            return Health(False, str(exc))
        return Health(True, "BottleCRM answers and accepts the credentials")

    # -----------------------------------------------------------------------------------------
    # Organisation set-up: custom fields, owners, the account for unmatched mail

    async def _ensure_fields(self, model: str) -> None:
        if model in self._fields_ready:
            return
        async with self._setup_lock:
            if model in self._fields_ready:
                return
            data = await self._call("GET", "/api/custom-fields/", params={"target_model": model})
            have = {d["key"] for d in data.get("definitions", [])}
            for key, label, kind, filterable in CUSTOM_FIELDS[model]:
                if key in have:
                    continue
                payload = {"target_model": model, "key": key, "label": label, "field_type": kind}
                try:
                    await self._call(
                        "POST", "/api/custom-fields/", body={**payload, "is_filterable": filterable}
                    )
                except CrmRejectedError as exc:
                    if "already exists" not in str(exc):  # a concurrent writer made it first
                        raise
            self._fields_ready.add(model)

    async def _profile_id(self, owner: str) -> str:
        wanted = owner.strip().lower()
        if not wanted:
            raise CrmRejectedError("no owner given: BottleCRM records are assigned to a user")
        if wanted not in self._profiles:
            await self._load_profiles()
        if wanted not in self._profiles and self._provision_owners and "@" in wanted:
            try:
                await self._call("POST", "/api/users/", body={"email": wanted, "role": "USER"})
            except CrmRejectedError as exc:
                if "already" not in str(exc):
                    raise
            await self._load_profiles()
        if wanted not in self._profiles:
            raise CrmRejectedError(
                "the owner is not an active user of this BottleCRM organisation "
                "(invite them, or set CrmOwner to the e-mail of a BottleCRM user)"
            )
        return self._profiles[wanted]

    async def _load_profiles(self) -> None:
        data = await self._call("GET", "/api/users/get-teams-and-users/")
        for p in data.get("profiles", []):
            if p.get("is_active", True):
                self._profiles[str(p["user_details"]["email"]).lower()] = str(p["id"])
                self._profiles[str(p["id"]).lower()] = str(p["id"])

    async def _unmatched_account_id(self, *, create: bool = True) -> str:
        if self._unmatched_account:
            return self._unmatched_account
        await self._ensure_fields("Account")

        async def step() -> str:
            data = await self._call("GET", "/api/accounts/", params={"cf_outlook_role": UNMATCHED_ROLE})
            rows = sorted(_rows(data, "active_accounts"), key=lambda r: str(r["created_at"]))
            if rows:
                self._unmatched_account = str(rows[0]["id"])
            elif create:
                payload = {"name": self._unmatched_name, "custom_fields": {"outlook_role": UNMATCHED_ROLE}}
                made = await self._call("POST", "/api/accounts/", body=payload, resend=False)
                self._unmatched_account = str(made["id"])
            return self._unmatched_account

        async with self._account_lock:
            if self._unmatched_account:
                return self._unmatched_account
            return await self._steps(step)

    # -----------------------------------------------------------------------------------------
    # People and contacts

    async def find_people(self, addresses: Sequence[str]) -> dict[str, list[PersonRef]]:
        wanted = sorted({a.strip().lower() for a in addresses if a.strip()})
        found = await asyncio.gather(*(self._people_with(a) for a in wanted))
        return dict(zip(wanted, found, strict=True))

    async def _people_with(self, address: str) -> list[PersonRef]:
        """Contacts holding the address in any of their three e-mail slots, then leads. One request
        after the other, so a throttled CRM sees one caller per address."""
        people = {p.id: p for p in map(_person, await self._contacts_with_email(address))}
        data = await self._call("GET", "/api/leads/", params={"email": address, "limit": 100})
        for row in _rows(data, "open_leads") + _rows(data, "close_leads"):
            if str(row.get("email") or "").lower() == address:
                people.setdefault(str(row["id"]), _person(row, kind="lead"))
        return list(people.values())

    async def _contacts_with_email(self, address: str) -> list[dict[str, Any]]:
        data = await self._call("GET", "/api/contacts/", params={"email": address, "limit": 100})
        rows = [r for r in data.get("results", []) if str(r.get("email") or "").lower() == address]
        for slot in EMAIL_SLOTS:
            await self._ensure_fields("Contact")
            data = await self._call("GET", "/api/contacts/", params={f"cf_{slot}": address, "limit": 100})
            rows += data.get("results", [])
        unique = {str(r["id"]): r for r in rows}
        return sorted(unique.values(), key=lambda r: str(r["created_at"]))

    async def upsert_contact(self, contact: CrmContact) -> CrmRef:
        await self._ensure_fields("Contact")
        profile = await self._profile_id(contact.owner)
        payload = _contact_payload(contact.fields)

        async def step() -> CrmRef:
            row = await self._find_contact(contact)
            if row is not None:
                await self._update_contact(row, contact, payload, profile)
                return CrmRef(str(row["id"]))
            create = {**payload, "assigned_to": [profile]}
            create["custom_fields"] = {**payload["custom_fields"], "outlook_key": contact.key or None}
            try:
                data = await self._call("POST", "/api/contacts/", body=create, resend=False)
            except CrmRejectedError as exc:
                # BottleCRM allows one contact per address in an organisation: the one holding it is
                # adopted only if it is already this owner's (`_update_contact` refuses otherwise).
                if "already exists" not in str(exc) or not payload["email"]:
                    raise
                address = str(payload["email"]).lower()
                holders = await self._contacts_with_email(address)
                holder = next((r for r in holders if str(r.get("email") or "").lower() == address), None)
                if holder is None:
                    raise
                await self._update_contact(holder, contact, payload, profile, adopting=True)
                return CrmRef(str(holder["id"]))
            return CrmRef(str(data["id"]))

        return await self._steps(step)

    async def _find_contact(self, contact: CrmContact) -> dict[str, Any] | None:
        if contact.ref is not None:
            data = await self._contact(contact.ref.id)
            if data is None:
                raise CrmRejectedError(
                    f"contact {contact.ref.id} was deleted in BottleCRM: it is not brought back by an update",
                    status=404,
                )
            return data
        if contact.key:
            data = await self._call("GET", "/api/contacts/", params={"cf_outlook_key": contact.key})
            rows = sorted(data.get("results", []), key=lambda r: str(r["created_at"]))
            if rows:
                return dict(rows[0])
        return None

    async def _contact(self, contact_id: str) -> dict[str, Any] | None:
        if not _is_uuid(contact_id):
            return None
        data = await self._call("GET", f"/api/contacts/{contact_id}/", missing_ok=True)
        return None if data is None else dict(data["contact_obj"])

    async def _update_contact(
        self,
        row: Mapping[str, Any],
        contact: CrmContact,
        payload: dict[str, Any],
        profile: str,
        *,
        adopting: bool = False,
    ) -> None:
        """Write the fields of a contact assigned to the owner; `assigned_to` is left as it is."""
        if profile not in _assignees(row):
            raise CrmRejectedError(
                f"BottleCRM contact {row['id']} holds this e-mail address but is assigned to another "
                "user: it is not linked or changed (BottleCRM keeps one contact per address; assign it "
                "to this user in BottleCRM to link it)"
                if adopting
                else f"BottleCRM contact {row['id']} is assigned to another user now: not changed",
                status=409,
            )
        fields = dict(payload["custom_fields"])
        stored_key = (row.get("custom_fields") or {}).get("outlook_key")
        if contact.key and not stored_key:
            fields["outlook_key"] = contact.key
        patch = {**payload, "custom_fields": fields}
        await self._call("PATCH", f"/api/contacts/{row['id']}/", body=patch, resend=False)

    async def get_contact(self, ref: CrmRef) -> CrmContact | None:
        row = await self._contact(ref.id)
        return None if row is None else _crm_contact(row, self._owner_email(row.get("assigned_to", [])))

    def _owner_email(self, assignees: Sequence[Mapping[str, Any]]) -> str:
        emails = sorted(str(a.get("user_details", {}).get("email", "")).lower() for a in assignees)
        return emails[0] if emails else ""

    async def delete_contact(self, ref: CrmRef, owner: str) -> None:
        row = await self._contact(ref.id)
        if row is None:
            return
        assignees = _assignees(row)
        if len(assignees) > 1:
            raise CrmRejectedError(
                f"BottleCRM contact {ref.id} is assigned to other users too: not deleted", status=409
            )
        if assignees != {await self._profile_id(owner)}:
            raise CrmRejectedError(
                f"BottleCRM contact {ref.id} is assigned to someone else: not deleted", status=409
            )
        await self._call("DELETE", f"/api/contacts/{ref.id}/", missing_ok=True)

    async def contact_changes(self, owner: str, cursor: str | None) -> ContactFeedPage:
        profile = await self._profile_id(owner)
        rows = await self._scan_contacts(profile)
        latest = max((str(r["updated_at"]) for r in rows), default=cursor or "")
        changes = tuple(_crm_contact(r, owner.strip().lower()) for r in rows)
        return ContactFeedPage(changes=changes, cursor=max(latest, cursor or ""), snapshot=True)

    async def _scan_contacts(self, profile: str) -> list[dict[str, Any]]:
        """Every contact assigned to the profile. Pages are by offset over `-created_at`, so a
        contact created or deleted meanwhile shifts them: the scan restarts when the total moved."""
        for _ in range(5):
            rows: dict[str, dict[str, Any]] = {}
            total: int | None = None
            offset = 0
            while True:
                params: dict[str, str | int] = {"assigned_to": profile, "limit": PAGE, "offset": offset}
                data = await self._call("GET", "/api/contacts/", params=params)
                if total is not None and data["count"] != total:
                    break
                total = int(data["count"])
                page = data.get("results", [])
                rows.update((str(r["id"]), r) for r in page)
                offset += len(page)
                if not page or offset >= total:
                    return list(rows.values())
        raise CrmRetryableError("BottleCRM contacts kept changing during a full scan; try again")

    # -----------------------------------------------------------------------------------------
    # Journals

    async def upsert_journal(self, journal: Journal) -> CrmRef:
        if len(journal.people) > 1:
            raise CrmRejectedError(
                "a BottleCRM interaction has one home record: write one journal per person "
                "(capabilities.multi_person_journal is False)"
            )
        home = await self._journal_home(journal)
        payload = _interaction_payload(journal)

        async def step() -> CrmRef:
            found = await self._find_interaction(home, journal.key)
            if found is not None:
                await self._call("PATCH", f"/api/interactions/{found['id']}/", body=payload, resend=False)
                ref = CrmRef(str(found["id"]))
            else:
                body = {**payload, "kind": "email", home[0]: home[1]}
                data = await self._call("POST", "/api/interactions/", body=body, resend=False)
                ref = CrmRef(str(data["id"]))
            self._journal_homes[journal.key] = home
            return ref

        return await self._steps(step)

    async def _journal_home(self, journal: Journal) -> tuple[str, str]:
        if not journal.people:
            return "account", await self._unmatched_account_id()
        person = journal.people[0]
        kind = "lead" if person.kind == "lead" else "contact"
        if not _is_uuid(person.id):
            raise CrmRejectedError(f"the journal links {person.id!r}, which is not a BottleCRM {kind} id")
        return kind, str(uuid.UUID(person.id))

    async def _find_interaction(self, home: tuple[str, str], key: str) -> dict[str, Any] | None:
        digest = _key_hash(key)
        offset = 0
        while True:
            params: dict[str, str | int] = {home[0]: home[1], "limit": INTERACTION_PAGE, "offset": offset}
            data = await self._call("GET", "/api/interactions/", params=params, missing_ok=True)
            if data is None:
                if home[0] != "account":
                    raise CrmRejectedError(f"the journal's {home[0]} {home[1]} does not exist in BottleCRM")
                return None
            rows = data.get("interactions", [])
            for row in rows:
                marker = _find_marker(str(row.get("body") or ""))
                if marker is not None and marker[0] == digest and row.get("kind") == "email":
                    return dict(row)
            offset += len(rows)
            if not rows or offset >= int(data.get("count", 0)):
                return None

    async def upsert_journals(self, journals: Sequence[Journal]) -> list[CrmRef | CrmError]:
        """BottleCRM has no bulk API: one `upsert_journal` per journal, side by side (its requests are
        `concurrency` at a time), the journals of one key in the order given."""
        by_key: dict[str, list[int]] = {}
        for n, journal in enumerate(journals):
            by_key.setdefault(journal.key, []).append(n)
        outcomes: list[CrmRef | CrmError | None] = [None] * len(journals)

        async def write(numbers: list[int]) -> None:
            for n in numbers:
                try:
                    outcomes[n] = await self.upsert_journal(journals[n])
                except CrmError as error:
                    outcomes[n] = error

        await asyncio.gather(*(write(numbers) for numbers in by_key.values()))
        return [o for o in outcomes if o is not None]

    async def get_journal(self, key: str) -> Journal | None:
        homes = [self._journal_homes[key]] if key in self._journal_homes else []
        person = key.rpartition("|")[2]
        if "|" in key and _is_uuid(person):  # the engine's per-person key
            homes += [("contact", person), ("lead", person)]
        account = await self._unmatched_account_id(create=False)
        if account:
            homes.append(("account", account))
        for home in homes:
            try:
                row = await self._find_interaction(home, key)
            except CrmRejectedError:
                continue
            if row is not None:
                return _journal(row, key)
        return None

    # -----------------------------------------------------------------------------------------
    # Appointments

    async def upsert_appointment(self, appointment: Appointment) -> CrmRef:
        if appointment.end < appointment.start:
            raise CrmRejectedError("the appointment ends before it starts")
        await self._ensure_fields("Task")
        profile = await self._profile_id(appointment.owner)
        payload = _task_payload(appointment)

        async def step() -> CrmRef:
            row = await self._find_task(appointment.key)
            if row is None:
                create = {**payload, "assigned_to": [profile]}
                await self._call("POST", "/api/tasks/", body=create, resend=False)
                row = await self._find_task(appointment.key)  # the create answer carries no id
                if row is None:
                    raise CrmRetryableError("BottleCRM accepted a task it cannot then find")
                return CrmRef(str(row["id"]))
            await self._call("PATCH", f"/api/tasks/{row['id']}/", body=payload, resend=False)
            return CrmRef(str(row["id"]))

        return await self._steps(step)

    async def _find_task(self, key: str) -> dict[str, Any] | None:
        data = await self._call("GET", "/api/tasks/", params={"cf_outlook_event_key": key, "slim": "true"})
        rows = sorted(data.get("tasks", []), key=lambda r: str(r["created_at"]))
        return dict(rows[0]) if rows else None

    async def cancel_appointment(self, key: str) -> None:
        current = await self.get_appointment(key)
        if current is None or current.cancelled:
            return
        await self.upsert_appointment(replace(current, cancelled=True))

    async def delete_appointment(self, key: str) -> None:
        await self._ensure_fields("Task")
        row = await self._find_task(key)
        if row is not None:
            await self._call("DELETE", f"/api/tasks/{row['id']}/", missing_ok=True)

    async def get_appointment(self, key: str) -> Appointment | None:
        await self._ensure_fields("Task")
        row = await self._find_task(key)
        if row is None:
            return None
        data = await self._call("GET", f"/api/tasks/{row['id']}/", missing_ok=True)
        return None if data is None else _appointment(data["task_obj"], key)

    async def appointment_changes(
        self, owner: str, cursor: str | None
    ) -> tuple[list[CrmAppointmentChange], str]:
        """Not offered (`appointment_change_feed=False`): BottleCRM tasks have no times."""
        return [], cursor or ""


# ---------------------------------------------------------------------------------------------
# Errors


def _rejected(method: str, response: httpx.Response) -> CrmRejectedError:
    status = response.status_code
    try:
        data = response.json()
    except ValueError:
        data = {}
    reason = _reason(data) or response.reason_phrase
    if status == 401 or (status == 403 and "Organization context" in reason):
        # BottleCRM's answer to a missing or bad token is a 403; the port's meaning is a 401.
        return CrmRejectedError(
            "BottleCRM did not accept the credentials (the API token is missing, wrong or revoked; "
            "BottleCRM answers 403): check CRM_API_TOKEN",
            status=401,
        )
    return CrmRejectedError(f"BottleCRM refused {method} ({status}): {reason}", status=status)


def _json(method: str, response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise CrmRejectedError(
            f"BottleCRM {method} answered {response.status_code} without JSON "
            "(is CRM_BASE_URL the API's address?)",
            status=response.status_code,
        ) from None


def _reason(data: Any) -> str:
    if isinstance(data, dict):
        for name in ("errors", "detail", "error", "message"):
            value = data.get(name)
            if value and not isinstance(value, bool):
                return _reason(value) if isinstance(value, dict | list) else str(value)
        return "; ".join(f"{k}: {_reason(v)}" for k, v in data.items())
    if isinstance(data, list):
        return "; ".join(_reason(v) for v in data)
    return str(data)


def _retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"))


# ---------------------------------------------------------------------------------------------
# Mapping: contacts


def _contact_payload(fields: ContactFields) -> dict[str, Any]:
    """BottleCRM contact fields, plus what it has no column for in `outlook_fields`."""
    if len(fields.emails) > 1 + len(EMAIL_SLOTS):
        raise CrmRejectedError(f"a BottleCRM contact keeps at most {1 + len(EMAIL_SLOTS)} e-mail addresses")
    extra: dict[str, Any] = {}
    first, last = fields.given_name.strip(), fields.surname.strip()
    if not first or not last:
        extra["blank_names"] = [n for n, v in (("given", first), ("surname", last)) if not v]
        fallback = fields.display_name.strip() or (fields.emails[0] if fields.emails else "") or "(no name)"
        first, last = first or fallback, last or "-"
    if fields.display_name:
        extra["display_name"] = fields.display_name
    others = list(fields.emails[1:])
    if any(e != e.strip().lower() for e in others):
        extra["emails"] = others  # as spelled; the slots hold them normalised, for look-ups
    phones = list(fields.business_phones)
    phone = phones.pop(0) if phones and _PHONE.match(phones[0]) else None
    if phones or (fields.business_phones and phone is None):
        extra["phones"] = phones if phone else list(fields.business_phones)
    if fields.mobile_phone:
        extra["mobile"] = fields.mobile_phone
    address = fields.business_address
    if address.country:
        extra["country"] = address.country
    custom: dict[str, Any] = {"outlook_fields": json.dumps(extra, sort_keys=True) if extra else None}
    for i, slot in enumerate(EMAIL_SLOTS):
        custom[slot] = others[i].strip().lower() if i < len(others) else None
    return {
        "first_name": first[:255],
        "last_name": last[:255],
        "email": fields.emails[0] if fields.emails else None,
        "phone": phone,
        "organization": fields.company or None,
        "title": fields.job_title or None,
        "department": fields.department or None,
        "address_line": address.street or None,
        "city": address.city or None,
        "state": address.state or None,
        "postcode": address.postal_code or None,
        "description": fields.notes or None,
        "custom_fields": custom,
    }


def _crm_contact(row: Mapping[str, Any], owner: str) -> CrmContact:
    custom = row.get("custom_fields") or {}
    try:
        extra = json.loads(custom.get("outlook_fields") or "{}")
    except ValueError:
        extra = {}
    blank = set(extra.get("blank_names", []))
    email = str(row.get("email") or "")
    spelled = {e.strip().lower(): e for e in extra.get("emails", [])}
    others = [str(custom[s]) for s in EMAIL_SLOTS if custom.get(s)]
    phone = str(row.get("phone") or "")
    fields = ContactFields(
        given_name="" if "given" in blank else str(row.get("first_name") or ""),
        surname="" if "surname" in blank else str(row.get("last_name") or ""),
        display_name=str(extra.get("display_name", "")),
        emails=tuple([email] if email else []) + tuple(spelled.get(e.lower(), e) for e in others),
        business_phones=tuple([phone] if phone else []) + tuple(extra.get("phones", [])),
        mobile_phone=str(extra.get("mobile", "")),
        company=str(row.get("organization") or ""),
        job_title=str(row.get("title") or ""),
        department=str(row.get("department") or ""),
        business_address=PostalAddress(
            street=str(row.get("address_line") or ""),
            city=str(row.get("city") or ""),
            state=str(row.get("state") or ""),
            postal_code=str(row.get("postcode") or ""),
            country=str(extra.get("country") or row.get("country") or ""),
        ),
        notes=str(row.get("description") or ""),
    )
    return CrmContact(
        ref=CrmRef(str(row["id"])),
        owner=owner,
        fields=fields,
        key=str(custom.get("outlook_key") or ""),
        updated_at=_instant(row.get("updated_at")),
    )


def _assignees(row: Mapping[str, Any]) -> set[str]:
    """The profile ids a contact is assigned to (serialized profiles, or bare ids)."""
    return {str(a["id"]) if isinstance(a, Mapping) else str(a) for a in row.get("assigned_to") or []}


def _person(row: Mapping[str, Any], kind: str = "contact") -> PersonRef:
    name = " ".join(str(row.get(n) or "") for n in ("first_name", "last_name")).strip()
    return PersonRef(id=str(row["id"]), kind=kind, name=name, email=str(row.get("email") or ""))


# ---------------------------------------------------------------------------------------------
# Mapping: journals


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def _pack(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode("ascii")


def _unpack(text: str) -> Any:
    return json.loads(zlib.decompress(base64.urlsafe_b64decode(text.encode("ascii"))))


def _find_marker(body: str) -> tuple[str, str, int] | None:
    """(key hash, payload, offset of the line) of the last marker line in the body, if any."""
    offset = len(body)
    for line in reversed(body.split("\n")):
        offset -= len(line)
        match = _MARKER.match(line)
        if match:
            return match.group(1), match.group(2), offset
        offset -= 1  # the newline before it
    return None


def journal_record(body: str) -> dict[str, Any] | None:
    """What an interaction body's key line holds (key, from, to, cc, sent, received, conv, att, owner,
    seen, people), if it has a valid one."""
    found = _find_marker(body)
    if found is None:
        return None
    try:
        meta = _unpack(found[1])
    except (ValueError, zlib.error):
        return None
    key = meta.get("key") if isinstance(meta, dict) else None
    return meta if isinstance(key, str) and _key_hash(key) == found[0] else None


def journal_key(body: str) -> str | None:
    """The journal key an interaction body carries in its key line, if it has one."""
    record = journal_record(body)
    return None if record is None else str(record["key"])


def _addr(a: Address | None) -> list[str] | None:
    return None if a is None else [a.address, a.name]


def _journal_meta(journal: Journal, detail: int) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "v": 1,
        "key": journal.key,
        "from": _addr(journal.sender),
        "to": [_addr(a) for a in journal.to[:detail]],
        "cc": [_addr(a) for a in journal.cc[:detail]],
        "sent": journal.sent_at.isoformat() if journal.sent_at else None,
        "received": journal.received_at.isoformat() if journal.received_at else None,
        "conv": journal.conversation_id,
        "att": [[a.name, a.size] for a in journal.attachments[:detail]],
        "owner": journal.owner,
        "seen": list(journal.seen_by[:detail]),
        "people": [[p.id, p.kind, p.name, p.email] for p in journal.people],
    }
    more = {
        name: len(items) - detail
        for name, items in (("to", journal.to), ("cc", journal.cc), ("att", journal.attachments))
        if len(items) > detail
    }
    if more:
        meta["more"] = more
    return meta


def _interaction_payload(journal: Journal) -> dict[str, Any]:
    detail = 10_000
    marker = ""
    while True:  # a huge recipient list is shortened (and counted) to leave room for the body
        digest = _key_hash(journal.key)
        marker = f"[outlook-sync {digest} {_pack(_journal_meta(journal, detail))}]"
        if len(marker) <= MARKER_RESERVE * 2 or detail <= 5:
            break
        detail //= 2
    body = journal.body
    if len(body) + 2 + len(marker) > BODY_LIMIT:
        body = body[: BODY_LIMIT - 2 - len(marker) - len(CUT)] + CUT
    when = journal.sent_at or journal.received_at or datetime.now(UTC)
    latest = datetime.now(UTC) + timedelta(minutes=4)  # BottleCRM refuses more than 5 min ahead
    subject = journal.subject if len(journal.subject) <= SUBJECT_LIMIT else journal.subject[:199] + "…"
    return {
        "direction": journal.direction.value,
        "occurred_at": min(when, latest).isoformat(),
        "subject": subject,
        "body": f"{body}\n\n{marker}" if body else marker,
    }


def _journal(row: Mapping[str, Any], key: str) -> Journal:
    text = str(row.get("body") or "")
    found = _find_marker(text)
    assert found is not None
    meta = _unpack(found[1])
    body = text[: found[2]]
    body = body[:-2] if body.endswith("\n\n") else body.rstrip("\n")

    def address(value: Sequence[str] | None) -> Address | None:
        return None if not value else Address(value[0], value[1])

    def when(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    return Journal(
        key=key,
        subject=str(row.get("subject") or ""),
        body=body,
        direction=Direction(row.get("direction") or "inbound"),
        sender=address(meta.get("from")),
        to=tuple(a for a in map(address, meta.get("to", [])) if a),
        cc=tuple(a for a in map(address, meta.get("cc", [])) if a),
        sent_at=when(meta.get("sent")),
        received_at=when(meta.get("received")),
        conversation_id=str(meta.get("conv", "")),
        attachments=tuple(Attachment(n, int(s)) for n, s in meta.get("att", [])),
        owner=str(meta.get("owner", "")),
        seen_by=tuple(meta.get("seen", [])),
        people=tuple(PersonRef(id=i, kind=k, name=n, email=e) for i, k, n, e in meta.get("people", [])),
    )


# ---------------------------------------------------------------------------------------------
# Mapping: appointments


def _task_payload(appointment: Appointment) -> dict[str, Any]:
    title = (CANCELLED if appointment.cancelled else "") + appointment.subject
    if len(title) > SUBJECT_LIMIT:
        title = title[: SUBJECT_LIMIT - 1] + "…"
    day = appointment.start_date if appointment.is_all_day and appointment.start_date else appointment.start
    meta = {
        "subject": appointment.subject,
        "all_day": appointment.is_all_day,
        "start_date": appointment.start_date.isoformat() if appointment.start_date else None,
        "end_date": appointment.end_date.isoformat() if appointment.end_date else None,
        "location": appointment.location,
        "organizer": _addr(appointment.organizer),
        "attendees": [[a.address.address, a.address.name, a.type, a.response] for a in appointment.attendees],
        "online": appointment.online_meeting_url,
        "owner": appointment.owner,
        "seen": list(appointment.seen_by),
        "people": [[p.id, p.kind, p.name, p.email] for p in appointment.people],
        "series": appointment.series_key,
        "cancelled": appointment.cancelled,
    }
    return {
        "title": title,
        "status": "New",
        "priority": "Medium",
        "due_date": (day.date() if isinstance(day, datetime) else day).isoformat(),
        "description": appointment.body,
        "contacts": sorted({_uuid(p.id) for p in appointment.people if _is_uuid(p.id)}),
        "custom_fields": {
            "outlook_event_key": appointment.key,
            "outlook_starts_at": appointment.start.astimezone(UTC).isoformat(),
            "outlook_ends_at": appointment.end.astimezone(UTC).isoformat(),
            "outlook_meeting": json.dumps(meta, ensure_ascii=False, sort_keys=True),
        },
    }


def _appointment(row: Mapping[str, Any], key: str) -> Appointment:
    custom = row.get("custom_fields") or {}
    try:
        meta = json.loads(custom.get("outlook_meeting") or "{}")
    except ValueError:
        meta = {}
    title = str(row.get("title") or "")
    subject = meta.get("subject") or title.removeprefix(CANCELLED)

    def day(value: str | None) -> date | None:
        return date.fromisoformat(value) if value else None

    organizer = meta.get("organizer")
    return Appointment(
        key=key,
        subject=subject,
        start=_instant(custom.get("outlook_starts_at")) or datetime.min.replace(tzinfo=UTC),
        end=_instant(custom.get("outlook_ends_at")) or datetime.min.replace(tzinfo=UTC),
        is_all_day=bool(meta.get("all_day", False)),
        start_date=day(meta.get("start_date")),
        end_date=day(meta.get("end_date")),
        location=str(meta.get("location", "")),
        organizer=Address(organizer[0], organizer[1]) if organizer else None,
        attendees=tuple(
            Attendee(Address(a, n), type=t, response=r) for a, n, t, r in meta.get("attendees", [])
        ),
        online_meeting_url=str(meta.get("online", "")),
        body=str(row.get("description") or ""),
        owner=str(meta.get("owner", "")),
        seen_by=tuple(meta.get("seen", [])),
        people=tuple(PersonRef(id=i, kind=k, name=n, email=e) for i, k, n, e in meta.get("people", [])),
        series_key=str(meta.get("series", "")),
        cancelled=bool(meta.get("cancelled", False)) or title.startswith(CANCELLED),
    )


# ---------------------------------------------------------------------------------------------
# Small parsers


def _rows(data: Any, *names: str) -> list[dict[str, Any]]:
    """The rows of a list answer, whichever key this endpoint uses (some nest them one level)."""
    for name in names:
        value = data.get(name) if isinstance(data, dict) else None
        if isinstance(value, dict):
            value = next((v for v in value.values() if isinstance(v, list)), None)
        if isinstance(value, list):
            return [dict(v) for v in value]
    return []


def _instant(value: Any) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _uuid(value: str) -> str:
    """A BottleCRM id; anything else is refused here rather than turned into a 500 by the server."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise CrmRejectedError("not a BottleCRM id") from None


__all__ = ["CUSTOM_FIELDS", "BottleCrmConnector", "journal_key", "journal_record"]
