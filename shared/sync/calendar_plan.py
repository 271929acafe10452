"""Pure decisions for the calendar: which meetings become CRM appointments, under which key, and what
an appointment holds.

No I/O here. The Graph adapter turns events into `OutlookEvent` records; the stream hydrates skeletal
occurrences from their series master (`hydrate`), keys them, asks the CRM who the attendees are, and
`plan()` says what to do with each: `Capture` it, `Withdraw` its appointment (the organizer cancelled
it), or `Skip` it with a reason. Keys (docs/architecture.md, the sync contract):

- a single meeting: its `iCalUId` (the same in every calendar that holds the meeting);
- an occurrence or exception of a series: the master's `iCalUId` + "|" + the occurrence's original
  start in UTC (`2026-11-25T09:00:00Z`), so every calendar holding the series agrees on each key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time

from shared.model import (
    PUSH_TRANSACTION_PREFIX,
    Address,
    Appointment,
    EventChange,
    KeyRecord,
    Link,
    OutlookEvent,
    PersonRef,
    fingerprint,
)
from shared.sync import keyed_write
from shared.sync.body import body_text
from shared.sync.keyed_write import KeyedKind, collision_key, identity_of, merged_people

CAPTURED_KINDS = ("singleInstance", "occurrence", "exception")


@dataclass(frozen=True)
class Verdict:
    capture: bool
    reason: str


def utc_iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hydrate(occurrence: OutlookEvent, master: OutlookEvent | None) -> OutlookEvent | None:
    """A skeletal occurrence filled in from its series master (None when the master is unknown:
    free/busy-only data is never turned into an appointment with invented content)."""
    if not occurrence.skeletal:
        return occurrence
    if master is None:
        return None
    return replace(
        master,
        id=occurrence.id,
        type=occurrence.type,
        series_master_id=occurrence.series_master_id or master.id,
        start=occurrence.start,
        end=occurrence.end,
        start_date=occurrence.start_date if master.is_all_day else None,
        end_date=occurrence.end_date if master.is_all_day else None,
        original_start=occurrence.original_start or occurrence.start,
        change_key=occurrence.change_key or master.change_key,
        skeletal=False,
    )


def appointment_key(event: OutlookEvent, master: OutlookEvent | None) -> str:
    """The global key of a captured event ("" when it cannot be keyed: a series member without master)."""
    if event.type == "singleInstance":
        return event.ical_uid
    if master is None or not master.ical_uid:
        return ""
    original = event.original_start or event.start
    if event.is_all_day and event.start_date is not None and event.original_start is None:
        original = datetime.combine(event.start_date, time(), tzinfo=UTC)
    return f"{master.ical_uid}|{utc_iso(original)}"


def attendees_other_than(event: OutlookEvent, owner_address: str) -> list[Address]:
    """Organizer and attendees except the calendar's owner, each address once (resources excluded)."""
    seen = {owner_address.lower()}
    found: list[Address] = []
    people = [event.organizer] if event.organizer else []
    people += [a.address for a in event.attendees if a.type != "resource"]
    for address in people:
        if address.normalized and address.normalized not in seen:
            seen.add(address.normalized)
            found.append(address)
    return found


def prefilter(event: OutlookEvent, *, policy: str, category: str) -> Verdict:
    """Everything decidable without asking the CRM who the attendees are."""
    if event.transaction_id.startswith(PUSH_TRANSACTION_PREFIX):
        return Verdict(False, "created by the CRM push (no echo)")
    if event.type not in CAPTURED_KINDS:
        return Verdict(False, f"{event.type}: a series master is not an appointment, its occurrences are")
    if event.sensitivity in ("private", "confidential"):
        return Verdict(False, f"marked {event.sensitivity}: never captured")
    if event.is_draft:
        return Verdict(False, "draft: an unsent meeting is never captured")
    if event.is_cancelled:
        return Verdict(False, "cancelled by the organizer")
    if policy == "category" and category.lower() not in {c.lower() for c in event.categories}:
        return Verdict(False, f"policy category: the meeting does not carry the category {category!r}")
    return Verdict(True, "")


def people_on(
    event: OutlookEvent, owner_address: str, matches: Mapping[str, Sequence[PersonRef]]
) -> tuple[PersonRef, ...]:
    found: dict[str, PersonRef] = {}
    for address in attendees_other_than(event, owner_address):
        for person in matches.get(address.normalized, ()):
            found.setdefault(person.id, person)
    return tuple(found.values())


def select(policy: str, category: str, people: Sequence[PersonRef]) -> Verdict:
    if policy == "crm-attendee":
        if not people:
            return Verdict(False, "policy crm-attendee: no attendee is a CRM person")
        return Verdict(True, f"policy crm-attendee: {len(people)} CRM person(s) attend")
    if policy == "category":
        return Verdict(True, f"policy category: carries {category!r}")
    return Verdict(True, "policy all")


