"""The `CalendarSource` contract (shared/ports/graph.py): calendarView delta, events by id, a series'
instances and the push's writes, as the calendar stream relies on them.

Runs against the real adapter (`GraphCalendar`, msgraph-sdk → the Graph emulator over HTTP) and the
in-memory fake the model-based test uses (`tests/model/calendarbook.py`). The fake may be used only
because it passes this suite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import Any, Protocol

import pytest

from emulators.graph.launcher import GraphEmulator
from shared.errors import DeltaExpired, GraphThrottled
from shared.graph.calendar import GraphCalendar
from shared.model import (
    PUSH_TRANSACTION_PREFIX,
    CrmAppointmentChange,
    CrmRef,
    EventChange,
    EventRemoved,
    OutlookEvent,
    Page,
)
from shared.ports.graph import CalendarSource
from shared.sync.calendar_plan import appointment_key, hydrate
from tests.contract.graph_harness import EmulatedGraph, harness_of, quick_sleep
from tests.model.calendarbook import InMemoryCalendar

ANN = "ann@contoso.com"
DAN = "dan@contoso.com"
BOB = "bob@fabrikam.example"
PAGE = 4
Names = tuple[str, ...]
TODAY = datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)
WINDOW = (TODAY - timedelta(days=7), TODAY + timedelta(days=30))


def at(days: int, hour: int) -> datetime:
    return TODAY + timedelta(days=days, hours=hour)


class CalendarHarness(Protocol):
    source: CalendarSource

    def add_user(self, upn: str) -> None: ...
    def create(self, upn: str, subject: str, start: datetime, end: datetime, *, attendees: Names = (),
               count: int = 0) -> str: ...  # fmt: skip
    def patch(self, upn: str, event_id: str, *, subject: str | None = None, start: datetime | None = None,
              end: datetime | None = None) -> None: ...  # fmt: skip
    def delete(self, upn: str, event_id: str) -> None: ...
    def expire(self, upn: str) -> None: ...
    def fault(self, status: int, *, retry_after: str | None = None, count: int = 1) -> None: ...


class MemoryCalendar:
    def __init__(self) -> None:
        self.fake = InMemoryCalendar(page_size=PAGE, sleep=quick_sleep)
        self.source: CalendarSource = self.fake

    def add_user(self, upn: str) -> None:
        self.fake.add_user(upn)

    def create(self, upn: str, subject: str, start: datetime, end: datetime, *, attendees: Names = (),
               count: int = 0) -> str:  # fmt: skip
        return self.fake.create(upn, subject=subject, start=start, end=end, attendees=attendees, count=count)[
            0
        ]

    def patch(self, upn: str, event_id: str, *, subject: str | None = None, start: datetime | None = None,
              end: datetime | None = None) -> None:  # fmt: skip
        self.fake.patch(upn, event_id, subject=subject, start=start, end=end)

    def delete(self, upn: str, event_id: str) -> None:
        self.fake.delete(upn, event_id)

    def expire(self, upn: str) -> None:
        self.fake.expire_delta_tokens(upn)

    def fault(self, status: int, *, retry_after: str | None = None, count: int = 1) -> None:
        self.fake.fault(status, count=count, operation="read_page", retry_after=retry_after)


def graph_time(value: datetime) -> dict[str, str]:
    return {"dateTime": value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}


class EmulatedCalendar(EmulatedGraph):
    def __init__(self, graph: GraphEmulator) -> None:
        super().__init__(graph, "/calendarView/delta")
        self.source = GraphCalendar(self.client, self.caller, page_size=PAGE)

    def create(self, upn: str, subject: str, start: datetime, end: datetime, *, attendees: Names = (),
               count: int = 0) -> str:  # fmt: skip
        body: dict[str, Any] = {
            "subject": subject, "start": graph_time(start), "end": graph_time(end),
            "attendees": [{"emailAddress": {"address": a, "name": a}, "type": "required"} for a in attendees],
        }  # fmt: skip
        if count:
            body["recurrence"] = {"pattern": {"type": "daily", "interval": 1},
                                  "range": {"type": "numbered", "numberOfOccurrences": count}}  # fmt: skip
        return str(self._outlook("POST", f"/users/{upn}/events", body)["id"])

    def patch(self, upn: str, event_id: str, *, subject: str | None = None, start: datetime | None = None,
              end: datetime | None = None) -> None:  # fmt: skip
        body: dict[str, Any] = {}
        if subject is not None:
            body["subject"] = subject
        if start is not None:
            body["start"] = graph_time(start)
        if end is not None:
            body["end"] = graph_time(end)
        self._outlook("PATCH", f"/users/{upn}/events/{event_id}", body)

    def delete(self, upn: str, event_id: str) -> None:
        self._outlook("DELETE", f"/users/{upn}/events/{event_id}")

    def expire(self, upn: str) -> None:
        self.expire_tokens(upn)


@pytest.fixture(params=["memory", "emulator"])
async def cal(request: pytest.FixtureRequest) -> AsyncIterator[CalendarHarness]:
    async with harness_of(request.param, request, MemoryCalendar, EmulatedCalendar) as harness:
        harness.add_user(ANN)
        harness.add_user(DAN)
        yield harness


async def round_of(
    source: CalendarSource, link: str = "", upn: str = ANN, window: tuple[datetime, datetime] = WINDOW
) -> tuple[list[Page], str]:
    pages: list[Page] = []
    while True:
        page = await source.read_page(upn, link, None if link else window)
        pages.append(page)
        assert bool(page.next_link) != bool(page.delta_link), "a page carries exactly one link"
        if page.delta_link:
            return pages, page.delta_link
        link = page.next_link
        assert len(pages) < 50


def by_id(pages: list[Page]) -> dict[str, EventChange]:
    found: dict[str, EventChange] = {}
    for change in (c for p in pages for c in p.changes):
        found.pop(change.id, None)
        found[change.id] = change
    return found


def event(change: EventChange | None) -> OutlookEvent:
    assert isinstance(change, OutlookEvent), change
    return change


def occurrences(found: dict[str, EventChange], master: str) -> dict[str, OutlookEvent]:
    return {i: c for i, c in found.items() if isinstance(c, OutlookEvent) and c.series_master_id == master}


async def test_a_first_round_gives_singles_and_series_within_the_window(cal: CalendarHarness) -> None:
    singles = [
        cal.create(ANN, f"Meeting {n}", at(n + 1, 9), at(n + 1, 10), attendees=(BOB,)) for n in range(5)
    ]
    cal.create(ANN, "Far away", at(60, 9), at(60, 10))
    series = cal.create(ANN, "Stand-up", at(2, 8), at(2, 9), attendees=(BOB,), count=3)
    pages, delta = await round_of(cal.source)
    found = by_id(pages)
    assert set(singles) | {series} <= set(found) and len(found) == 5 + 1 + 3
    single = event(found[singles[0]])
    assert (single.type, single.subject, single.start, single.end) == (
        "singleInstance",
        "Meeting 0",
        at(1, 9),
        at(1, 10),
    )
    assert single.ical_uid and single.organizer is not None and single.organizer.normalized == ANN
    assert [a.address.normalized for a in single.attendees] == [BOB]
    master = event(found[series])
    assert (master.type, master.subject, master.start) == ("seriesMaster", "Stand-up", at(2, 8))
    members = occurrences(found, series)
    assert sorted(o.start for o in members.values()) == [at(d, 8) for d in (2, 3, 4)]
    assert all(o.skeletal and o.type == "occurrence" for o in members.values())
    keys = {appointment_key(hydrate(o, master), master) for o in members.values()}  # type: ignore[arg-type]
    assert len(keys) == 3 and all(k.startswith(master.ical_uid + "|") for k in keys)
    for page in pages:  # a series is never split across pages
        ids = {c.id for c in page.changes}
        assert series not in ids or set(members) <= ids
    again, _ = await round_of(cal.source, delta)
    assert by_id(again) == {}


async def test_edits_reschedules_and_deletes_come_in_the_next_round(cal: CalendarHarness) -> None:
    edited = cal.create(ANN, "Quote review", at(3, 9), at(3, 10))
    moved_out = cal.create(ANN, "Kick-off", at(4, 9), at(4, 10))
    gone = cal.create(ANN, "Dropped", at(5, 9), at(5, 10))
    pages, delta = await round_of(cal.source)
    ical = event(by_id(pages)[edited]).ical_uid
    cal.patch(ANN, edited, subject="Quote review (moved)", start=at(6, 14), end=at(6, 15))
    cal.patch(ANN, moved_out, start=at(90, 9), end=at(90, 10))
    cal.delete(ANN, gone)
    pages, _ = await round_of(cal.source, delta)
    found = by_id(pages)
    now = event(found[edited])
    assert (now.subject, now.start, now.ical_uid) == ("Quote review (moved)", at(6, 14), ical)
    assert found[moved_out] == EventRemoved(moved_out) and found[gone] == EventRemoved(gone)
    still = await cal.source.get_event(ANN, moved_out)
    assert still is not None and still.start == at(90, 9)
    assert await cal.source.get_event(ANN, gone) is None


async def test_occurrences_deleted_edited_and_a_series_rescheduled(cal: CalendarHarness) -> None:
    series = cal.create(ANN, "Daily", at(2, 8), at(2, 9), count=4)
    pages, delta = await round_of(cal.source)
    found = by_id(pages)
    master = event(found[series])
    members = sorted(occurrences(found, series).values(), key=lambda o: o.start)
    first, second, third = members[0].id, members[1].id, members[2].id
    cal.delete(ANN, second)  # Graph reports nothing for a deleted occurrence
    pages, delta = await round_of(cal.source, delta)
    assert by_id(pages) == {}
    assert await cal.source.get_event(ANN, second) is None
    present = await cal.source.instances(ANN, series, WINDOW)
    assert present is not None and second not in {i.id for i in present} and len(present) == 3

    cal.patch(ANN, third, subject="Daily (long)", start=at(4, 13), end=at(4, 15))  # an exception
    pages, delta = await round_of(cal.source, delta)
    found = by_id(pages)
    exception = event(found[third])
    assert (exception.type, exception.subject, exception.start) == ("exception", "Daily (long)", at(4, 13))
    assert exception.original_start == at(4, 8) and not exception.skeletal
    assert appointment_key(exception, master) == f"{master.ical_uid}|{at(4, 8):%Y-%m-%dT%H:%M:%SZ}"
    fetched = await cal.source.get_event(ANN, third)
    assert fetched is not None and fetched.start == at(4, 13) and fetched.original_start == at(4, 8)

    cal.patch(ANN, series, start=at(2, 10), end=at(2, 11))  # the whole series, two hours later
    pages, delta = await round_of(cal.source, delta)
    moved = occurrences(by_id(pages), series)
    assert at(2, 10) in {o.start for o in moved.values()}
    assert first in moved and event(await cal.source.get_event(ANN, first)).original_start == at(2, 10)

    cal.delete(ANN, series)
    pages, _ = await round_of(cal.source, delta)
    found = by_id(pages)
    assert found[series] == EventRemoved(series) and found[first] == EventRemoved(first)
    assert await cal.source.get_event(ANN, first) is None
    assert await cal.source.instances(ANN, series, WINDOW) is None


async def test_a_meeting_with_a_colleague_is_copied_and_follows_its_organizer(cal: CalendarHarness) -> None:
    made = cal.create(ANN, "Joint pitch", at(2, 11), at(2, 12), attendees=(DAN, BOB))
    ann_pages, _ = await round_of(cal.source, upn=ANN)
    dan_pages, dan_delta = await round_of(cal.source, upn=DAN)
    [copy] = [event(c) for c in by_id(dan_pages).values()]
    assert copy.ical_uid == event(by_id(ann_pages)[made]).ical_uid and copy.id != made
    assert copy.organizer is not None and copy.organizer.normalized == ANN
    cal.patch(ANN, made, subject="Joint pitch (moved)", start=at(3, 11), end=at(3, 12))
    pages, dan_delta = await round_of(cal.source, dan_delta, upn=DAN)
    moved = event(by_id(pages)[copy.id])
    assert (moved.subject, moved.start, moved.is_cancelled) == ("Joint pitch (moved)", at(3, 11), False)
    cal.delete(ANN, made)
    pages, _ = await round_of(cal.source, dan_delta, upn=DAN)
    assert event(by_id(pages)[copy.id]).is_cancelled
    assert await cal.source.get_event(ANN, made) is None


async def test_the_push_creates_once_updates_and_deletes(cal: CalendarHarness) -> None:
    _, delta = await round_of(cal.source)
    change = CrmAppointmentChange(
        ref=CrmRef("a-000007"), owner=ANN, key="", subject="Site visit", start=at(2, 13), end=at(2, 14),
        is_all_day=False, location="Plant 2", body="Check the line",
    )  # fmt: skip
    made, change_key = await cal.source.create_event(ANN, change)
    again, _ = await cal.source.create_event(ANN, change)  # a retried create makes no second event
    assert again == made and change_key
    pages, delta = await round_of(cal.source, delta)
    pushed = event(by_id(pages)[made])
    assert (
        pushed.transaction_id == f"{PUSH_TRANSACTION_PREFIX}a-000007"
    )  # how the stream knows its own (no echo)
    assert (await cal.source.get_event(ANN, made)) == pushed
    assert (pushed.subject, pushed.start, pushed.attendees, pushed.location) == (
        "Site visit",
        at(2, 13),
        (),
        "Plant 2",
    )
    moved = CrmAppointmentChange(**{**change.__dict__, "start": at(3, 13), "end": at(3, 15)})
    assert await cal.source.update_event(ANN, made, moved)
    pages, delta = await round_of(cal.source, delta)
    assert event(by_id(pages)[made]).end == at(3, 15)
    await cal.source.delete_event(ANN, made)
    await cal.source.delete_event(ANN, made)
    assert await cal.source.update_event(ANN, made, moved) is None
    pages, _ = await round_of(cal.source, delta)
    assert by_id(pages) == {made: EventRemoved(made)}


async def test_an_expired_sync_state_answers_delta_expired(cal: CalendarHarness) -> None:
    for n in range(PAGE + 1):
        cal.create(ANN, f"M{n}", at(n + 1, 9), at(n + 1, 10))
    first = await cal.source.read_page(ANN, "", WINDOW)
    assert first.next_link
    cal.expire(ANN)
    with pytest.raises(DeltaExpired):
        await cal.source.read_page(ANN, first.next_link, None)
    pages, delta = await round_of(cal.source)
    assert len(by_id(pages)) == PAGE + 1
    cal.expire(ANN)
    with pytest.raises(DeltaExpired):
        await cal.source.read_page(ANN, delta, None)


@pytest.mark.parametrize("retry_after", ["0.2", None], ids=["fractional", "missing"])
@pytest.mark.parametrize("status", [429, 503])
async def test_short_throttling_is_ridden_out(
    cal: CalendarHarness, status: int, retry_after: str | None
) -> None:
    wanted = cal.create(ANN, "Demo", at(1, 9), at(1, 10))
    cal.fault(status, retry_after=retry_after, count=2)
    pages, _ = await round_of(cal.source)
    assert list(by_id(pages)) == [wanted]


async def test_a_long_retry_after_is_handed_to_the_engine(cal: CalendarHarness) -> None:
    cal.create(ANN, "Demo", at(1, 9), at(1, 10))
    cal.fault(429, retry_after="3600")
    with pytest.raises(GraphThrottled) as raised:
        await cal.source.read_page(ANN, "", WINDOW)
    assert raised.value.retry_after is not None and raised.value.retry_after >= 3600
