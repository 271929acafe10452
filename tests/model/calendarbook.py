"""`InMemoryCalendar`: the engine's `CalendarSource` port in memory, with Graph's calendarView delta
semantics as the emulator reproduces them (docs/graph-behaviour.md §1.5, §7.9, §8.9–§8.10).

Held to the same contract suite as the real `GraphCalendar` over the Graph emulator
(`tests/contract/test_calendar_source.py`). What it models:

- single meetings and daily series (a number of occurrences), all in UTC; an edited occurrence becomes an
  exception (same id, its own changeKey); a deleted occurrence is only gone (delta reports nothing);
- calendarView delta over a window frozen into the round's links: a series comes whole on one page (its
  master with full properties, its occurrences skeletal, its exceptions full); whatever changed and has
  nothing in the window (moved out, deleted) comes as `@removed`, with the series' occurrences; changes
  made while a round runs join it; expired sync state answers 410 SyncStateNotFound;
- GET by id (a master, an occurrence, an exception; 404 when gone), a series' instances in a window;
- a meeting with another user of the tenant as attendee is copied into their calendar with the same
  iCalUId; the organizer's edits reach the copies, the organizer's delete marks them cancelled;
- the push: attendee-less events created idempotently by `transactionId`, updated, deleted;
- injected faults (429/503 with Retry-After, 410) through the product's `GraphCaller`.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from shared.errors import GraphNotFound
from shared.graph.client import GraphCaller
from shared.model import (
    PUSH_TRANSACTION_PREFIX,
    Address,
    Attendee,
    CrmAppointmentChange,
    EventChange,
    EventRemoved,
    OutlookEvent,
    Page,
)
from tests.model.faults import FakeGraph, api_error, decode, encode

T = TypeVar("T")
SEP = "_OID"


@dataclass
class _Exception:
    start: datetime
    end: datetime
    subject: str | None
    change_key: str


@dataclass
class _Event:
    id: str
    ical: str
    organizer: str
    attendees: tuple[str, ...]
    subject: str
    start: datetime
    end: datetime
    count: int = 0  # 0: a single meeting; n: a daily series of n occurrences
    change_key: str = ""
    cancelled_days: set[date] = field(default_factory=set)
    exceptions: dict[date, _Exception] = field(default_factory=dict)
    is_cancelled: bool = False
    deleted: bool = False
    transaction_id: str = ""
    location: str = ""
    body: str = ""


@dataclass(frozen=True)
class _Instance:
    event: _Event
    kind: str  # singleInstance | occurrence | exception
    start: datetime
    end: datetime
    day: date | None = None

    @property
    def id(self) -> str:
        return self.event.id if self.day is None else f"{self.event.id}{SEP}{self.day:%Y%m%d}"


@dataclass
class _State:
    user: str
    expired: bool = False


def _original(event: _Event, day: date) -> datetime:
    return datetime.combine(day, event.start.time(), tzinfo=UTC)


def instances(event: _Event) -> list[_Instance]:
    """Every instance of the event (cancelled occurrences left out)."""
    if not event.count:
        return [_Instance(event, "singleInstance", event.start, event.end)]
    found: list[_Instance] = []
    for n in range(event.count):
        day = event.start.date() + timedelta(days=n)
        if day in event.cancelled_days:
            continue
        if day in event.exceptions:
            over = event.exceptions[day]
            found.append(_Instance(event, "exception", over.start, over.end, day))
        else:
            start = _original(event, day)
            found.append(_Instance(event, "occurrence", start, start + (event.end - event.start), day))
    return found


def in_window(event: _Event, start: datetime, end: datetime) -> list[_Instance]:
    return [i for i in instances(event) if i.start < end and i.end > start]


class InMemoryCalendar(FakeGraph):
    def __init__(
        self,
        *,
        page_size: int = 50,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self.page_size = page_size
        self._caller = GraphCaller(sleep=sleep) if sleep is not None else GraphCaller()
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._events: dict[str, dict[str, _Event]] = {}  # user -> event id -> event
        self._logs: dict[str, dict[str, tuple[int, str]]] = {}  # user -> event id -> (seq, kind)
        self._states: dict[str, _State] = {}

    # -- what tests do (the users' Outlook, and Graph's own behaviour) -----------------------------

    def add_user(self, upn: str) -> None:
        self._events.setdefault(upn.lower(), {})
        self._logs.setdefault(upn.lower(), {})

    def create(
        self,
        upn: str,
        *,
        subject: str,
        start: datetime,
        end: datetime,
        attendees: tuple[str, ...] = (),
        count: int = 0,
    ) -> tuple[str, str]:
        """The user organizes a meeting (or a daily series of `count`). Returns (event id, iCalUId)."""
        user = upn.lower()
        event_id = self._new_id()
        ical = "040000008200E00074C5B7101A82E008" + hashlib.sha256(event_id.encode()).hexdigest()[:48].upper()
        event = _Event(event_id, ical, user, tuple(a.lower() for a in attendees), subject, start, end, count)
        self._put(user, event)
        for invitee in event.attendees:  # Exchange delivers the meeting to attendees in the tenant
            if invitee in self._events and invitee != user:
                self._put(invitee, replace(event, id=self._new_id(), cancelled_days=set(), exceptions={}))
        return event_id, ical

    def patch(
        self,
        upn: str,
        event_id: str,
        *,
        subject: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> None:
        """The user edits a meeting, a series (its master), or one occurrence (it becomes an exception)."""
        user = upn.lower()
        event, day = self._find(user, event_id)
        for holder, copy in self._with_copies(user, event):
            if day is None:
                copy.subject = subject if subject is not None else copy.subject
                copy.start, copy.end = start or copy.start, end or copy.end
            else:
                was = copy.exceptions.get(day)
                default = next(i for i in instances(copy) if i.day == day) if was is None else None
                copy.exceptions[day] = _Exception(
                    start or (was.start if was else default.start),  # type: ignore[union-attr]
                    end or (was.end if was else default.end),  # type: ignore[union-attr]
                    subject if subject is not None else (was.subject if was else None),
                    self._change_key(),
                )
            self._touch(holder, copy)

    def delete(self, upn: str, event_id: str) -> None:
        """The user deletes a meeting, a series, or one occurrence (which Graph's delta never reports)."""
        user = upn.lower()
        event, day = self._find(user, event_id)
        for holder, copy in self._with_copies(user, event):
            if day is not None:
                copy.cancelled_days.add(day)
                copy.exceptions.pop(day, None)
            elif holder == user:
                copy.deleted = True
                self._logs[holder][copy.id] = (next(self._seq), "removed")
            else:  # the attendees' copies stay, marked cancelled
                copy.is_cancelled = True
                self._touch(holder, copy)

    def events(self, upn: str) -> list[_Event]:
        return [e for e in self._events[upn.lower()].values() if not e.deleted]

    # -- the port ----------------------------------------------------------------------------------

    async def read_page(self, user: str, link: str, window: tuple[datetime, datetime] | None) -> Page:
        return await self._call(user, lambda: self._serve_page(user.lower(), link, window))

    async def get_event(self, user: str, event_id: str) -> OutlookEvent | None:
        def read() -> OutlookEvent:
            self.faults.gate(user, "get_event")
            event, day = self._find(user.lower(), event_id)
            if day is None:
                return self._master(event) if event.count else self._full(instances(event)[0])
            return self._full(next(i for i in instances(event) if i.day == day))

        try:
            return await self._call(user, read)
        except GraphNotFound:
            return None

    async def instances(
        self, user: str, master_id: str, window: tuple[datetime, datetime]
    ) -> list[OutlookEvent] | None:
        def read() -> list[OutlookEvent]:
            self.faults.gate(user, "instances")
            event, _ = self._find(user.lower(), master_id)
            return [self._full(i) for i in in_window(event, *window)]

        try:
            return await self._call(user, read)
        except GraphNotFound:
            return None

    async def create_event(self, user: str, change: CrmAppointmentChange) -> tuple[str, str]:
        def write() -> tuple[str, str]:
            self.faults.gate(user, "create_event")
            upn = user.lower()
            transaction = f"{PUSH_TRANSACTION_PREFIX}{change.ref.id}"[:100]
            for event in self._events[upn].values():  # a retried create: the event it already made
                if event.transaction_id == transaction and not event.deleted:
                    return event.id, event.change_key
            event_id = self._new_id()
            ical = (
                "040000008200E00074C5B7101A82E008"
                + hashlib.sha256(event_id.encode()).hexdigest()[:48].upper()
            )
            event = _Event(
                event_id, ical, upn, (), change.subject, change.start, change.end,
                transaction_id=transaction, location=change.location, body=change.body,
            )  # fmt: skip
            self._put(upn, event)
            return event.id, event.change_key

        return await self._call(user, write)

    async def update_event(self, user: str, event_id: str, change: CrmAppointmentChange) -> str | None:
        def write() -> str:
            self.faults.gate(user, "update_event")
            event, _ = self._find(user.lower(), event_id)
            event.subject, event.start, event.end = change.subject, change.start, change.end
            event.location, event.body = change.location, change.body
            self._touch(user.lower(), event)
            return event.change_key

        try:
            return await self._call(user, write)
        except GraphNotFound:
            return None

    async def delete_event(self, user: str, event_id: str) -> None:
        def remove() -> None:
            self.faults.gate(user, "delete_event")
            event, _ = self._find(user.lower(), event_id)
            event.deleted = True
            self._logs[user.lower()][event.id] = (next(self._seq), "removed")

        try:
            await self._call(user, remove)
        except GraphNotFound:
            return

    # -- inside ------------------------------------------------------------------------------------

    async def _call(self, user: str, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return await self._caller.call(user, run)

    def _new_id(self) -> str:
        return f"AAMkAGevent{next(self._ids):06d}"

    def _change_key(self) -> str:
        return f"DwAAAB{next(self._ids):08d}"

    def _put(self, user: str, event: _Event) -> None:
        event.change_key = self._change_key()
        self._events[user][event.id] = event
        self._logs[user][event.id] = (next(self._seq), "upsert")

    def _touch(self, user: str, event: _Event) -> None:
        event.change_key = self._change_key()
        self._logs[user][event.id] = (next(self._seq), "upsert")

    def _with_copies(self, user: str, event: _Event) -> list[tuple[str, _Event]]:
        """The event, and when `user` organizes it, the attendees' copies (same iCalUId)."""
        found = [(user, event)]
        if event.organizer == user:
            found += [
                (holder, other)
                for holder, events in self._events.items()
                for other in events.values()
                if other is not event and other.ical == event.ical and not other.deleted
            ]
        return found

    def _find(self, user: str, event_id: str) -> tuple[_Event, date | None]:
        master_id, _, day_text = event_id.partition(SEP)
        event = self._events.get(user, {}).get(master_id)
        if event is None or event.deleted:
            raise api_error(404, "ErrorItemNotFound")
        if not day_text:
            return event, None
        try:
            day = datetime.strptime(day_text, "%Y%m%d").date()
        except ValueError:
            raise api_error(404, "ErrorItemNotFound") from None
        if not any(i.day == day for i in instances(event)):
            raise api_error(404, "ErrorItemNotFound")
        return event, day

    def _common(self, event: _Event) -> dict[str, Any]:
        return {
            "subject": event.subject,
            "body": event.body,
            "location": event.location,
            "organizer": Address(event.organizer, ""),
            "attendees": tuple(Attendee(Address(a, a)) for a in event.attendees),
            "is_cancelled": event.is_cancelled,
            "transaction_id": event.transaction_id,
        }

    def _master(self, event: _Event) -> OutlookEvent:
        first = _original(event, event.start.date())
        return OutlookEvent(
            id=event.id, type="seriesMaster", start=first, end=first + (event.end - event.start),
            ical_uid=event.ical, change_key=event.change_key, **self._common(event),
        )  # fmt: skip

    def _full(self, inst: _Instance) -> OutlookEvent:
        event = inst.event
        common = self._common(event)
        if inst.day is None:
            return OutlookEvent(id=event.id, type="singleInstance", start=inst.start, end=inst.end,
                                ical_uid=event.ical, change_key=event.change_key, **common)  # fmt: skip
        over = event.exceptions.get(inst.day) if inst.kind == "exception" else None
        if over is not None and over.subject is not None:
            common["subject"] = over.subject
        ical = event.ical[:-16] + hashlib.sha256(f"{event.ical}{inst.day}".encode()).hexdigest()[:16].upper()
        return OutlookEvent(
            id=inst.id, type=inst.kind, start=inst.start, end=inst.end, series_master_id=event.id,
            ical_uid=ical, change_key=over.change_key if over else event.change_key,
            original_start=_original(event, inst.day), **common,
        )  # fmt: skip

    def _skeletal(self, inst: _Instance) -> OutlookEvent:
        return OutlookEvent(
            id=inst.id, type="occurrence", start=inst.start, end=inst.end, series_master_id=inst.event.id,
            start_date=inst.start.date(), end_date=inst.end.date(), skeletal=True,
        )  # fmt: skip

    def _expand(self, event: _Event, start: datetime, end: datetime) -> list[EventChange]:
        found = in_window(event, start, end)
        if not found:
            return []
        if not event.count:
            return [self._full(found[0])]
        return [self._master(event)] + [
            self._skeletal(i) if i.kind == "occurrence" else self._full(i) for i in found
        ]

    def _serve_page(self, user: str, link: str, window: tuple[datetime, datetime] | None) -> Page:
        self.faults.gate(user, "read_page")
        if user not in self._events:
            raise api_error(404, "ErrorInvalidUser")
        high_now = next(self._seq)
        if not link:
            if window is None:
                raise api_error(400, "ErrorInvalidParameter")
            state_id = f"e{len(self._states) + 1:x}"
            self._states[state_id] = _State(user)
            token: dict[str, Any] = {
                "s": state_id, "b": 0, "p": 0, "h": high_now, "o": high_now,
                "ws": window[0].astimezone(UTC).isoformat(), "we": window[1].astimezone(UTC).isoformat(),
            }  # fmt: skip
        else:
            token = decode(link)
            state = self._states.get(str(token["s"]))
            if state is None or state.expired or state.user != user:
                raise api_error(410, "SyncStateNotFound")
            if token["h"] == -1:
                token["o"] = high_now
            token["h"] = max(int(token["h"]), high_now)
        start, end = datetime.fromisoformat(token["ws"]), datetime.fromisoformat(token["we"])
        log = self._logs[user]
        entries = sorted(
            (seq, kind, eid) for eid, (seq, kind) in log.items() if token["p"] < seq <= token["h"]
        )
        value: list[EventChange] = []
        pos = token["p"]
        finished = True
        for seq, kind, event_id in entries:
            if len(value) >= self.page_size:
                finished = False
                break
            pos = seq
            initial = token["b"] == 0 and seq <= token["o"]
            event = self._events[user][event_id]
            if kind == "removed" or event.deleted:
                if not initial:
                    gone = [event_id] + [i.id for i in in_window(event, start, end) if i.day is not None]
                    value += [EventRemoved(g) for g in gone]
                continue
            items = self._expand(event, start, end)
            if items:
                value += items
            elif not initial:
                value.append(EventRemoved(event_id))
        if not finished:
            return Page(value, next_link=encode({**token, "p": pos}))
        delta = {**token, "b": token["h"], "p": token["h"], "h": -1, "o": token["h"]}
        return Page(value, delta_link=encode(delta))
