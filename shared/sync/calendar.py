"""The calendar stream: a user's primary calendar, read by calendarView delta over a window, written to
the CRM as appointments; and, when `CalendarPushFromCrm` is on, CRM appointments pushed into Outlook.

Per page (docs/architecture.md §3): read → decide (pure, calendar_plan) → write appointments
(idempotent upserts keyed by iCalUId [+ original start], merged across calendars through SyncKeys) →
link rows → decisions → save the page's link conditionally on the cursor's ETag → renew the lease.

- The window (`CalendarPastDays` / `CalendarFutureDays`) is frozen into a round's token, so it is kept
  in the cursor and moved forward by starting a fresh round once the round is a day old; the keys make
  the new round rewrite nothing it already wrote.
- Skeletal occurrences are hydrated from their series master. When a master arrives, the series'
  linked occurrences that are not among its current ones (a rescheduled series) are checked with a GET.
- A removal is never trusted on its own (`@removed` also means "left the window"): the event is
  fetched, and only a 404 withdraws it. A deleted single occurrence produces nothing in delta, so after
  a round the linked occurrences of each series are compared with the master's instances in the window
  (at most every `series_check_every`).
- The push writes attendee-less events only, so nothing is ever sent to anyone (shared/graph/calendar.py).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta

from shared.crm.port import CrmPort
from shared.errors import (
    ConcurrencyError,
    CrmError,
    CrmRejectedError,
    CrmRetryableError,
    DeltaExpired,
    GraphError,
)
from shared.model import Appointment, CrmAppointmentChange, PersonRef, fingerprint
from shared.state.port import Cursor, Decision, Issue, Lease, Link, StateStore
from shared.sync import calendar_plan as plan
from shared.sync.calendar_plan import EventChange, EventRemoved, OutlookEvent
from shared.sync.keyed_write import Written, write_keyed
from shared.sync.ports import CalendarSource
from shared.users import UserConfig

logger = logging.getLogger(__name__)

STREAM = "calendar"
PUSH_STREAM = "calendar:push"  # link rows of the push, by CRM appointment id
PENDING_KEY = "pendingKey"  # Link.extra: a re-keyed occurrence's new key, noted before its appointment
LEASE_SECONDS = 300.0
ROLL_OVER_AFTER = timedelta(days=1)
SERIES_CHECK_EVERY = timedelta(hours=1)
MAX_ISSUE_RETRIES_PER_RUN = 50
MAX_CONSECUTIVE_CRM_FAILURES = 3
LOOKUP_CHUNK = 200
COLLIDED = (
    "its iCalUId was already taken by another organizer's meeting: captured separately under a key of its own"
)


@dataclass
class CalendarStats:
    pages: int = 0
    captured: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    removed: int = 0
    cancelled: int = 0
    kept: int = 0  # reported removed but still there (left the window)
    pushed: int = 0
    issues_retried: int = 0
    fresh_rounds: int = 0
    collisions: int = 0  # meetings that reused the iCalUId of another organizer's meeting

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Page:
    decisions: list[Decision] = field(default_factory=list)
    links: dict[str, Link] = field(default_factory=dict)
    consecutive_crm_failures: int = 0
    round: str = ""  # the round that saw these items (stamped on their link rows)
    withdrawn: set[tuple[str, str]] = field(default_factory=set)  # (Graph id, key) withdrawn this page
    collided: set[str] = field(default_factory=set)  # keys of meetings whose iCalUId another one took


class CalendarStream:
    def __init__(
        self,
        state: StateStore,
        crm: CrmPort,
        source: CalendarSource,
        *,
        body_limit: int = 20000,
        series_check_every: timedelta = SERIES_CHECK_EVERY,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._state = state
        self._crm = crm
        self._source = source
        self._body_limit = min(body_limit, crm.capabilities.journal_body_limit or body_limit)
        self._subject_limit = crm.capabilities.subject_limit
        self._series_check_every = series_check_every
        self._clock = clock

    async def run(
        self,
        config: UserConfig,
        stream: str,
        lease: Lease,
        *,
        fresh_round: bool,
        progress: Callable[[str, Mapping[str, int]], None] | None = None,
    ) -> tuple[CalendarStats, Lease]:
        user = config.upn
        stats = CalendarStats()
        cursor = await self._state.get_cursor(user, stream)
        if fresh_round or not cursor.link or self._roll_over_due(cursor):
            cursor = self._new_round(cursor, config)
            stats.fresh_rounds += 1
        masters: dict[str, OutlookEvent | None] = {}
        lease = await self._retry_issues(config, cursor, lease, stats, masters)
        restarts = 0
        while True:
            window = (cursor.window_start, cursor.window_end) if not cursor.link else None
            try:
                page = await self._source.read_page(user, cursor.link, window)  # type: ignore[arg-type]
            except DeltaExpired:
                restarts += 1
                if restarts > 2:
                    raise
                logger.info("delta link expired stream=%s: starting a fresh round", stream)
                cursor = self._new_round(cursor, config)
                stats.fresh_rounds += 1
                continue
            stats.pages += 1
            before = stats.as_dict()
            result = await self._apply(config, cursor, page.changes, stats, masters)
            await self._state.put_links(list(result.links.values()))
            await self._state.record_decisions(result.decisions)
            link, kind = (page.next_link, "next") if page.next_link else (page.delta_link, "delta")
            if not link:
                raise GraphError("Graph returned a delta page with neither nextLink nor deltaLink")
            extra = {
                **cursor.extra,
                "lastPageUtc": self._clock().isoformat(),
                "totals": _totals(cursor, before, stats),
            }
            cursor = await self._state.save_cursor(
                user, stream, replace(cursor, link=link, link_kind=kind, extra=extra)
            )
            lease = await self._state.renew(lease, LEASE_SECONDS)
            if progress is not None:
                progress(stream, stats.as_dict())
            if kind == "delta":
                break
        if cursor.extra.get("reconciledRound") != _round_id(cursor):
            cursor, lease = await self._reconcile(config, cursor, lease, stats)
        cursor, lease = await self._check_series(config, cursor, lease, stats)
        if config.calendar_push_from_crm and self._crm.capabilities.appointment_change_feed:
            cursor, lease = await self._push(config, cursor, lease, stats)
        return stats, lease

    # -- the window --------------------------------------------------------------------------------

    def _new_round(self, cursor: Cursor, config: UserConfig) -> Cursor:
        now = self._clock()
        today = datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC)
        return replace(
            cursor,
            link="",
            link_kind="",
            extra={**cursor.extra, "round": uuid.uuid4().hex},
            round_started=now,
            window_start=today - timedelta(days=config.calendar_past_days),
            window_end=today + timedelta(days=config.calendar_future_days),
        )

    def _roll_over_due(self, cursor: Cursor) -> bool:
        """A finished round older than a day: start a new one so the window moves forward."""
        return roll_over_due(cursor, self._clock())

    # -- Outlook → CRM -----------------------------------------------------------------------------

    async def _master(
        self, user: str, master_id: str, masters: dict[str, OutlookEvent | None]
    ) -> OutlookEvent | None:
        if master_id not in masters:
            masters[master_id] = await self._source.get_event(user, master_id) if master_id else None
        return masters[master_id]

    async def _apply(
        self,
        config: UserConfig,
        cursor: Cursor,
        changes: Sequence[EventChange],
        stats: CalendarStats,
        masters: dict[str, OutlookEvent | None],
    ) -> _Page:
        user = config.upn
        result = _Page(round=_round_id(cursor))
        latest = plan.latest_by_id(changes)
        links = await self._state.get_links(user, STREAM, [c.id for c in latest])
        page_masters = [c for c in latest if isinstance(c, OutlookEvent) and c.type == "seriesMaster"]
        for master in page_masters:
            masters[master.id] = master
            result.links[master.id] = Link(
                user, STREAM, master.id, crm_key=master.ical_uid, change_key=master.change_key,
                extra={"kind": "seriesMaster", "round": result.round},
            )  # fmt: skip
        removals = [c for c in latest if isinstance(c, EventRemoved)]
        events = [c for c in latest if isinstance(c, OutlookEvent) and c.type != "seriesMaster"]
        series_keys: dict[str, set[str]] = {m.id: set() for m in page_masters}
        keyed = await self._hydrate(config, events, stats, result, masters)
        for _, key, series in keyed:
            if series is not None and series.id in series_keys:
                series_keys[series.id].add(key)
        await self._capture_all(config, keyed, links, stats, result)
        for master in page_masters:
            await self._drop_stale(config, master, series_keys[master.id], stats, result, masters)
        for removal in removals:
            await self._confirm_removal(
                config, cursor, removal.id, links.get(removal.id), stats, result, masters
            )
        return result

    async def _hydrate(
        self,
        config: UserConfig,
        events: Sequence[OutlookEvent],
        stats: CalendarStats,
        result: _Page,
        masters: dict[str, OutlookEvent | None],
    ) -> list[tuple[OutlookEvent, str, OutlookEvent | None]]:
        keyed: list[tuple[OutlookEvent, str, OutlookEvent | None]] = []
        for event in events:
            master = None
            if event.type != "singleInstance":
                master = await self._master(config.upn, event.series_master_id, masters)
            full = plan.hydrate(event, master)
            key = plan.appointment_key(full, master) if full is not None else ""
            if full is None or not key:
                stats.skipped += 1
                reason = "series master unavailable: free/busy data alone never becomes an appointment"
                result.decisions.append(self._decision(config, event.id, event.id, "skipped", reason))
                continue
            keyed.append((full, key, master))
        return await self._own_keys(keyed, result)

    async def _own_keys(
        self, keyed: list[tuple[OutlookEvent, str, OutlookEvent | None]], result: _Page
    ) -> list[tuple[OutlookEvent, str, OutlookEvent | None]]:
        """An event whose key another organizer's meeting took first (anyone can send an invitation
        with a known iCalUId) is another meeting: it goes under a key of its own from here on, so its
        link, its appointment and its withdrawal all agree on that key."""
        rows = await self._state.get_keys(sorted({key for _, key, _ in keyed})) if keyed else {}
        own: list[tuple[OutlookEvent, str, OutlookEvent | None]] = []
        for event, key, master in keyed:
            mine = plan.own_key(rows.get(key), key, plan.identity(event.organizer))
            if mine != key:
                result.collided.add(mine)
            key = mine
            own.append((event, key, master))
        return own

    async def _capture_all(
        self,
        config: UserConfig,
        keyed: Sequence[tuple[OutlookEvent, str, OutlookEvent | None]],
        links: Mapping[str, Link],
        stats: CalendarStats,
        result: _Page,
    ) -> None:
        candidates: list[tuple[OutlookEvent, str, OutlookEvent | None]] = []
        for event, key, master in keyed:
            link = links.get(event.id)
            if link is not None and link.extra.get("origin") == "crm":
                stats.skipped += 1
                result.decisions.append(
                    self._decision(config, key, event.id, "skipped", "created by the CRM push (no echo)")
                )
                continue
            if event.is_cancelled and link is not None and link.crm_key:
                await self._withdraw(config, link, stats, result, cancelled_by_organizer=True)
                continue
            verdict = plan.prefilter(event, policy=config.calendar_policy, category=config.calendar_category)
            if verdict.capture:
                candidates.append((event, key, master))
            else:
                stats.skipped += 1
                result.decisions.append(self._decision(config, key, event.id, "skipped", verdict.reason))
        matches = await self._lookup(config, [e for e, _, _ in candidates])
        chosen: list[tuple[OutlookEvent, str, OutlookEvent | None, tuple[PersonRef, ...], str]] = []
        for event, key, master in candidates:
            people = plan.people_on(event, config.upn, matches)
            verdict = plan.select(config.calendar_policy, config.calendar_category, people)
            if not verdict.capture:
                stats.skipped += 1
                result.decisions.append(self._decision(config, key, event.id, "skipped", verdict.reason))
                continue
            chosen.append((event, key, master, people, verdict.reason))
        # A meeting seen for the first time is linked before its appointment is written: a worker that
        # dies between the CRM write and the page's links would otherwise leave an appointment no link
        # leads to, which the meeting's later deletion (or a fresh round's reconciliation) never finds.
        first = [self._link(config, e, k, m, result.round) for e, k, m, _, _ in chosen if e.id not in links]
        # The same for a new key (a rescheduled series): noted on the old link, which keeps its key so the
        # old appointment is still withdrawn; a removal found later withdraws the new key too.
        first += [
            replace(links[e.id], extra={**links[e.id].extra, PENDING_KEY: k})
            for e, k, _, _, _ in chosen
            if e.id in links
            and links[e.id].crm_key not in ("", k)
            and links[e.id].extra.get(PENDING_KEY) != k
        ]
        if first:
            await self._state.put_links(first)
        for event, key, _, _, _ in chosen:  # a new key a dead worker wrote, and the meeting moved on again
            old = links.get(event.id)
            stale = str(old.extra.get(PENDING_KEY, "")) if old is not None else ""
            if old is not None and stale not in ("", key, old.crm_key):
                await self._withdraw(
                    config,
                    _at_pending_key(old),
                    stats,
                    result,
                    keep_link=True,
                    pending=False,
                )
        for event, key, master, people, reason in chosen:
            await self._capture(config, event, key, master, people, reason, stats, result)
            old = links.get(event.id)
            captured = result.links.get(event.id)
            if (
                old is not None
                and old.crm_key not in ("", key)
                and captured is not None
                and captured.crm_key == key
                and (event.id, old.crm_key) not in result.withdrawn
            ):  # re-keyed (a rescheduled series), also when retried alone: its old key is withdrawn
                await self._withdraw(config, old, stats, result, keep_link=True, pending=False)

    async def _capture(
        self,
        config: UserConfig,
        event: OutlookEvent,
        key: str,
        master: OutlookEvent | None,
        people: Sequence[PersonRef],
        reason: str,
        stats: CalendarStats,
        result: _Page,
    ) -> None:
        appointment = plan.build_appointment(
            event, key, master.ical_uid if master else "", owner=config.owner, people=people,
            body_limit=self._body_limit, seen_by=(config.upn.lower(),), subject_limit=self._subject_limit,
        )  # fmt: skip
        if key in result.collided:
            appointment = plan.APPOINTMENTS.rekey(appointment, key)  # its series goes under its own key too
        try:
            written = await self._write(appointment, config.upn)
        except CrmError as error:
            stats.failed += 1
            now = self._clock()
            await self._state.record_issue(
                Issue(user=config.upn, item_key=key, stream=STREAM, reason=f"CRM: {error}", first_seen=now,
                      last_seen=now, item_id=event.id)
            )  # fmt: skip
            result.decisions.append(self._decision(config, key, event.id, "failed", f"CRM: {error}"))
            if isinstance(error, CrmRetryableError):
                result.consecutive_crm_failures += 1
                if result.consecutive_crm_failures >= MAX_CONSECUTIVE_CRM_FAILURES:
                    raise
            return
        result.consecutive_crm_failures = 0
        stats.captured += int(written.changed)
        stats.unchanged += int(not written.changed)
        if key in result.collided or written.collided:
            reason = f"{reason}; {COLLIDED}"
            stats.collisions += written.changed  # counted once: when its own appointment is first written
        result.links[event.id] = self._link(config, event, written.key, master, result.round)
        result.decisions.append(self._decision(config, key, event.id, "synced", reason, crm_key=written.key))

    @staticmethod
    def _link(
        config: UserConfig, event: OutlookEvent, key: str, master: OutlookEvent | None, round_id: str
    ) -> Link:
        return Link(
            config.upn, STREAM, event.id, crm_key=key, change_key=event.change_key,
            extra={"series": master.id if master else "", "start": event.start.isoformat(),
                   "end": event.end.isoformat(), "round": round_id},
        )  # fmt: skip

    async def _write(self, appointment: Appointment, mailbox: str) -> Written:
        return await write_keyed(
            self._state,
            appointment,
            mailbox,
            plan.APPOINTMENTS,
            upsert=self._crm.upsert_appointment,
            doubt_first=True,
        )

    async def _lookup(self, config: UserConfig, events: Sequence[OutlookEvent]) -> dict[str, list[PersonRef]]:
        addresses = sorted({a.normalized for e in events for a in plan.attendees_other_than(e, config.upn)})
        found: dict[str, list[PersonRef]] = {}
        for start in range(0, len(addresses), LOOKUP_CHUNK):
            found.update(await self._crm.find_people(addresses[start : start + LOOKUP_CHUNK]))
        return found

    # -- removals, confirmed by Graph ---------------------------------------------------------------

    async def _confirm_removal(
        self,
        config: UserConfig,
        cursor: Cursor,
        item_id: str,
        link: Link | None,
        stats: CalendarStats,
        result: _Page,
        masters: dict[str, OutlookEvent | None],
    ) -> None:
        """`@removed` means deleted *or* out of the window: only a 404 withdraws the meeting."""
        if link is None or link.extra.get("origin") == "crm":
            return
        event = await self._source.get_event(config.upn, item_id)
        if link.extra.get("kind") == "seriesMaster":
            if event is None:
                for member in await self._members(config.upn, item_id):
                    await self._withdraw(config, member, stats, result)
                await self._state.delete_link(config.upn, STREAM, item_id)
                result.links.pop(item_id, None)
            return
        if event is None:
            await self._withdraw(config, link, stats, result)
            return
        stats.kept += 1  # still there, outside the window: keep it, with its new times
        master = (
            await self._master(config.upn, event.series_master_id, masters)
            if event.series_master_id
            else None
        )
        full = plan.hydrate(event, master)
        key = plan.appointment_key(full, master) if full is not None else ""
        if full is not None and key:
            [(full, key, master)] = await self._own_keys([(full, key, master)], result)
            if key != link.crm_key:
                await self._withdraw(config, link, stats, result, pending=False)
            await self._capture_all(config, [(full, key, master)], {}, stats, result)

    async def _drop_stale(
        self,
        config: UserConfig,
        master: OutlookEvent,
        current: set[str],
        stats: CalendarStats,
        result: _Page,
        masters: dict[str, OutlookEvent | None],
    ) -> None:
        """A series arrived whole: its linked occurrences not among the current ones (a rescheduled
        series, a cancelled occurrence) are fetched, and withdrawn when gone or re-keyed."""
        members = {m.item_id: m for m in await self._members(config.upn, master.id)}
        stale = plan.stale_keys({i: m.crm_key for i, m in members.items()}, current)
        for item_id, old_key in stale.items():
            if (item_id, old_key) in result.withdrawn:
                continue
            if item_id in result.links and result.links[item_id].crm_key != old_key:
                await self._withdraw(config, members[item_id], stats, result, keep_link=True, pending=False)
                continue
            event = await self._source.get_event(config.upn, item_id)
            full = plan.hydrate(event, master) if event is not None else None
            key = plan.appointment_key(full, master) if full is not None else ""
            if full is not None and key:
                [(_, key, _)] = await self._own_keys([(full, key, master)], result)
            if full is None or key != old_key:
                await self._withdraw(config, members[item_id], stats, result, pending=full is None)

    async def _members(self, user: str, master_id: str) -> list[Link]:
        return [
            link
            for link in await self._state.list_links(user, STREAM)
            if link.extra.get("series") == master_id and link.crm_key
        ]

    async def _withdraw(
        self,
        config: UserConfig,
        link: Link,
        stats: CalendarStats,
        result: _Page,
        *,
        cancelled_by_organizer: bool = False,
        keep_link: bool = False,
        pending: bool = True,
    ) -> None:
        """The meeting is confirmed gone from this calendar (or cancelled by its organizer). With
        `pending`, so is the new key a worker that died while re-keying it may have written."""
        new_key = str(link.extra.get(PENDING_KEY, ""))
        if pending and new_key and new_key != link.crm_key:
            await self._withdraw(
                config, _at_pending_key(link), stats, result,
                cancelled_by_organizer=cancelled_by_organizer, keep_link=True, pending=False,
            )  # fmt: skip
        key = link.crm_key
        result.withdrawn.add((link.item_id, key))
        for _ in range(8):
            record = await self._state.get_key(key)
            outcome = plan.withdraw(record, config.upn)
            cancel = outcome.cancel or cancelled_by_organizer
            if record is not None:
                # The key row first: a cancel the CRM applied whose answer was lost (a timeout, a 5xx
                # after the write, a worker that died) must not leave a row that says live, or the
                # meeting coming back (a series moved back) would look unchanged and stay cancelled.
                # A write that did not happen is retried with the removal, as before.
                extra = {**record.extra, "cancelled": bool(record.extra.get("cancelled")) or cancel}
                try:
                    await self._state.put_key(replace(record, mailboxes=outcome.remaining, extra=extra))
                except ConcurrencyError:
                    continue
            if cancel and config.calendar_delete_in_crm:
                await self._crm.delete_appointment(key)
            elif cancel:
                await self._cancel(key)
            elif record is not None:
                current = await self._crm.get_appointment(key)
                if current is not None:
                    await self._keep_seen_by(replace(current, seen_by=outcome.remaining))
            break
        reason = "cancelled by the organizer" if cancelled_by_organizer else outcome.reason
        if cancel:
            stats.cancelled += 1
        stats.removed += 1
        if not keep_link:
            await self._state.delete_link(config.upn, STREAM, link.item_id)
            result.links.pop(link.item_id, None)
        result.decisions.append(
            self._decision(config, key, link.item_id, "removed", reason, crm_key=key if cancel else "")
        )

    async def _cancel(self, key: str) -> None:
        """Cancel the appointment. A CRM that checks an appointment's links on every write (the
        reference CRM, and BottleCRM's cancel, which is a rewrite) refuses it once a person it links was
        deleted there: it is then written cancelled with only the people the CRM still matches."""
        try:
            await self._crm.cancel_appointment(key)
        except CrmRejectedError:
            current = await self._crm.get_appointment(key)
            if current is None or not current.people:
                raise
            await self._keep_seen_by(replace(current, cancelled=True))

    async def _keep_seen_by(self, appointment: Appointment) -> None:
        """Rewrite an appointment (fewer calendars hold it, or cancelled). When the CRM refuses it
        because a linked person was deleted there meanwhile, write it again with only the people it
        still matches."""
        try:
            await self._crm.upsert_appointment(appointment)
        except CrmRejectedError:
            if not appointment.people:
                raise
            found = await self._crm.find_people(
                sorted({p.email.lower() for p in appointment.people if p.email})
            )
            live = {p.id for refs in found.values() for p in refs}
            people = tuple(p for p in appointment.people if p.id in live)
            if people == appointment.people:
                raise
            await self._crm.upsert_appointment(replace(appointment, people=people))

    async def _reconcile(
        self, config: UserConfig, cursor: Cursor, lease: Lease, stats: CalendarStats
    ) -> tuple[Cursor, Lease]:
        """After a fresh round (a roll-over, or a 410 that lost the deletions of the gap): meetings
        linked inside the window that the round did not report are fetched; those gone are withdrawn."""
        window = (cursor.window_start, cursor.window_end)
        current = _round_id(cursor)
        result = _Page(round=current)
        for link in await self._state.list_links(config.upn, STREAM):
            if link.extra.get("origin") == "crm" or link.extra.get("round") == current:
                continue
            if window[0] is None or window[1] is None or not _within(link, (window[0], window[1])):
                continue
            if await self._source.get_event(config.upn, link.item_id) is not None:
                continue
            if link.extra.get("kind") == "seriesMaster":
                for member in await self._members(config.upn, link.item_id):
                    await self._withdraw(config, member, stats, result)
                await self._state.delete_link(config.upn, STREAM, link.item_id)
            elif link.crm_key:
                await self._withdraw(config, link, stats, result)
            lease = await self._state.renew(lease, LEASE_SECONDS)
        await self._state.record_decisions(result.decisions)
        extra = {**cursor.extra, "reconciledRound": current}
        cursor = await self._state.save_cursor(config.upn, STREAM, replace(cursor, extra=extra))
        return cursor, lease

    async def _check_series(
        self, config: UserConfig, cursor: Cursor, lease: Lease, stats: CalendarStats
    ) -> tuple[Cursor, Lease]:
        """Graph reports nothing for one deleted occurrence: compare each series' linked occurrences
        in the window with the master's instances, and withdraw those confirmed gone."""
        now = self._clock()
        last = cursor.extra.get("seriesCheckedUtc")
        if last and now - datetime.fromisoformat(str(last)) < self._series_check_every:
            return cursor, lease
        if cursor.window_start is None or cursor.window_end is None:
            return cursor, lease
        window = (cursor.window_start, cursor.window_end)
        links = await self._state.list_links(config.upn, STREAM)
        result = _Page()
        checked = 0
        # every series an occurrence is linked to, whether or not its master has a link of its own (a
        # worker that died between linking the occurrences and the master left them to this check)
        for series_id in sorted(
            {str(m.extra["series"]) for m in links if m.extra.get("series") and m.crm_key}
        ):
            members = [m for m in links if m.extra.get("series") == series_id and m.crm_key]
            checked += 1
            found = await self._source.instances(config.upn, series_id, window)
            present = {e.id for e in found or []}
            for member in members:
                if member.item_id in present or not _within(member, window):
                    continue
                if found is None or await self._source.get_event(config.upn, member.item_id) is None:
                    await self._withdraw(config, member, stats, result)
            if found is None:
                await self._state.delete_link(config.upn, STREAM, series_id)
            lease = await self._state.renew(lease, LEASE_SECONDS)
        await self._state.record_decisions(result.decisions)
        # how many series were checked: the sweep skips this hourly check for users without any
        extra = {**cursor.extra, "seriesCheckedUtc": now.isoformat(), "seriesLinked": checked}
        cursor = await self._state.save_cursor(config.upn, STREAM, replace(cursor, extra=extra))
        return cursor, lease

    async def _retry_issues(
        self,
        config: UserConfig,
        cursor: Cursor,
        lease: Lease,
        stats: CalendarStats,
        masters: dict[str, OutlookEvent | None],
    ) -> Lease:
        issues = (await self._state.list_issues(config.upn, STREAM))[:MAX_ISSUE_RETRIES_PER_RUN]
        for issue in issues:
            stats.issues_retried += 1
            event = await self._source.get_event(config.upn, issue.item_id) if issue.item_id else None
            if event is None:
                await self._state.resolve_issue(config.upn, issue.item_key)
                continue
            result = await self._apply(config, cursor, [event], stats, masters)
            await self._state.put_links(list(result.links.values()))
            await self._state.record_decisions(result.decisions)
            if not any(d.outcome == "failed" for d in result.decisions):
                await self._state.resolve_issue(config.upn, issue.item_key)
            lease = await self._state.renew(lease, LEASE_SECONDS)
        return lease

    # -- CRM → Outlook -------------------------------------------------------------------------------

    async def _push(
        self, config: UserConfig, cursor: Cursor, lease: Lease, stats: CalendarStats
    ) -> tuple[Cursor, Lease]:
        """CRM appointments made for this user become attendee-less events in their calendar.

        Appointments that came from Outlook (they have a key) are skipped: that is the echo. Each
        pushed event has two link rows: by CRM id (what was pushed, so an unchanged re-report writes
        nothing) and by Graph id (origin "crm", so the calendar delta does not capture it back)."""
        user = config.upn
        changes, next_cursor = await self._crm.appointment_changes(
            config.owner, cursor.extra.get("crmCursor")
        )
        for change in changes:
            if change.key:
                continue
            await self._push_one(user, change, stats)
            lease = await self._state.renew(lease, LEASE_SECONDS)
        extra = {**cursor.extra, "crmCursor": next_cursor}
        cursor = await self._state.save_cursor(user, STREAM, replace(cursor, extra=extra))
        return cursor, lease

    async def _push_one(self, user: str, change: CrmAppointmentChange, stats: CalendarStats) -> None:
        link = await self._state.get_link(user, PUSH_STREAM, change.ref.id)
        wanted = _push_fingerprint(change)
        if link is not None and link.crm_fingerprint == wanted:
            return
        event_id = link.extra.get("eventId", "") if link is not None else ""
        # A create was started and its outcome never recorded (the worker died): Graph answers the same
        # transactionId with the event it may have made, which then needs this change too.
        unsure = link is not None and bool(link.extra.get("pending"))
        if change.cancelled:
            if not event_id and unsure:
                event_id, _ = await self._source.create_event(user, change)
            if event_id:
                await self._source.delete_event(user, event_id)
                await self._state.delete_link(user, STREAM, event_id)
            await self._state.put_links([Link(user, PUSH_STREAM, change.ref.id, crm_fingerprint=wanted,
                                              extra={"eventId": "", "cancelled": True})])  # fmt: skip
            return
        if event_id:
            if link is not None and link.crm_fingerprint:
                # doubt first: an update Outlook applied whose answer was lost must not leave the link
                # vouching for the old version, or the CRM moving the appointment back looks like nothing
                await self._state.put_links([replace(link, crm_fingerprint="")])
            change_key = await self._source.update_event(user, event_id, change)
            if change_key is None:  # the user deleted it in Outlook: their choice stands
                assert link is not None
                await self._state.put_links([replace(link, crm_fingerprint=wanted)])
                return
        else:
            if not unsure:
                await self._state.put_links(
                    [Link(user, PUSH_STREAM, change.ref.id, extra={"eventId": "", "pending": True})]
                )
            event_id, change_key = await self._source.create_event(user, change)
            if unsure:
                change_key = await self._source.update_event(user, event_id, change) or change_key
        stats.pushed += 1
        await self._state.put_links(
            [
                Link(user, STREAM, event_id, change_key=change_key,
                     extra={"origin": "crm", "crmId": change.ref.id}),
                Link(user, PUSH_STREAM, change.ref.id, crm_key=change.ref.id, change_key=change_key,
                     crm_fingerprint=wanted, extra={"eventId": event_id}),
            ]
        )  # fmt: skip

    def _decision(
        self, config: UserConfig, key: str, item_id: str, outcome: str, reason: str, crm_key: str = ""
    ) -> Decision:
        return Decision(
            user=config.upn,
            item_key=key,
            stream=STREAM,
            outcome=outcome,
            reason=reason,
            at=self._clock(),
            crm_key=crm_key,
            details={"graphId": item_id},
        )


