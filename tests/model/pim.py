"""The model-based test of the engine's contacts and calendar streams (docs/architecture.md §9.5).

Two users sync contacts both ways (each with the owned folder "CRM Contacts"; ANN's CRM owner is
her address, DAN's is "crm-dan") and meetings (ANN with the CRM push on). Hypothesis drives both sides:

- contacts: a contact made in the CRM, in Outlook, or on both sides at once (they must be linked, not
  duplicated); edits on either side (`jobTitle` on both, so the conflict rule `crm-wins` decides;
  `mobilePhone` in Outlook only; `department` in the CRM only); deleted in Outlook (unlinked, kept in
  the CRM, not pushed back); deleted in the CRM; reassigned to the other user (it leaves one owned
  folder and arrives in the other);
- meetings: a single meeting or a daily series, alone or with the colleague as attendee (their calendar
  gets a copy with the same iCalUId); rescheduled, renamed, deleted by the organizer (the copy is marked
  cancelled), removed by the attendee from their copy, one occurrence deleted (Graph's delta says
  nothing) or edited into an exception; and appointments made, moved and cancelled in the CRM for ANN
  (the push writes them into her calendar);

while Graph throttles (429 with fractional, missing and long Retry-After), fails (503) and expires sync
state (410 mid-round and on the stored link), the CRM fails (5xx, timeouts, writes applied but answered
with an error, refusals) on each of the streams' operations, workers die at any awaited adapter call,
notifications arrive duplicated, late, reordered and forged, and two workers take the same job at once.

Checked after every step: no contact the CRM holds disappears unless the model deleted it, no address is
held by two CRM contacts or twice in one owned folder, no appointment is deleted or duplicated, no
cursor goes backwards. Checked at quiescence (faults cleared, leases, backoffs and the hourly series
check due, every queued job and every stream run):

- contacts: each person is in the CRM exactly once (with the right owner) unless deleted there, and in
  the owned folder of the user who owns it, once, unless deleted there or in the CRM; both sides hold
  the same fields; each field is the last one written, except that an Outlook edit made while the CRM's
  edit of the same field was pending loses to it (`crm-wins`); nothing was invented;
- calendar: one appointment per key (an iCalUId, or the series' iCalUId and the occurrence's original
  start); each meeting or occurrence an Outlook calendar holds now is live with its subject and times
  and is seen by exactly the calendars that hold it; each one held earlier and gone now is cancelled;
  no appointment for anything else (no echo of a pushed event); each CRM appointment of ANN's that is
  not cancelled is one event in her calendar with its subject and times, and a cancelled one has none;
- no open issue; every user's status is "ok".

Where a glitch can make the outcome legitimately differ, the model says so in one place: a contact
deleted in Outlook after a worker died between writing its twin and writing the link (or after a CRM
write applied but answered with an error) may come back once from the CRM (`maybe`); it is then
still one contact, the same on both sides.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from shared import notifications
from shared.errors import SyncError
from shared.model import ContactFields, Job, JobOutcome, SubscriptionRecord
from shared.state.memory import QueuedMessage
from shared.sync.calendar import CalendarStream
from shared.sync.contacts import ContactsStream
from shared.sync.engine import Engine
from shared.sync.push import PushStream
from shared.sync.runner import LEASE_SECONDS
from tests.integration.crash import SimulatedCrash
from tests.model.tripwire import Tripwire
from tests.model.world import (
    ANN,
    CRM_FAULTS,
    CRM_OPS,
    DAN,
    GRAPH_FAULTS,
    PERSONS,
    USERS,
    AppointmentView,
    World,
)

T = TypeVar("T")
STREAMS = ("contacts", "calendar")  # the streams with a Graph side
PUSHED = ("push",)  # CRM appointments pushed into the calendar: Ann only (CalendarPushFromCrm)
OWNER = {ANN: ANN, DAN: "crm-dan"}
MAX_DEQUEUE = 5
VISIBILITY_SECONDS = 30.0
TITLES = ("Buyer", "Head of Buying", "CFO", "Engineer")
PHONES = ("+1 555 0100", "+1 555 0101", "+44 7700 900123")
DEPARTMENTS = ("Sales", "Purchasing", "Finance")
FIELDS = ("job_title", "mobile_phone", "department")
TODAY = datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)
CRASH_METHODS = (
    "graph.read_page", "graph.create", "graph.update", "graph.delete", "graph.get", "graph.owned_folder",
    "graph.get_event", "graph.instances", "graph.create_event", "graph.update_event", "crm.upsert_contact",
    "crm.contact_changes", "crm.get_contact", "crm.find_people", "crm.upsert_appointment",
    "crm.cancel_appointment", "crm.appointment_changes", "state.put_links", "state.delete_link",
    "state.save_cursor", "state.put_key", "state.get_key", "state.record_issue", "state.resolve_issue",
    "state.record_decisions", "state.renew", "state.release", "state.acquire",
)  # fmt: skip
CRASH = st.one_of(
    st.none(),
    st.tuples(st.just("*"), st.integers(1, 24), st.booleans()),
    st.tuples(st.sampled_from(CRASH_METHODS), st.integers(1, 3), st.booleans()),
)
Crash = tuple[str, int, bool] | None


def tripwire(crash: Crash) -> Tripwire:
    if crash is None:
        return Tripwire()
    method, nth, after = crash
    return Tripwire(nth, after=after, method=method)


# -- contacts: what the model expects ---------------------------------------------------------------


@dataclass
class History:
    """One field's writes: the last one, and the last one the CRM side made (None: none yet)."""

    value: str
    side: str  # "crm" | "outlook"
    crm_value: str | None
    loose: set[str] = field(default_factory=set)  # values a glitch or a reassignment may leave
    seen: set[str] = field(default_factory=set)  # every value it held
    writes: list[tuple[str, str]] = field(default_factory=list)  # (side, value), from the first value on
    set_back_over: set[str] = field(default_factory=set)  # see `write`

    def __post_init__(self) -> None:
        self.seen.add(self.value)
        self.writes.append(("start", self.value))

    def write(self, side: str, value: str) -> None:
        """The CRM setting the field back to a value it held (A → B → A) leaves it as the sync last
        agreed, if A was agreed: the merge compares contents (docs/streams/contacts.md §6), so it sees no
        CRM change, and an Outlook user's write made since A was held stands instead."""
        self.set_back_over = set()
        if side == "crm" and value in self.seen:
            # (a value held only before this record began counts as held at its start)
            last = max((n for n, (_, held) in enumerate(self.writes) if held == value), default=0)
            self.set_back_over = {held for by, held in self.writes[last + 1 :] if by == "outlook"}
        self.loose |= {self.value} if self.loose else set()
        self.value, self.side = value, side
        self.seen.add(value)
        self.writes.append((side, value))
        if side == "crm":
            self.crm_value = value

    def allowed(self) -> set[str]:
        """Under `crm-wins`: the CRM's last write stands; an Outlook write stands unless the CRM
        wrote the same field meanwhile (a conflict, which the CRM wins)."""
        if self.loose:
            return (
                self.loose | {self.value} | ({self.crm_value} if self.crm_value is not None else set())
            ) | self.set_back_over
        if self.side == "crm":
            return {self.value} | self.set_back_over
        return {self.value} | ({self.crm_value} if self.crm_value is not None else set())


