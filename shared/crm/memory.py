"""`InMemoryCrm`: the CRM port in memory, with the reference CRM's semantics (the contract suite runs
both). For unit tests of the engine: seed people, act as a CRM user, inject failures, then assert on
`journals`, `appointments` and `contacts`.

    crm = InMemoryCrm()
    pid = crm.add_person("ann@example.com", name="Ann Lee", owner="alice@contoso.com")
    crm.fail_next("upsert_journal", CrmRetryableError("CRM down", status=503))   # an operation ...
    crm.fail_next("<msg-1@x>", CrmRejectedError("bad", status=422), after_apply=False)  # ... or a key
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from shared.errors import CrmError, CrmRejectedError
from shared.model import (
    Appointment,
    ContactFeedPage,
    ContactFields,
    CrmAppointmentChange,
    CrmContact,
    CrmContactRemoved,
    CrmRef,
    CrmTask,
    CrmTaskRemoved,
    Journal,
    PersonRef,
    TaskFeedPage,
    TaskFields,
)
from shared.ports.crm import Capabilities, Health

MAX_EMAILS = 10
T = TypeVar("T")


@dataclass
class _Person:
    id: str
    kind: str
    owner: str
    fields: ContactFields
    key: str
    seq: int
    updated_at: datetime
    deleted: bool = False


@dataclass
class _Stored:
    id: str
    value: Appointment
    seq: int


@dataclass
class _Task:
    id: str
    owner: str
    fields: TaskFields
    key: str
    regarding: str
    seq: int
    updated_at: datetime
    deleted: bool = False


@dataclass
class _Failure:
    target: str
    error: CrmError
    times: int
    after_apply: bool


class InMemoryCrm:
    def __init__(self, capabilities: Capabilities | None = None) -> None:
        self.capabilities = capabilities or Capabilities()
        self.credentials_ok = True
        self.journals: dict[str, Journal] = {}
        self._journal_ids: dict[str, str] = {}
        self._appointments: dict[str, _Stored] = {}
        self._people: dict[str, _Person] = {}
        self._removals: list[tuple[str, str, int]] = []  # person id, owner then, seq
        self._tasks: dict[str, _Task] = {}
        self._task_removals: list[tuple[str, str, int]] = []  # task id, owner then, seq
        self._seq = 0
        self._failures: list[_Failure] = []

    # -- what tests read ---------------------------------------------------------------------------

    @property
    def appointments(self) -> dict[str, Appointment]:
        """Appointments by key (by id for those made in the CRM, which have no key)."""
        return {s.value.key or s.id: s.value for s in self._appointments.values()}

    @property
    def contacts(self) -> dict[str, CrmContact]:
        """Live contacts by id."""
        return {
            p.id: self._contact(p) for p in self._people.values() if p.kind == "contact" and not p.deleted
        }

    @property
    def tasks(self) -> dict[str, CrmTask]:
        """Live tasks by id."""
        return {t.id: self._task(t) for t in self._tasks.values() if not t.deleted}

    # -- what tests do -----------------------------------------------------------------------------

    def fail_next(self, target: str, error: CrmError, *, times: int = 1, after_apply: bool = False) -> None:
        """The next `times` calls of operation `target` ("upsert_journal", "find_people" ..., or "*"),
        or touching the record with key / contact id `target`, raise `error` (after applying the
        write when `after_apply`: an ambiguous write)."""
        self._failures.append(_Failure(target, error, times, after_apply))

    def add_person(
        self,
        emails: str | Sequence[str] = (),
        *,
        name: str = "",
        owner: str = "",
        kind: str = "contact",
        **fields: Any,
    ) -> str:
        """A person made in the CRM; `fields` are `ContactFields` names. Returns its id."""
        address_list = (emails,) if isinstance(emails, str) else tuple(emails)
        contact_fields = ContactFields(display_name=name, emails=address_list, **fields)
        person_id = f"p-{len(self._people) + 1:06d}"
        self._check_emails(contact_fields)
        self._people[person_id] = _Person(person_id, kind, owner, contact_fields, "", self._next(), _now())
        return person_id

    def update_person(self, person_id: str, *, owner: str | None = None, **fields: Any) -> None:
        """A CRM user edits (or, with `owner`, reassigns) a person."""
        person = self._live(person_id)
        self._write(
            person, dataclasses.replace(person.fields, **fields), owner if owner is not None else person.owner
        )

    def delete_person(self, person_id: str) -> None:
        self._delete(person_id)

    def add_task(self, *, owner: str, title: str, regarding: str = "", **fields: Any) -> str:
        """A task made in the CRM; `fields` are `TaskFields` names. Returns its id."""
        task_id = f"t-{len(self._tasks) + 1:06d}"
        self._tasks[task_id] = _Task(
            task_id, owner, TaskFields(title=title, **fields), "", regarding, self._next(), _now()
        )
        return task_id

    def update_task(self, task_id: str, *, owner: str | None = None, **fields: Any) -> None:
        """A CRM user edits (or, with `owner`, reassigns) a task."""
        task = self._live_task(task_id)
        self._write_task(task, dataclasses.replace(task.fields, **fields), owner or task.owner)

    def remove_task(self, task_id: str) -> None:
        """A CRM user deletes a task."""
        self._delete_task(task_id)

    def create_appointment(
        self, *, owner: str, subject: str, start: datetime, end: datetime, **fields: Any
    ) -> str:
        """An appointment made in the CRM (no key). Returns its id."""
        value = Appointment(
            key="", subject=subject, start=start, end=end, is_all_day=fields.pop("is_all_day", False),
            start_date=None, end_date=None, location="", organizer=None, attendees=(), online_meeting_url="",
            body="", owner=owner, seen_by=(), people=(),
        )  # fmt: skip
        value = self._check_appointment(dataclasses.replace(value, **fields))
        appointment_id = f"a-{len(self._appointments) + 1:06d}"
        self._appointments[appointment_id] = _Stored(appointment_id, value, self._next())
        return appointment_id

    def update_appointment(self, appointment_id: str, **fields: Any) -> None:
        stored = self._appointments[appointment_id]
        stored.value = self._check_appointment(dataclasses.replace(stored.value, **fields))
        stored.seq = self._next()

    # -- the port ----------------------------------------------------------------------------------

    async def find_people(self, addresses: Sequence[str]) -> dict[str, list[PersonRef]]:
        def lookup() -> dict[str, list[PersonRef]]:
            found: dict[str, list[PersonRef]] = {}
            for wanted in dict.fromkeys(a.strip().lower() for a in addresses):
                found[wanted] = [
                    _person_ref(p, wanted)
                    for p in sorted(self._people.values(), key=lambda p: p.seq)
                    if not p.deleted
                    and p.kind != "company"
                    and wanted in (e.strip().lower() for e in p.fields.emails)
                ]
            return found

        return self._run("find_people", (), lookup)

    async def upsert_journal(self, journal: Journal) -> CrmRef:
        def write() -> CrmRef:
            self._check_journal(journal)
            self.journals[journal.key] = journal
            journal_id = self._journal_ids.setdefault(journal.key, f"j-{len(self._journal_ids) + 1:06d}")
            return CrmRef(journal_id, str(self._next()))

        return self._run("upsert_journal", (journal.key,), write)

    async def upsert_journals(self, journals: Sequence[Journal]) -> list[CrmRef | CrmError]:
        """One by one, as a CRM without a bulk API; `fail_next("upsert_journals")` (or "*") fails the
        whole call, `fail_next("upsert_journal")` or a key fails single journals."""

        async def each() -> list[CrmRef | CrmError]:
            outcomes: list[CrmRef | CrmError] = []
            for journal in journals:
                try:
                    outcomes.append(await self.upsert_journal(journal))
                except CrmError as error:
                    outcomes.append(error)
            return outcomes

        failure = self._take("upsert_journals", ()) if self.credentials_ok else None
        if failure is not None and not failure.after_apply:
            raise failure.error
        outcomes = await each()
        if failure is not None:
            raise failure.error
        return outcomes

    async def get_journal(self, key: str) -> Journal | None:
        return self._run("get_journal", (key,), lambda: self.journals.get(key))

    async def upsert_appointment(self, appointment: Appointment) -> CrmRef:
        def write() -> CrmRef:
            value = self._check_appointment(appointment)
            stored = self._by_key(appointment.key)
            if stored is None:
                stored = _Stored(f"a-{len(self._appointments) + 1:06d}", value, 0)
                self._appointments[stored.id] = stored
            stored.value, stored.seq = value, self._next()
            return CrmRef(stored.id, str(stored.seq))

        return self._run("upsert_appointment", (appointment.key,), write)

    async def cancel_appointment(self, key: str) -> None:
        def cancel() -> None:
            stored = self._by_key(key)
            if stored is not None and not stored.value.cancelled:
                # as the reference CRM (and BottleCRM, whose cancel is a rewrite): every write checks the
                # links, so a person deleted since the appointment was written makes the cancel refused
                self._check_links(stored.value.people)
                stored.value, stored.seq = dataclasses.replace(stored.value, cancelled=True), self._next()

        self._run("cancel_appointment", (key,), cancel)

    async def delete_appointment(self, key: str) -> None:
        def delete() -> None:
            stored = self._by_key(key)
            if stored is not None:
                del self._appointments[stored.id]

        self._run("delete_appointment", (key,), delete)

    async def get_appointment(self, key: str) -> Appointment | None:
        def read() -> Appointment | None:
            stored = self._by_key(key)
            return stored.value if stored else None

        return self._run("get_appointment", (key,), read)

    async def appointment_changes(
        self, owner: str, cursor: str | None
    ) -> tuple[list[CrmAppointmentChange], str]:
        def read() -> tuple[list[CrmAppointmentChange], str]:
            if not self.capabilities.appointment_change_feed:
                raise CrmRejectedError("this CRM has no appointment change feed (see capabilities)")
            after = _cursor(cursor)
            rows = sorted(
                (s for s in self._appointments.values() if s.value.owner == owner and s.seq > after),
                key=lambda s: s.seq,
            )
            return [_change(s) for s in rows], str(max(self._seq, after))

        return self._run("appointment_changes", (), read)

    async def upsert_contact(self, contact: CrmContact) -> CrmRef:
        def write() -> CrmRef:
            found = self._live(contact.ref.id) if contact.ref else None
            if found is None and contact.key:
                found = self._by_contact_key(contact.key)
            if found is None:
                self._check_emails(contact.fields)
                person_id = f"p-{len(self._people) + 1:06d}"
                found = _Person(person_id, "contact", contact.owner, contact.fields, contact.key, 0, _now())
                self._people[person_id] = found
            person = found
            if person.owner != contact.owner:  # a write of ours never reassigns a contact
                raise CrmRejectedError(
                    "CRM rejected (409): the contact is assigned to another owner: not changed", status=409
                )
            if contact.key and contact.key != person.key:
                holder = self._by_contact_key(contact.key, include_deleted=True)
                if holder is not None and holder.id != person.id:
                    raise CrmRejectedError("CRM rejected: another person already holds this key", status=409)
                person.key = contact.key
            self._write(person, contact.fields, contact.owner)
            return CrmRef(person.id, str(person.seq))

        return self._run("upsert_contact", (contact.key, contact.ref.id if contact.ref else ""), write)

    async def get_contact(self, ref: CrmRef) -> CrmContact | None:
        def read() -> CrmContact | None:
            person = self._people.get(ref.id)
            return (
                None
                if person is None or person.deleted or person.kind == "company"
                else self._contact(person)
            )

        return self._run("get_contact", (ref.id,), read)

    async def delete_contact(self, ref: CrmRef, owner: str) -> None:
        def delete() -> None:
            person = self._people.get(ref.id)
            if person is not None and not person.deleted and person.owner != owner:
                raise CrmRejectedError(
                    f"CRM rejected (409): contact {ref.id} is assigned to someone else", status=409
                )
            self._delete(ref.id, missing_ok=True)

        self._run("delete_contact", (ref.id,), delete)

    async def contact_changes(self, owner: str, cursor: str | None) -> ContactFeedPage:
        def read() -> ContactFeedPage:
            after = _cursor(cursor)
            if not self.capabilities.contact_change_feed:
                mine = [
                    p
                    for p in self._people.values()
                    if p.owner == owner and p.kind == "contact" and not p.deleted
                ]
                return ContactFeedPage(tuple(self._contact(p) for p in mine), str(self._seq), snapshot=True)
            live = {
                p.id: (p.seq, self._contact(p))
                for p in self._people.values()
                if p.owner == owner and p.kind == "contact" and not p.deleted and p.seq > after
            }
            gone: dict[str, tuple[int, CrmContact | CrmContactRemoved]] = {}
            if cursor:
                for person_id, was_owner, seq in self._removals:
                    if was_owner == owner and seq > after and person_id not in live:
                        gone[person_id] = (seq, CrmContactRemoved(CrmRef(person_id), owner))
            events = sorted([*live.values(), *gone.values()], key=lambda e: e[0])
            return ContactFeedPage(changes=tuple(e[1] for e in events), cursor=str(max(self._seq, after)))

        return self._run("contact_changes", (), read)

    async def upsert_task(self, task: CrmTask) -> CrmRef:
        def write() -> CrmRef:
            found = self._live_task(task.ref.id) if task.ref else None
            if found is None and task.key:
                found = next((t for t in self._tasks.values() if t.key == task.key), None)
                if found is not None and found.deleted:
                    raise CrmRejectedError(
                        "CRM rejected (409): the task with this key was deleted in the CRM", status=409
                    )
            if task.regarding:
                self._check_links([PersonRef(task.regarding, "contact")])
            if found is None:
                task_id = f"t-{len(self._tasks) + 1:06d}"
                found = _Task(task_id, task.owner, task.fields, task.key, task.regarding, 0, _now())
                self._tasks[task_id] = found
            found.regarding = task.regarding or found.regarding
            found.key = found.key or task.key
            self._write_task(found, self._held(task.fields), task.owner)
            return CrmRef(found.id, str(found.seq))

        return self._run("upsert_task", (task.key, task.ref.id if task.ref else ""), write)

    async def get_task(self, ref: CrmRef) -> CrmTask | None:
        def read() -> CrmTask | None:
            task = self._tasks.get(ref.id)
            return None if task is None or task.deleted else self._task(task)

        return self._run("get_task", (ref.id,), read)

    async def delete_task(self, ref: CrmRef) -> None:
        self._run("delete_task", (ref.id,), lambda: self._delete_task(ref.id, missing_ok=True))

    async def task_changes(self, owner: str, cursor: str | None) -> TaskFeedPage:
        def read() -> TaskFeedPage:
            after = _cursor(cursor)
            if not self.capabilities.task_change_feed:
                mine = [t for t in self._tasks.values() if t.owner == owner and not t.deleted]
                return TaskFeedPage(tuple(self._task(t) for t in mine), str(self._seq), snapshot=True)
            live = {
                t.id: (t.seq, self._task(t))
                for t in self._tasks.values()
                if t.owner == owner and not t.deleted and t.seq > after
            }
            gone: dict[str, tuple[int, CrmTask | CrmTaskRemoved]] = {}
            if cursor:
                for task_id, was_owner, seq in self._task_removals:
                    if was_owner == owner and seq > after and task_id not in live:
                        gone[task_id] = (seq, CrmTaskRemoved(CrmRef(task_id), owner))
            events = sorted([*live.values(), *gone.values()], key=lambda e: e[0])
            return TaskFeedPage(changes=tuple(e[1] for e in events), cursor=str(max(self._seq, after)))

        return self._run("task_changes", (), read)

    async def check(self) -> Health:
        try:
            self._run("check", (), lambda: None)
        except CrmError as exc:
            return Health(ok=False, detail=str(exc))
        return Health(ok=True, detail="in-memory CRM")

    async def aclose(self) -> None:
        return None

    # -- inside ------------------------------------------------------------------------------------

    def _run(self, op: str, keys: Sequence[str], apply: Callable[[], T]) -> T:
        if not self.credentials_ok:
            raise CrmRejectedError("CRM refused the credentials (401)", status=401)
        failure = self._take(op, keys)
        if failure is not None and not failure.after_apply:
            raise failure.error
        result = apply()
        if failure is not None:
            raise failure.error
        return result

    def _take(self, op: str, keys: Sequence[str]) -> _Failure | None:
        for failure in self._failures:
            if failure.target in ("*", op) or (failure.target and failure.target in keys):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _live(self, person_id: str) -> _Person:
        person = self._people.get(person_id)
        if person is None or person.deleted or person.kind == "company":
            raise CrmRejectedError("CRM rejected (404): no such contact", status=404)
        return person

    def _by_contact_key(self, key: str, include_deleted: bool = False) -> _Person | None:
        person = next((p for p in self._people.values() if p.key == key), None)
        if person is not None and person.deleted and not include_deleted:
            raise CrmRejectedError(
                "CRM rejected (409): the contact with this key was deleted in the CRM", status=409
            )
        return person

    def _by_key(self, key: str) -> _Stored | None:
        return next((s for s in self._appointments.values() if s.value.key == key and key), None)

    def _write(self, person: _Person, fields: ContactFields, owner: str) -> None:
        self._check_emails(fields)
        seq = self._next()
        if person.seq and owner != person.owner:
            self._removals.append((person.id, person.owner, seq))
        person.fields, person.owner, person.seq, person.updated_at = fields, owner, seq, _now()

    def _delete(self, person_id: str, missing_ok: bool = False) -> None:
        person = self._people.get(person_id)
        if person is None or person.kind == "company":
            if missing_ok:
                return
            raise CrmRejectedError("CRM rejected (404): no such contact", status=404)
        if not person.deleted:
            person.deleted, person.seq = True, self._next()
            self._removals.append((person.id, person.owner, person.seq))

    def _live_task(self, task_id: str) -> _Task:
        task = self._tasks.get(task_id)
        if task is None or task.deleted:
            raise CrmRejectedError("CRM rejected (404): no such task", status=404)
        return task

    def _held(self, fields: TaskFields) -> TaskFields:
        """What the CRM keeps of a task: the fields it lacks (`Capabilities.task_fields`) read empty."""
        held = self.capabilities.task_fields
        if held is None:
            return fields
        empty = TaskFields()
        return dataclasses.replace(
            fields, **{n: getattr(empty, n) for n in TaskFields.__dataclass_fields__ if n not in held}
        )

    def _write_task(self, task: _Task, fields: TaskFields, owner: str) -> None:
        seq = self._next()
        if task.seq and owner != task.owner:
            self._task_removals.append((task.id, task.owner, seq))
        task.fields, task.owner, task.seq, task.updated_at = fields, owner, seq, _now()

    def _delete_task(self, task_id: str, missing_ok: bool = False) -> None:
        task = self._tasks.get(task_id)
        if task is None:
            if missing_ok:
                return
            raise CrmRejectedError("CRM rejected (404): no such task", status=404)
        if not task.deleted:
            task.deleted, task.seq = True, self._next()
            self._task_removals.append((task.id, task.owner, task.seq))

    def _task(self, task: _Task) -> CrmTask:
        return CrmTask(
            CrmRef(task.id, str(task.seq)), task.owner, task.fields, task.key, task.regarding,
            f"memory://tasks/{task.id}", task.updated_at,
        )  # fmt: skip

    def _check_links(self, people: Sequence[PersonRef]) -> None:
        for ref in people:
            person = self._people.get(ref.id)
            if person is None or person.deleted or person.kind == "company":
                raise CrmRejectedError(
                    f"CRM rejected (422): no person with id {ref.id!r} to link", status=422
                )

    def _check_journal(self, journal: Journal) -> None:
        limits = self.capabilities
        if not limits.multi_person_journal and len(journal.people) > 1:
            raise CrmRejectedError("CRM rejected (422): a journal links at most one person", status=422)
        if limits.journal_body_limit is not None and len(journal.body) > limits.journal_body_limit:
            raise CrmRejectedError("CRM rejected (422): the journal body is too long", status=422)
        if limits.subject_limit is not None and len(journal.subject) > limits.subject_limit:
            raise CrmRejectedError("CRM rejected (422): the subject is too long", status=422)
        self._check_links(journal.people)

    def _check_appointment(self, appointment: Appointment) -> Appointment:
        if appointment.end < appointment.start:
            raise CrmRejectedError("CRM rejected (422): 'end' is before 'start'", status=422)
        self._check_links(appointment.people)
        if not self.capabilities.appointment_times:
            start, end = (
                t.replace(hour=0, minute=0, second=0, microsecond=0)
                for t in (appointment.start, appointment.end)
            )
            return dataclasses.replace(appointment, start=start, end=end)
        return appointment

    @staticmethod
    def _check_emails(fields: ContactFields) -> None:
        if len(fields.emails) > MAX_EMAILS:
            raise CrmRejectedError(f"CRM rejected (422): at most {MAX_EMAILS} e-mail addresses", status=422)

    def _contact(self, person: _Person) -> CrmContact:
        return CrmContact(
            CrmRef(person.id, str(person.seq)), person.owner, person.fields, person.key, person.updated_at
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    if not cursor.isdigit():
        raise CrmRejectedError("CRM rejected (400): the cursor is not one this CRM issued", status=400)
    return int(cursor)


def _person_ref(person: _Person, wanted: str) -> PersonRef:
    f = person.fields
    email = next((e for e in f.emails if e.strip().lower() == wanted), wanted)
    name = f.display_name or " ".join(x for x in (f.given_name, f.surname) if x)
    return PersonRef(id=person.id, kind=person.kind, name=name, email=email)


def _change(stored: _Stored) -> CrmAppointmentChange:
    a = stored.value
    return CrmAppointmentChange(
        ref=CrmRef(stored.id, str(stored.seq)), owner=a.owner, key=a.key, subject=a.subject, start=a.start,
        end=a.end, is_all_day=a.is_all_day, location=a.location, body=a.body, cancelled=a.cancelled,
    )  # fmt: skip