def roll_over_due(cursor: Cursor, now: datetime) -> bool:
    """A finished round older than a day: the next run starts a new one so the window moves forward."""
    return (
        cursor.link_kind == "delta"
        and cursor.round_started is not None
        and now - cursor.round_started >= ROLL_OVER_AFTER
    )


def series_check_due(cursor: Cursor, now: datetime, every: timedelta = SERIES_CHECK_EVERY) -> bool:
    """The next run compares series occurrences with their masters (`_check_series`): never checked, or
    checked over `every` ago while the user had series, or had pages since (new series may have come)."""
    last = cursor.extra.get("seriesCheckedUtc")
    if not last:
        return True
    checked = datetime.fromisoformat(str(last))
    if now - checked < every:
        return False
    page = cursor.extra.get("lastPageUtc")
    return int(cursor.extra.get("seriesLinked", 1)) > 0 or bool(
        page and datetime.fromisoformat(str(page)) > checked
    )


def _totals(cursor: Cursor, before: Mapping[str, int], stats: CalendarStats) -> dict[str, int]:
    """The cursor's running totals plus what this page added (shown on the status page)."""
    totals = {str(k): int(v) for k, v in dict(cursor.extra.get("totals", {})).items()}
    for name in ("captured", "skipped", "failed", "cancelled", "collisions"):
        totals[name] = totals.get(name, 0) + getattr(stats, name) - before[name]
    return totals


def _round_id(cursor: Cursor) -> str:
    return str(cursor.extra.get("round", ""))


def _within(link: Link, window: tuple[datetime, datetime]) -> bool:
    start, end = link.extra.get("start"), link.extra.get("end")
    if not start or not end:
        return True
    return datetime.fromisoformat(str(start)) < window[1] and datetime.fromisoformat(str(end)) > window[0]


def _push_fingerprint(change: CrmAppointmentChange) -> str:
    return fingerprint(
        [
            change.subject,
            change.start,
            change.end,
            change.is_all_day,
            change.location,
            change.body,
            change.cancelled,
        ]
    )


def _at_pending_key(link: Link) -> Link:
    """The link as if it led to the new key noted on it (a re-keyed occurrence), without the note."""
    extra = {k: v for k, v in link.extra.items() if k != PENDING_KEY}
    return replace(link, crm_key=str(link.extra[PENDING_KEY]), extra=extra)