@dataclass
class Person:
    email: str
    given: str
    home: str  # the user whose CRM owner holds it
    fields: dict[str, History]
    crm: str = "yes"  # must the CRM hold it: yes | no | maybe
    outlook: dict[str, str] = field(default_factory=dict)  # per user: yes | no | maybe
    dropped: set[str] = field(default_factory=set)  # users who deleted it from their folder


def contact_fields(person: Person, values: dict[str, str]) -> ContactFields:
    name = f"{person.given} Model"
    return ContactFields(
        given_name=person.given, surname="Model", display_name=name, emails=(person.email,), **values
    )


# -- calendar: what the model expects ---------------------------------------------------------------


@dataclass
class Meeting:
    organizer: str
    attendee: str | None
    ical: str
    event_id: str  # the organizer's
    subject: str
    start: datetime
    end: datetime
    count: int  # 0: a single meeting
    cancelled_days: set[date] = field(default_factory=set)
    exceptions: dict[date, tuple[datetime, datetime]] = field(default_factory=dict)
    deleted: bool = False  # by the organizer
    attendee_removed: bool = False
    earlier: list[datetime] = field(default_factory=list)  # starts it was moved away from

    def holders(self) -> set[str]:
        if self.deleted:
            return set()
        return {self.organizer} | ({self.attendee} if self.attendee and not self.attendee_removed else set())

    def days(self) -> list[date]:
        return [self.start.date() + timedelta(days=n) for n in range(self.count)]

    def live(self) -> dict[str, tuple[str, datetime, datetime]]:
        """Key -> (subject, start, end) of what the calendars hold now."""
        if not self.holders():
            return {}
        if not self.count:
            return {self.ical: (self.subject, self.start, self.end)}
        found: dict[str, tuple[str, datetime, datetime]] = {}
        for day in self.days():
            if day in self.cancelled_days:
                continue
            original = datetime.combine(day, self.start.time(), tzinfo=UTC)
            start, end = self.exceptions.get(day, (original, original + (self.end - self.start)))
            found[f"{self.ical}|{original:%Y-%m-%dT%H:%M:%SZ}"] = (self.subject, start, end)
        return found


@dataclass
class CrmAppointment:
    crm_id: str
    subject: str
    start: datetime
    end: datetime
    cancelled: bool = False
    earlier: list[datetime] = field(default_factory=list)  # starts it was moved away from


def at(day: int, hour: int) -> datetime:
    return TODAY + timedelta(days=day, hours=hour)


