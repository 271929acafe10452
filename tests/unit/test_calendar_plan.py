"""The calendar's pure decisions: keys, hydration, selection, building, merging and withdrawing."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from shared.model import Address, Appointment, Attendee, EventRemoved, KeyRecord, OutlookEvent, PersonRef
from shared.sync import calendar_plan as plan

ANN = "ann@contoso.com"
BOB = Address("bob@fabrikam.example", "Bob")
START = datetime(2026, 12, 1, 9, tzinfo=UTC)
END = datetime(2026, 12, 1, 10, tzinfo=UTC)

SINGLE = OutlookEvent(
    id="e1", type="singleInstance", start=START, end=END, ical_uid="UID-1", subject="Quote",
    body="Agenda", organizer=Address(ANN), attendees=(Attendee(BOB, "required", "accepted"),),
    location="Room 4", online_meeting_url="https://teams.example/x", categories=("CRM",),
)  # fmt: skip
MASTER = replace(SINGLE, id="m1", type="seriesMaster", ical_uid="UID-M", subject="Weekly")
OCCURRENCE = OutlookEvent(
    id="m1_OID20261208", type="occurrence", series_master_id="m1", skeletal=True,
    start=datetime(2026, 12, 8, 9, tzinfo=UTC), end=datetime(2026, 12, 8, 10, tzinfo=UTC),
)  # fmt: skip
EXCEPTION = replace(
    MASTER, id="m1_OID20261215", type="exception", series_master_id="m1", subject="Weekly (moved)",
    ical_uid="UID-X", start=datetime(2026, 12, 15, 14, tzinfo=UTC),
    end=datetime(2026, 12, 15, 15, tzinfo=UTC), original_start=datetime(2026, 12, 15, 9, tzinfo=UTC),
)  # fmt: skip


@pytest.mark.parametrize(
    ("event", "master", "key"),
    [
        (SINGLE, None, "UID-1"),
        (plan.hydrate(OCCURRENCE, MASTER), MASTER, "UID-M|2026-12-08T09:00:00Z"),
        (EXCEPTION, MASTER, "UID-M|2026-12-15T09:00:00Z"),  # the original start, not the moved one
        (EXCEPTION, None, ""),  # no master: cannot be keyed
    ],
    ids=["single", "occurrence", "exception", "no-master"],
)
def test_keys(event: OutlookEvent, master: OutlookEvent | None, key: str) -> None:
    assert plan.appointment_key(event, master) == key


def test_a_skeletal_occurrence_is_hydrated_from_its_master_and_keeps_its_own_times() -> None:
    full = plan.hydrate(OCCURRENCE, MASTER)
    assert full is not None
    assert (full.id, full.type, full.subject, full.attendees) == (
        OCCURRENCE.id,
        "occurrence",
        "Weekly",
        MASTER.attendees,
    )
    assert (full.start, full.end, full.original_start) == (OCCURRENCE.start, OCCURRENCE.end, OCCURRENCE.start)
    assert plan.hydrate(OCCURRENCE, None) is None  # free/busy alone is never turned into an appointment
    assert plan.hydrate(EXCEPTION, None) is EXCEPTION  # exceptions carry their own content


@pytest.mark.parametrize(
    ("change", "policy", "capture", "reason"),
    [
        ({}, "all", True, ""),
        ({"type": "seriesMaster"}, "all", False, "seriesMaster: a series master is not an appointment"),
        ({"sensitivity": "private"}, "all", False, "marked private: never captured"),
        ({"sensitivity": "confidential"}, "all", False, "marked confidential: never captured"),
        ({"sensitivity": "personal"}, "all", True, ""),
        ({"is_draft": True}, "all", False, "draft"),
        ({"is_cancelled": True}, "all", False, "cancelled by the organizer"),
        ({"categories": ("crm",)}, "category", True, ""),
        ({"categories": ()}, "category", False, "policy category: the meeting does not carry"),
        # an event the push created, even one without its link row (the worker died before writing it)
        ({"transaction_id": "crmsync-push-a1"}, "all", False, "created by the CRM push (no echo)"),
        ({"transaction_id": "outlook-web-7"}, "all", True, ""),  # another app's id is no reason to skip
    ],
)
def test_prefilter(change: dict[str, object], policy: str, capture: bool, reason: str) -> None:
    verdict = plan.prefilter(replace(SINGLE, **change), policy=policy, category="CRM")  # type: ignore[arg-type]
    assert verdict.capture is capture
    assert verdict.reason.startswith(reason)


@pytest.mark.parametrize(
    ("policy", "people", "capture"),
    [("all", 0, True), ("category", 0, True), ("crm-attendee", 0, False), ("crm-attendee", 1, True)],
)
def test_select(policy: str, people: int, capture: bool) -> None:
    found = [PersonRef("p1", email=BOB.address)][:people]
    assert plan.select(policy, "CRM", found).capture is capture


def test_people_are_the_crm_people_among_organizer_and_attendees_but_the_owner() -> None:
    room = Attendee(Address("room@contoso.com"), "resource")
    event = replace(SINGLE, organizer=Address("carl@fabrikam.example"),
                    attendees=(Attendee(Address(ANN)), Attendee(BOB), room))  # fmt: skip
    matches = {"bob@fabrikam.example": [PersonRef("p1")], "carl@fabrikam.example": [PersonRef("p2")],
               ANN: [PersonRef("p-ann")], "room@contoso.com": [PersonRef("p-room")]}  # fmt: skip
    assert [p.id for p in plan.people_on(event, ANN, matches)] == ["p2", "p1"]


def test_an_all_day_event_keeps_its_dates() -> None:
    event = replace(SINGLE, is_all_day=True, start_date=date(2026, 12, 24), end_date=date(2026, 12, 26),
                    start=datetime(2026, 12, 24, 8, tzinfo=UTC),
                    end=datetime(2026, 12, 26, 8, tzinfo=UTC))  # fmt: skip
    appointment = plan.build_appointment(event, "K", "", owner=ANN, people=(), body_limit=100, seen_by=(ANN,))
    assert (appointment.start_date, appointment.end_date) == (date(2026, 12, 24), date(2026, 12, 26))
    assert appointment.start == datetime(2026, 12, 24, tzinfo=UTC) and appointment.is_all_day


def test_an_html_body_becomes_text() -> None:
    event = replace(SINGLE, body="<p>Bring the <b>list</b></p>", body_type="html")
    appointment = plan.build_appointment(event, "K", "", owner=ANN, people=(), body_limit=100, seen_by=(ANN,))
    assert appointment.body == "Bring the list"


def _appointment(**change: object) -> Appointment:
    base = plan.build_appointment(SINGLE, "UID-1", "", owner=ANN, people=(PersonRef("p1"),), body_limit=100,
                                  seen_by=(ANN,))  # fmt: skip
    return replace(base, **change)  # type: ignore[arg-type]


def test_merge_across_calendars() -> None:
    first, needed = plan.merge(None, _appointment(), ANN)
    assert needed and first.seen_by == (ANN,)
    record = plan.key_record_after(None, first, "a-1")
    assert plan.merge(record, _appointment(), ANN) == (first, False)  # nothing new: no write
    ben, needed = plan.merge(
        record, _appointment(owner="ben@contoso.com", people=(PersonRef("p2"),)), "ben@contoso.com"
    )
    assert needed
    assert (ben.seen_by, ben.owner, [p.id for p in ben.people]) == (
        (ANN, "ben@contoso.com"),
        ANN,
        ["p1", "p2"],
    )
    assert plan.merge(record, _appointment(subject="Changed"), ANN)[1]  # an edit is written
    cancelled = replace(record, cancelled=True)
    assert plan.merge(cancelled, _appointment(), ANN)[1]  # a restored meeting is live again


@pytest.mark.parametrize(
    ("mailboxes", "organizer", "gone_from", "cancel", "remaining"),
    [
        ((ANN,), ANN, ANN, True, ()),
        ((ANN, "ben@contoso.com"), ANN, ANN, True, ("ben@contoso.com",)),  # the organizer deleted it
        ((ANN, "ben@contoso.com"), ANN, "ben@contoso.com", False, (ANN,)),  # an attendee removed their copy
        (("ben@contoso.com",), "carl@fabrikam.example", "ben@contoso.com", True, ()),  # nobody holds it
    ],
)
def test_withdraw(
    mailboxes: tuple[str, ...], organizer: str, gone_from: str, cancel: bool, remaining: tuple[str, ...]
) -> None:
    record = KeyRecord(key="K", mailboxes=mailboxes, organizer=organizer)
    outcome = plan.withdraw(record, gone_from)
    assert (outcome.cancel, outcome.remaining) == (cancel, remaining)


def test_stale_keys_of_a_rescheduled_series() -> None:
    linked = {"o1": "UID-M|2026-12-08T09:00:00Z", "o2": "UID-M|2026-12-15T09:00:00Z"}
    current = {"UID-M|2026-12-08T14:00:00Z", "UID-M|2026-12-15T09:00:00Z"}
    assert plan.stale_keys(linked, current) == {"o1": "UID-M|2026-12-08T09:00:00Z"}


def test_the_last_report_of_an_item_wins() -> None:
    changes = [SINGLE, EventRemoved("e1"), replace(SINGLE, id="e2")]
    assert [type(c).__name__ for c in plan.latest_by_id(changes)] == ["EventRemoved", "OutlookEvent"]


def test_merge_drops_a_linked_person_the_crm_no_longer_matches() -> None:
    """Found by the contacts/calendar model: a CRM person deleted after the appointment linked them made
    every later write of the appointment (another calendar's copy, an edit) refused, forever."""
    bob = PersonRef("p1", email=BOB.address)
    first, _ = plan.merge(None, _appointment(people=(bob,)), ANN)
    record = plan.key_record_after(None, first, "a-1")
    kept, needed = plan.merge(record, _appointment(people=(bob,)), "ben@contoso.com")
    assert needed and [p.id for p in kept.people] == ["p1"]
    gone, needed = plan.merge(record, _appointment(people=()), "ben@contoso.com")  # Bob's address: no match
    assert needed and gone.people == ()
    other = replace(record, people=(PersonRef("p1", email="x@y.example"),))
    elsewhere, _ = plan.merge(other, _appointment(people=()), "ben@contoso.com")
    assert [p.id for p in elsewhere.people] == [
        "p1"
    ]  # linked by another calendar through an address not seen here