def build_appointment(
    event: OutlookEvent,
    key: str,
    series_key: str,
    *,
    owner: str,
    people: Sequence[PersonRef],
    body_limit: int,
    seen_by: Sequence[str],
    subject_limit: int | None = None,
) -> Appointment:
    start, end = event.start, event.end
    if event.is_all_day and event.start_date is not None and event.end_date is not None:
        start = datetime.combine(event.start_date, time(), tzinfo=UTC)
        end = datetime.combine(event.end_date, time(), tzinfo=UTC)
    return Appointment(
        key=key,
        subject=(event.subject.strip() or "(no subject)")[:subject_limit],
        start=start,
        end=end,
        is_all_day=event.is_all_day,
        start_date=event.start_date if event.is_all_day else None,
        end_date=event.end_date if event.is_all_day else None,
        location=event.location,
        organizer=event.organizer,
        attendees=event.attendees,
        online_meeting_url=event.online_meeting_url,
        body=body_text(event.body, "html" if event.body_type == "html" else "text", body_limit),
        owner=owner,
        seen_by=tuple(seen_by),
        people=tuple(people),
        series_key=series_key,
    )


def content_fingerprint(appointment: Appointment) -> str:
    """What an appointment says, without who holds it or whom it links (those merge across calendars)."""
    a = appointment
    return fingerprint(
        [a.subject, a.start, a.end, a.is_all_day, a.start_date, a.end_date, a.location, a.organizer,
         a.attendees, a.online_meeting_url, a.body, a.series_key]
    )  # fmt: skip


def merge(record: KeyRecord | None, appointment: Appointment, mailbox: str) -> tuple[Appointment, bool]:
    """Combine this calendar's appointment with what other calendars already wrote under the key.

    The first calendar that captured the meeting decides its owner; later calendars add themselves to
    `seen_by` and their matches to `people`. A meeting that was cancelled and is back (restored, or
    re-added) is live again. Returns the appointment to write and whether a write is needed.
    """
    mailbox = mailbox.lower()
    if record is None or not record.mailboxes:
        return replace(appointment, seen_by=(mailbox,)), True
    looked_up = {a.address.normalized for a in appointment.attendees if a.type != "resource"}
    looked_up |= {appointment.organizer.normalized} if appointment.organizer else set()
    looked_up.discard(mailbox)
    people = merged_people(record, appointment.people, looked_up)
    merged = replace(
        appointment,
        seen_by=tuple(dict.fromkeys([*record.mailboxes, mailbox])),
        people=people,
        owner=record.owner or appointment.owner,
    )
    unchanged = (
        mailbox in record.mailboxes
        and not record.cancelled
        and {p.id for p in record.people} == {p.id for p in people}
        and record.fingerprint == content_fingerprint(appointment)
    )
    return merged, not unchanged


def key_record_after(record: KeyRecord | None, appointment: Appointment, crm_ref: str) -> KeyRecord:
    """The SyncKeys row once `appointment` (already merged) was written to the CRM."""
    return KeyRecord(
        key=appointment.key,
        crm_ref=crm_ref,
        mailboxes=tuple(m.lower() for m in appointment.seen_by),
        people=appointment.people,
        fingerprint=content_fingerprint(appointment),
        identity=record.identity if record else "",
        owner=appointment.owner,
        organizer=appointment.organizer.normalized if appointment.organizer else "",
        cancelled=appointment.cancelled,
        etag=record.etag if record else "",
    )


def identity(organizer: Address | None) -> str:
    """Whose meeting it is: every calendar holding the meeting names the same organizer; an invitation
    that reuses another meeting's iCalUId from someone else is another meeting."""
    return identity_of(organizer.normalized if organizer else "")


def _rekey(appointment: Appointment, key: str) -> Appointment:
    series = collision_key(appointment.series_key, identity(appointment.organizer))
    return replace(appointment, key=key, series_key=series if appointment.series_key else "")


APPOINTMENTS: KeyedKind[Appointment] = KeyedKind(
    merge=merge,
    key_record_after=key_record_after,
    identity=lambda appointment: identity(appointment.organizer),
    rekey=_rekey,
    # rows from before identities were recorded name the organizer in clear
    legacy_identity=lambda row: identity_of(row.organizer),
)


def own_key(row: KeyRecord | None, key: str, organizer_identity: str) -> str:
    """The key a meeting is captured under: its own, unless another organizer's meeting took it first."""
    return keyed_write.own_key(APPOINTMENTS, row, key, organizer_identity)