class PimSyncModel(RuleBasedStateMachine):
    world_factory: Callable[[], World]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.world = self.world_factory()
        self.people: dict[str, Person] = {}
        self.meetings: list[Meeting] = []
        self.crm_appointments: list[CrmAppointment] = []
        self.ever_live: set[str] = set()
        self.seen_in_crm: set[str] = set()  # addresses the CRM has held
        self.seen_keys: set[str] = set()
        self.positions: dict[tuple[str, str], tuple[datetime, tuple[int, int]]] = {}
        self.dequeues: dict[str, int] = {}
        self.secrets = {(u, s): f"secret-{u}-{s}" for u in USERS for s in STREAMS}
        self.glitches = 0  # crashes and CRM writes applied but answered with an error, so far
        self.serial = 0

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(work)

    @initialize(
        meetings=st.lists(
            st.tuples(st.sampled_from(USERS), st.booleans(), st.integers(1, 10), st.integers(8, 16),
                      st.sampled_from([0, 2, 3])),
            max_size=3,
        ),
        contacts=st.lists(
            st.tuples(st.sampled_from(USERS), st.sampled_from(["crm", "outlook", "both"])), max_size=3
        ),
    )  # fmt: skip
    def setup(
        self,
        meetings: list[tuple[str, bool, int, int, int]] | None = None,
        contacts: list[tuple[str, str]] | None = None,
    ) -> None:
        """The world starts, and each side holds a few meetings and contacts already."""
        self._start()
        for organizer, with_colleague, day, hour, count in meetings or []:
            self.create_meeting(organizer, with_colleague, day, hour, count)
        for user, where in contacts or []:
            self.new_contact(user, where, TITLES[0], TITLES[1], PHONES[0], DEPARTMENTS[0])

    def _start(self) -> None:
        self.run(self.world.start())
        state = self.world.state
        common = {"Enabled": True, "Mail": False, "Contacts": True, "ContactsChangeThreshold": 1000,
                  "Calendar": True}  # fmt: skip
        self.run(state.put_config(ANN, {**common, "CalendarPushFromCrm": True}))
        self.run(state.put_config(DAN, {**common, "CrmOwner": OWNER[DAN]}))
        expires = self.world.clock.now + timedelta(days=3)
        for (user, stream), secret in self.secrets.items():
            record = SubscriptionRecord(
                user, f"users/{user}/{stream}", stream, f"sub-{user}-{stream}", secret, expires
            )
            self.run(state.put_subscription(record))
        for address in PERSONS:  # the world's CRM starts with these, owned by ANN
            blank = {f: History("", "crm", "") for f in FIELDS}
            person = Person(address, "", ANN, blank, outlook={ANN: "yes", DAN: "no"})
            self.people[address] = person

    def teardown(self) -> None:
        try:
            if hasattr(self, "world"):
                self.quiesce_and_check()
        finally:
            try:
                self.run(self.world.close())
            finally:
                self.loop.close()

    def _next(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.serial}"

    # -- contacts: the CRM and Outlook -----------------------------------------------------------------

    def _crm_id(self, email: str) -> str:
        found = [c.crm_id for c in self.world.crm_contacts() if email in (e.lower() for e in c.fields.emails)]
        return found[0] if found else ""

    def _outlook_id(self, user: str, email: str) -> str:
        found = [
            i for i, f in self.world.outlook_contacts(user).items() if email in (e.lower() for e in f.emails)
        ]
        return found[0] if found else ""

    def _settled(self, person: Person, crm_id: str) -> bool:
        """No Outlook contact of its user waits to be linked to it (a CRM delete or reassignment of a
        contact whose Outlook twin is not linked yet would leave two people with one address)."""
        contact_id = self._outlook_id(person.home, person.email)
        return not contact_id or self._linked(person.home, contact_id, crm_id)

    def _linked(self, user: str, contact_id: str, crm_id: str) -> bool:
        links = self.run(self.world.state.list_links(user, "contacts"))
        return any(link.item_id == contact_id and link.crm_key == crm_id for link in links)

    def _person(self, index: int, live: bool = True) -> Person | None:
        candidates = [p for k, p in sorted(self.people.items()) if not live or p.crm != "no"]
        return candidates[index % len(candidates)] if candidates else None

    @rule(
        user=st.sampled_from(USERS),
        where=st.sampled_from(["crm", "outlook", "both"]),
        title=st.sampled_from(TITLES),
        other=st.sampled_from(TITLES),
        phone=st.sampled_from(PHONES),
        department=st.sampled_from(DEPARTMENTS),
    )
    def new_contact(self, user: str, where: str, title: str, other: str, phone: str, department: str) -> None:
        name = self._next("P")
        email = f"{name.lower()}@fabrikam.example"
        outlook_values = {"job_title": title, "mobile_phone": phone, "department": ""}
        crm_values = {"job_title": other, "mobile_phone": "", "department": department}
        history = {f: History("", "outlook", None) for f in FIELDS}
        person = Person(email, name, user, history, outlook=dict.fromkeys(USERS, "no"))
        person.outlook[user] = "yes"
        if where in ("outlook", "both"):
            self.world.outlook_add_contact(user, contact_fields(person, outlook_values))
            for f in FIELDS:
                history[f] = History(outlook_values[f], "outlook", None)
        if where in ("crm", "both"):
            self.world.crm_add_contact(OWNER[user], contact_fields(person, crm_values))
            for f in FIELDS:  # on a first link, crm-wins keeps each field the CRM has
                if where == "crm" or crm_values[f]:
                    history[f] = History(crm_values[f], "crm", crm_values[f], seen=set(history[f].seen))
        self.people[email] = person

    @precondition(lambda self: bool(self.people))
    @rule(
        index=st.integers(0, 30),
        name=st.sampled_from(FIELDS[::2]),
        value=st.sampled_from(TITLES + DEPARTMENTS),
    )
    def crm_edits_contact(self, index: int, name: str, value: str) -> None:
        person = self._person(index)
        crm_id = self._crm_id(person.email) if person else ""
        if person is None or not crm_id:
            return
        held = next(c.fields for c in self.world.crm_contacts() if c.crm_id == crm_id)
        self.world.crm_edit_contact(crm_id, **{name: value})
        if getattr(held, name) != value:  # writing the value it holds changes nothing
            person.fields[name].write("crm", value)

    @precondition(lambda self: bool(self.people))
    @rule(index=st.integers(0, 30), name=st.sampled_from(FIELDS[:2]), value=st.sampled_from(TITLES + PHONES))
    def outlook_edits_contact(self, index: int, name: str, value: str) -> None:
        person = self._person(index)
        contact_id = self._outlook_id(person.home, person.email) if person else ""
        if person is None or not contact_id:
            return
        held = self.world.outlook_contacts(person.home)[contact_id]
        self.world.outlook_edit_contact(person.home, contact_id, **{name: value})
        if getattr(held, name) != value:  # a new changeKey, the same fields: not a change
            person.fields[name].write("outlook", value)

    @precondition(lambda self: bool(self.people))
    @rule(index=st.integers(0, 30), side=st.sampled_from(["crm", "outlook"]), n=st.integers(0, 3))
    def job_title_set_back(self, index: int, side: str, n: int) -> None:
        """A job title set back, on either side, to a value it held before: the content a write whose
        answer was lost left the state vouching for."""
        person = self._person(index)
        if person is None:
            return
        history = person.fields["job_title"]
        values = sorted(history.seen - {history.value} - {""})
        if not values:
            return
        if side == "crm":
            self.crm_edits_contact(index, "job_title", values[n % len(values)])
        else:
            self.outlook_edits_contact(index, "job_title", values[n % len(values)])

    @precondition(lambda self: bool(self.people))
    @rule(index=st.integers(0, 30))
    def outlook_deletes_contact(self, index: int) -> None:
        person = self._person(index)
        contact_id = self._outlook_id(person.home, person.email) if person else ""
        if person is None or not contact_id:
            return
        crm_id = self._crm_id(person.email)
        linked = bool(crm_id) and self._linked(person.home, contact_id, crm_id)
        self.world.outlook_delete_contact(person.home, contact_id)
        unsure = "maybe" if self.glitches else None
        if linked:  # unlinked, kept in the CRM, not pushed back
            person.dropped.add(person.home)
            person.outlook[person.home] = unsure or "no"
        elif crm_id:  # the CRM's own contact was never linked to this one: it comes to Outlook as it is
            person.outlook[person.home] = unsure or "yes"
            held = next(c.fields for c in self.world.crm_contacts() if c.crm_id == crm_id)
            for name, history in person.fields.items():
                loose = history.loose | (history.seen if self.glitches else set())
                person.fields[name] = History(getattr(held, name), "crm", getattr(held, name), loose)
        else:  # never synced: it never reaches the CRM
            person.outlook[person.home] = unsure or "no"
            person.crm = unsure or "no"

    @precondition(lambda self: bool(self.people))
    @rule(index=st.integers(0, 30))
    def crm_deletes_contact(self, index: int) -> None:
        person = self._person(index)
        crm_id = self._crm_id(person.email) if person else ""
        if person is None or not crm_id or not self._settled(person, crm_id):
            return
        self.world.crm_delete_contact(crm_id)
        person.crm = "no"
        person.outlook = dict.fromkeys(USERS, "no")

    @precondition(lambda self: bool(self.people))
    @rule(index=st.integers(0, 30))
    def crm_reassigns_contact(self, index: int) -> None:
        """The CRM unassigns it from its user and assigns it to the other one."""
        person = self._person(index)
        crm_id = self._crm_id(person.email) if person else ""
        if person is None or not crm_id or not self._settled(person, crm_id):
            return
        to = DAN if person.home == ANN else ANN
        self.world.crm_reassign(crm_id, OWNER[to])
        for history in person.fields.values():  # pending Outlook edits of the old folder may be lost
            history.loose |= history.seen
        person.outlook[person.home] = "no"
        person.home = to
        person.crm = "yes"
        person.outlook[to] = "maybe" if to in person.dropped else "yes"

    # -- calendar: Outlook and the CRM -------------------------------------------------------------------

    def _meeting(self, index: int) -> Meeting | None:
        live = [m for m in self.meetings if not m.deleted]
        return live[index % len(live)] if live else None

    def _note_calendar(self) -> None:
        for meeting in self.meetings:
            self.ever_live |= set(meeting.live())

    @rule(
        organizer=st.sampled_from(USERS),
        with_colleague=st.booleans(),
        day=st.integers(1, 10),
        hour=st.integers(8, 16),
        count=st.sampled_from([0, 0, 2, 3]),
    )
    def create_meeting(self, organizer: str, with_colleague: bool, day: int, hour: int, count: int) -> None:
        attendee = (DAN if organizer == ANN else ANN) if with_colleague else None
        subject = self._next("Meeting ")
        start = at(day, hour)
        attendees = tuple(a for a in (attendee, PERSONS[0]) if a)
        event_id, ical = self.world.create_meeting(
            organizer, subject, start, start + timedelta(hours=1), attendees, count
        )
        self.meetings.append(
            Meeting(organizer, attendee, ical, event_id, subject, start, start + timedelta(hours=1), count)
        )
        self._note_calendar()

    @precondition(lambda self: bool(self.meetings))
    @rule(index=st.integers(0, 30), day=st.integers(1, 10), hour=st.integers(8, 16))
    def reschedule_meeting(self, index: int, day: int, hour: int) -> None:
        """A single meeting moves to another day and time; a series to another time (same days)."""
        meeting = self._meeting(index)
        if meeting is None:
            return
        start = (
            at(day, hour)
            if not meeting.count
            else datetime.combine(meeting.start.date(), time(hour), tzinfo=UTC)
        )
        self.world.patch_meeting(
            meeting.organizer, meeting.event_id, start=start, end=start + timedelta(hours=1)
        )
        meeting.earlier.append(meeting.start)
        meeting.start, meeting.end = start, start + timedelta(hours=1)
        self._note_calendar()

    @precondition(lambda self: any(m.earlier for m in self.meetings))
    @rule(index=st.integers(0, 30))
    def meeting_moves_back(self, index: int) -> None:
        """Back where it was before its last move: the content a write whose answer was lost left the
        state vouching for (a single meeting keeps its key; a series' occurrences get their old keys)."""
        movable = [m for m in self.meetings if m.earlier and not m.deleted]
        if not movable:
            return
        meeting = movable[index % len(movable)]
        start = meeting.earlier[-1]
        self.world.patch_meeting(
            meeting.organizer, meeting.event_id, start=start, end=start + timedelta(hours=1)
        )
        meeting.earlier.append(meeting.start)
        meeting.start, meeting.end = start, start + timedelta(hours=1)
        self._note_calendar()

    @precondition(lambda self: bool(self.meetings))
    @rule(index=st.integers(0, 30))
    def rename_meeting(self, index: int) -> None:
        meeting = self._meeting(index)
        if meeting is None:
            return
        meeting.subject = self._next("Renamed ")
        self.world.patch_meeting(meeting.organizer, meeting.event_id, subject=meeting.subject)
        self._note_calendar()

    @precondition(lambda self: bool(self.meetings))
    @rule(index=st.integers(0, 30))
    def organizer_deletes_meeting(self, index: int) -> None:
        meeting = self._meeting(index)
        if meeting is None:
            return
        self.world.delete_meeting(meeting.organizer, meeting.event_id)
        meeting.deleted = True

    @precondition(lambda self: bool(self.meetings))
    @rule(index=st.integers(0, 30))
    def attendee_removes_their_copy(self, index: int) -> None:
        meeting = self._meeting(index)
        if meeting is None or meeting.attendee is None or meeting.attendee_removed:
            return
        copy = self.world.event_id_of(meeting.attendee, meeting.ical)
        if copy:
            self.world.delete_meeting(meeting.attendee, copy)
        meeting.attendee_removed = True

    def _occurrence(self, index: int, n: int) -> tuple[Meeting, date] | None:
        series = [m for m in self.meetings if m.count and not m.deleted]
        if not series:
            return None
        meeting = series[index % len(series)]
        day = meeting.days()[n % meeting.count]
        return None if day in meeting.cancelled_days else (meeting, day)

    @precondition(lambda self: any(m.count for m in self.meetings))
    @rule(index=st.integers(0, 30), n=st.integers(0, 2))
    def organizer_deletes_one_occurrence(self, index: int, n: int) -> None:
        found = self._occurrence(index, n)
        if found is None:
            return
        meeting, day = found
        self.world.delete_meeting(meeting.organizer, f"{meeting.event_id}_OID{day:%Y%m%d}")
        meeting.cancelled_days.add(day)
        meeting.exceptions.pop(day, None)

    @precondition(lambda self: any(m.count for m in self.meetings))
    @rule(index=st.integers(0, 30), n=st.integers(0, 2), hour=st.integers(8, 16))
    def organizer_moves_one_occurrence(self, index: int, n: int, hour: int) -> None:
        found = self._occurrence(index, n)
        if found is None:
            return
        meeting, day = found
        start = datetime.combine(day, time(hour, 30), tzinfo=UTC)
        occurrence = f"{meeting.event_id}_OID{day:%Y%m%d}"
        self.world.patch_meeting(meeting.organizer, occurrence, start=start, end=start + timedelta(hours=1))
        meeting.exceptions[day] = (start, start + timedelta(hours=1))
        self._note_calendar()

    @rule(day=st.integers(1, 10), hour=st.integers(8, 16))
    def crm_makes_appointment(self, day: int, hour: int) -> None:
        subject = self._next("Visit ")
        start = at(day, hour)
        crm_id = self.world.crm_create_appointment(OWNER[ANN], subject, start, start + timedelta(hours=1))
        self.crm_appointments.append(CrmAppointment(crm_id, subject, start, start + timedelta(hours=1)))

    @precondition(lambda self: bool(self.crm_appointments))
    @rule(index=st.integers(0, 30), day=st.integers(1, 10), hour=st.integers(8, 16), cancel=st.booleans())
    def crm_moves_or_cancels_appointment(self, index: int, day: int, hour: int, cancel: bool) -> None:
        appointment = self.crm_appointments[index % len(self.crm_appointments)]
        if appointment.cancelled:
            return
        if cancel:
            self.world.crm_update_appointment(appointment.crm_id, cancelled=True)
            appointment.cancelled = True
            return
        start = at(day, hour)
        self.world.crm_update_appointment(appointment.crm_id, start=start, end=start + timedelta(hours=1))
        appointment.earlier.append(appointment.start)
        appointment.start, appointment.end = start, start + timedelta(hours=1)

    @precondition(lambda self: any(a.earlier for a in self.crm_appointments))
    @rule(index=st.integers(0, 30))
    def crm_moves_appointment_back(self, index: int) -> None:
        """Back where it was before its last move in the CRM (see `meeting_moves_back`)."""
        movable = [a for a in self.crm_appointments if a.earlier and not a.cancelled]
        if not movable:
            return
        appointment = movable[index % len(movable)]
        start = appointment.earlier[-1]
        self.world.crm_update_appointment(appointment.crm_id, start=start, end=start + timedelta(hours=1))
        appointment.earlier.append(appointment.start)
        appointment.start, appointment.end = start, start + timedelta(hours=1)

    # -- faults -------------------------------------------------------------------------------------------

    @rule(
        stream=st.sampled_from(STREAMS),
        name=st.sampled_from([f[0] for f in GRAPH_FAULTS]),
        count=st.integers(1, 3),
    )
    def graph_fault(self, stream: str, name: str, count: int) -> None:
        self.world.stream_fault(stream, name, count)

    @rule(user=st.sampled_from(USERS))
    def expire_stored_links(self, user: str) -> None:
        self.world.expire_links(user)

    @rule(operation=st.sampled_from(CRM_OPS), name=st.sampled_from(CRM_FAULTS), count=st.integers(1, 4))
    def crm_fault(self, operation: str, name: str, count: int) -> None:
        self.world.crm_fault_on(operation, name, count)
        if name == "ambiguous":
            self.glitches += 1  # a write applied but answered with an error

    @rule(seconds=st.sampled_from([1.0, 30.0, 400.0, 4000.0]))
    def time_passes(self, seconds: float) -> None:
        self.world.clock.advance(seconds)

    # -- the service ------------------------------------------------------------------------------------

    def engine(self, wire: Tripwire | None = None) -> Engine:
        world, clock = self.world, self.world.clock
        state, crm, contacts, calendar = world.state, world.crm, world.contacts, world.calendar
        if wire is not None:
            state, crm = wire.wrap(state, "state"), wire.wrap(crm, "crm")
            contacts, calendar = wire.wrap(contacts, "graph"), wire.wrap(calendar, "graph")
        streams = {
            "contacts": ContactsStream(state, crm, contacts),
            "calendar": CalendarStream(state, crm, calendar, clock=clock),
            "push": PushStream(state, crm, calendar),
        }
        return Engine(state, world.queue, streams, clock=clock)

    async def _job(self, job: Job, wire: Tripwire | None) -> JobOutcome | None:
        try:
            return await self.engine(wire).run_job(job)
        except SimulatedCrash:
            self.glitches += 1
            await self._cut_short(job)
            return None
        except SyncError:
            await self._cut_short(job)
            raise

    async def _cut_short(self, job: Job) -> None:
        """A contacts run that died or failed may have written a contact's twin without its link. The
        next run links the two again as on a first sync (our key matches them), with no base: a field
        edited in Outlook meanwhile then meets the CRM's copy of the old value as a conflict, which the
        CRM wins. So for every contact of the user not linked yet, any value a field held may end."""
        if job.stream != "contacts":
            return
        linked = {link.item_id for link in await self.world.state.list_links(job.user, "contacts")}
        for person in self.people.values():
            if person.home != job.user:
                continue
            contact_id = self._outlook_id(job.user, person.email)
            if contact_id and contact_id not in linked:
                for history in person.fields.values():
                    history.loose |= history.seen

    @rule(user=st.sampled_from(USERS), stream=st.sampled_from(STREAMS), duplicates=st.integers(1, 3),
          forged=st.integers(0, 2))  # fmt: skip
    def notify(self, user: str, stream: str, duplicates: int, forged: int) -> None:
        entry = {"subscriptionId": f"sub-{user}-{stream}", "clientState": self.secrets[(user, stream)]}
        fake = {"subscriptionId": f"sub-{user}-{stream}", "clientState": "guessed"}
        unknown = {"subscriptionId": "sub-nobody", "clientState": "x"}
        body = {"value": [entry] * duplicates + [fake, unknown][:forged]}
        before = len(self.world.queue)
        state = self.world.state
        result = self.run(
            notifications.handle_changes(json.dumps(body).encode(), state, state, self.world.queue)
        )
        assert result.ignored == forged and result.accepted == duplicates
        assert len(self.world.queue) - before <= 1

    @rule()
    def sweep(self) -> None:
        self.run(self.engine().sweep())

    @precondition(lambda self: len(self.world.queue) > 0)
    @rule(index=st.integers(0, 20), crash=CRASH)
    def worker_takes_a_queued_job(self, index: int, crash: Crash) -> None:
        queue = self.world.queue
        now = self.world.clock.now
        visible = [m for m in queue.messages if m.visible_at <= now]
        if not visible:
            return
        message = visible[index % len(visible)]
        queue.messages.remove(message)
        count = self.dequeues.get(message.text, 0) + 1
        self.dequeues[message.text] = count
        wire = tripwire(crash)
        try:
            failed = self.run(self._job(Job.from_json(message.text), wire)) is None
        except SyncError:
            failed = True
        if failed:
            self._after_crash(wire)
            if count < MAX_DEQUEUE:
                queue.messages.append(
                    QueuedMessage(message.text, now + timedelta(seconds=VISIBILITY_SECONDS))
                )
        else:
            self.dequeues.pop(message.text, None)

    @rule(user=st.sampled_from(USERS), stream=st.sampled_from(STREAMS + PUSHED),
          fresh=st.sampled_from([False, False, False, True]), crash=CRASH)  # fmt: skip
    def worker_runs(self, user: str, stream: str, fresh: bool, crash: Crash) -> None:
        wire = tripwire(crash)
        try:
            self.run(self._job(Job(user, stream, "manual", fresh_round=fresh), wire))
        except SyncError:
            pass
        self._after_crash(wire)

    @rule(user=st.sampled_from(USERS), stream=st.sampled_from(STREAMS + PUSHED))
    def two_workers_one_job(self, user: str, stream: str) -> None:
        job = Job(user, stream, "notification")

        async def both() -> list[Any]:
            return await asyncio.gather(self._job(job, None), self._job(job, None), return_exceptions=True)

        for result in self.run(both()):
            if isinstance(result, BaseException) and not isinstance(result, SyncError):
                raise result

    def _after_crash(self, wire: Tripwire) -> None:
        if not wire.fired:
            return
        if currently_in_test_context():
            event(f"crash {wire.fired.split(' (')[0]}")
        self.world.clock.advance(LEASE_SECONDS + 1)

    # -- invariants ---------------------------------------------------------------------------------------

    @invariant()
    def contacts_are_never_lost_or_duplicated(self) -> None:
        if not hasattr(self, "world"):
            return
        held: dict[tuple[str, str], int] = {}
        for contact in self.world.crm_contacts():
            for email in {e.lower() for e in contact.fields.emails}:
                held[(contact.owner, email)] = held.get((contact.owner, email), 0) + 1
        twice = sorted(e for e, n in held.items() if n > 1)
        assert not twice, f"one owner's CRM contacts with the same address: {twice}"
        owned = {e for _, e in held}
        lost = sorted(
            e
            for e in self.seen_in_crm
            if e not in owned and self.people.get(e) and self.people[e].crm != "no"
        )
        assert not lost, f"CRM contacts disappeared: {lost}"
        self.seen_in_crm |= owned
        for user in USERS:
            folder: dict[str, int] = {}
            for fields in self.world.outlook_contacts(user).values():
                for email in {e.lower() for e in fields.emails}:
                    folder[email] = folder.get(email, 0) + 1
            twice = sorted(e for e, n in folder.items() if n > 1)
            assert not twice, f"{user}: the owned folder holds an address twice: {twice}"

    @invariant()
    def appointments_are_never_deleted_or_duplicated(self) -> None:
        if not hasattr(self, "world"):
            return
        keys: dict[str, int] = {}
        for appointment in self.world.appointments():
            if appointment.key:
                keys[appointment.key] = keys.get(appointment.key, 0) + 1
        twice = sorted(k for k, n in keys.items() if n > 1)
        assert not twice, f"two appointments for one key: {twice}"
        gone = sorted(self.seen_keys - set(keys))
        assert not gone, f"appointments disappeared: {gone}"
        self.seen_keys |= set(keys)

    @invariant()
    def cursors_never_go_backwards(self) -> None:
        if not hasattr(self, "world"):
            return
        for user in USERS:
            for stream, cursor in self.run(self.world.state.list_cursors(user)).items():
                if not cursor.link:
                    continue
                position = self.world.link_position(cursor.link)
                if position is None:
                    continue
                started = cursor.round_started or datetime.min.replace(tzinfo=UTC)
                now = (started, position)
                before = self.positions.get((user, stream))
                if before is not None:
                    assert now >= before, f"{user} {stream}: cursor went back from {before} to {now}"
                self.positions[(user, stream)] = now

    # -- quiescence ---------------------------------------------------------------------------------------

    def quiesce_and_check(self) -> None:
        world = self.world
        world.clear_faults()
        world.clock.advance(timedelta(hours=8).total_seconds())  # leases, backoffs, the hourly series check
        for _ in range(40):
            visible = [m for m in world.queue.messages if m.visible_at <= world.clock.now]
            if not visible:
                break
            world.queue.messages.remove(visible[0])
            self.run(self._job(Job.from_json(visible[0].text), None))
        for _ in range(2):  # a second pass: what one stream wrote (a push) the other reads back
            for user in USERS:
                for stream in STREAMS + (PUSHED if user == ANN else ()):
                    outcome = self.run(self._job(Job(user, stream, "sweep"), None))
                    assert outcome is not None and outcome.status == "done", (user, stream, outcome)
        self.contacts_are_never_lost_or_duplicated()
        self.appointments_are_never_deleted_or_duplicated()
        self.cursors_never_go_backwards()
        self._check_contacts()
        self._check_calendar()
        if currently_in_test_context():
            live = sum(len(m.live()) for m in self.meetings)
            linked = sum(len(self.run(world.state.list_links(u, "contacts"))) for u in USERS)
            event(f"quiescence: {min(live, 6)}+ live meeting keys, {min(linked, 6)}+ linked contacts")
            event(
                f"quiescence: {min(len(self.seen_keys), 6)}+ appointments, {min(self.glitches, 3)}+ glitches"
            )
        for user in USERS:
            issues = self.run(world.state.list_issues(user))
            assert issues == [], f"open issues after quiescence: {[(i.item_key, i.reason) for i in issues]}"
            row = self.run(world.state.get_user(user))
            assert row is not None and row.columns.get("State") == "ok", row and row.columns

    def _check_contacts(self) -> None:
        crm = {e.lower(): c for c in self.world.crm_contacts() for e in c.fields.emails}
        folders = {
            user: {e.lower(): f for f in self.world.outlook_contacts(user).values() for e in f.emails}
            for user in USERS
        }
        assert set(crm) <= set(self.people), (
            f"CRM contacts nobody made: {sorted(set(crm) - set(self.people))}"
        )
        for user, folder in folders.items():
            assert set(folder) <= set(self.people), (
                f"{user}: contacts nobody made: {sorted(set(folder) - set(self.people))}"
            )
        for email, person in self.people.items():
            in_crm = crm.get(email)
            if person.crm == "yes":
                assert in_crm is not None, f"lost: {email} is not in the CRM"
                assert in_crm.owner == OWNER[person.home], (email, in_crm.owner, person.home)
            if person.crm == "no":
                assert in_crm is None, f"{email} was deleted in the CRM and is back"
            for user in USERS:
                in_outlook = folders[user].get(email)
                expected = person.outlook.get(user, "no")
                if expected == "yes":
                    assert in_outlook is not None, f"lost: {email} is not in {user}'s owned folder"
                if expected == "no":
                    assert in_outlook is None, f"{email} should not be in {user}'s owned folder"
                if in_outlook is None:
                    continue
                assert in_crm is not None and in_crm.owner == OWNER[user], (
                    f"{email} in {user}'s folder, not in the CRM"
                )
                for name in FIELDS:
                    mine, theirs = getattr(in_outlook, name), getattr(in_crm.fields, name)
                    assert mine == theirs, f"{email}: {name} is {mine!r} in Outlook and {theirs!r} in the CRM"
                    allowed = person.fields[name].allowed()
                    assert mine in allowed, f"{email}: {name} is {mine!r}, expected one of {sorted(allowed)}"
                assert (in_outlook.given_name, in_outlook.emails) == (person.given, (email,)), in_outlook

    def _check_calendar(self) -> None:
        appointments = self.world.appointments()
        keyed: dict[str, AppointmentView] = {a.key: a for a in appointments if a.key}
        live: dict[str, tuple[tuple[str, datetime, datetime], set[str]]] = {}
        for meeting in self.meetings:
            for key, value in meeting.live().items():
                live[key] = (value, meeting.holders())
        invented = sorted(set(keyed) - self.ever_live)
        assert not invented, f"appointments for no meeting (an echo?): {[keyed[k].subject for k in invented]}"
        for key in self.ever_live:
            found = keyed.get(key)
            if key in live:
                (subject, start, end), holders = live[key]
                assert found is not None, f"lost: {subject} at {start} has no appointment"
                assert not found.cancelled, (
                    f"{subject} at {start} is live in Outlook and cancelled in the CRM"
                )
                assert (found.subject, found.start, found.end) == (subject, start, end), (
                    found,
                    subject,
                    start,
                    end,
                )
                assert found.seen_by == holders, (subject, found.seen_by, holders)
            elif found is not None:
                assert found.cancelled, (
                    f"stale: {found.subject} at {found.start} is gone from Outlook, live in the CRM"
                )
        wanted = sorted((a.subject, a.start, a.end) for a in self.crm_appointments if not a.cancelled)
        assert self.world.pushed_events(ANN) == wanted, (self.world.pushed_events(ANN), wanted)
        assert self.world.pushed_events(DAN) == []


def with_world(factory: Callable[[], World]) -> type[PimSyncModel]:
    return type("PimSync", (PimSyncModel,), {"world_factory": staticmethod(factory)})


__all__ = ["PimSyncModel", "with_world"]