@dataclass(frozen=True)
class Withdrawal:
    """What confirming that a meeting is gone from one calendar means for its appointment."""

    cancel: bool  # cancel (or delete) the appointment: the organizer dropped it, or nobody holds it
    remaining: tuple[str, ...]  # calendars that still hold it
    reason: str


def withdraw(record: KeyRecord | None, mailbox: str) -> Withdrawal:
    """A meeting confirmed gone (GET answered 404) from `mailbox`'s calendar.

    It is cancelled when the organizer's calendar lost it (the organizer deleted or cancelled it) or
    when no synced calendar holds it any more; an attendee removing it from their own calendar
    (declined, tidied up) only takes them off `seen_by`, since the meeting still happens for others.
    """
    mailbox = mailbox.lower()
    if record is None:
        return Withdrawal(True, (), "deleted in Outlook")
    remaining = tuple(m for m in record.mailboxes if m != mailbox)
    organizer = record.organizer.lower()
    if organizer == mailbox:
        return Withdrawal(True, remaining, "deleted or cancelled by the organizer")
    if not remaining:
        return Withdrawal(True, (), "deleted in Outlook")
    return Withdrawal(False, remaining, "removed from this calendar; other synced calendars still hold it")


def stale_keys(linked: Mapping[str, str], current: Iterable[str]) -> dict[str, str]:
    """Links (Graph id -> key) of a series whose key is not among the series' current keys."""
    keep = set(current)
    return {item_id: key for item_id, key in linked.items() if key not in keep}


def in_window(event: OutlookEvent, start: datetime, end: datetime) -> bool:
    return event.start < end and event.end > start


def latest_by_id(changes: Sequence[EventChange]) -> list[EventChange]:
    """Graph may repeat an item within a round; the last one wins (a removal beats an earlier add)."""
    last: dict[str, EventChange] = {}
    for change in changes:
        last.pop(change.id, None)
        last[change.id] = change
    return list(last.values())


# ---------------------------------------------------------------------------------------------
# A page's plan


@dataclass(frozen=True)
class Keyed:
    """An event ready to be planned: hydrated, with its key and its series master (if any)."""

    event: OutlookEvent
    key: str
    master: OutlookEvent | None = None


@dataclass(frozen=True)
class Capture:
    """Write the event's appointment. `previous`: its link from an earlier run, if any (a link under
    another key means the meeting was re-keyed: a rescheduled series)."""

    keyed: Keyed
    people: tuple[PersonRef, ...]
    reason: str
    previous: Link | None = None


@dataclass(frozen=True)
class Withdraw:
    """The organizer cancelled a captured meeting: its appointment is cancelled."""

    link: Link


@dataclass(frozen=True)
class Skip:
    event_id: str
    key: str
    reason: str


Action = Capture | Withdraw | Skip


@dataclass(frozen=True)
class Inputs:
    events: Sequence[Keyed]
    links: Mapping[str, Link]  # by Graph id
    matches: Mapping[str, Sequence[PersonRef]]  # CRM people by normalized address (`addresses`)
    owner_address: str
    policy: str
    category: str


def _verdict(keyed: Keyed, inputs: Inputs) -> Action | Verdict:
    event, link = keyed.event, inputs.links.get(keyed.event.id)
    if link is not None and link.event.from_crm:
        return Skip(event.id, keyed.key, "created by the CRM push (no echo)")
    if event.is_cancelled and link is not None and link.crm_key:
        return Withdraw(link)
    return prefilter(event, policy=inputs.policy, category=inputs.category)


def addresses(inputs: Inputs) -> list[str]:
    """The attendees to ask the CRM about: those of the events the prefilter lets by (`inputs.matches`
    is not read)."""
    wanted = {
        a.normalized
        for keyed in inputs.events
        if isinstance(verdict := _verdict(keyed, inputs), Verdict) and verdict.capture
        for a in attendees_other_than(keyed.event, inputs.owner_address)
    }
    return sorted(wanted)


def plan(inputs: Inputs) -> list[Action]:
    """What to do with each event, in order."""
    actions: list[Action] = []
    for keyed in inputs.events:
        verdict = _verdict(keyed, inputs)
        if not isinstance(verdict, Verdict):
            actions.append(verdict)
            continue
        people: tuple[PersonRef, ...] = ()
        if verdict.capture:
            people = people_on(keyed.event, inputs.owner_address, inputs.matches)
            verdict = select(inputs.policy, inputs.category, people)
        if not verdict.capture:
            actions.append(Skip(keyed.event.id, keyed.key, verdict.reason))
            continue
        actions.append(Capture(keyed, people, verdict.reason, inputs.links.get(keyed.event.id)))
    return actions
