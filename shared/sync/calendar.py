"""The calendar stream: a user's primary calendar, read by calendarView delta over a window, written to
the CRM as appointments (the CRM → Outlook direction is its own stream, `shared/sync/push.py`).

A page: link rows of series masters → occurrences hydrated from their master and keyed (a key another
organizer took is replaced by one of the event's own) → `calendar_plan.plan` → appointments written
(idempotent upserts merged across calendars through SyncKeys) → removals confirmed by GET → the
runner records links and decisions, then saves the page's link.

The window (`CalendarPastDays` / `CalendarFutureDays`) is frozen into a round's token, so it is kept
in the cursor and moved forward by a fresh round once the round is a day old; the keys make the new
round rewrite nothing it already wrote. After a round: the reconciliation (once per round) and the
series check (`shared/sync/calendar_withdraw.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from functools import partial

from shared.errors import CrmError, CrmRetryableError, DeltaExpired, GraphError
from shared.model import (
    CalendarProgress,
    Cursor,
    EventChange,
    EventLink,
    EventRemoved,
    Issue,
    Link,
    LinkKind,
    Outcome,
    OutlookEvent,
    PersonRef,
    StreamKind,
    UserConfig,
)
from shared.ports.crm import CrmPort
from shared.ports.graph import CalendarSource
from shared.ports.state import StateStore
from shared.sync import calendar_plan as plan
from shared.sync.calendar_withdraw import (
    SERIES_CHECK_EVERY,
    STREAM,
    CalendarPage,
    Withdrawals,
    at_pending_key,
    decision,
    series_check_due,
)
from shared.sync.keyed_write import Written, write_keyed
from shared.sync.runner import Run, advanced
from shared.sync.stream import Reading

ROLL_OVER_AFTER = timedelta(days=1)
MAX_CONSECUTIVE_CRM_FAILURES = 3
LOOKUP_CHUNK = 200
NO_MASTER = "series master unavailable: free/busy data alone never becomes an appointment"
COLLIDED = (
    "its iCalUId was already taken by another organizer's meeting: captured separately under a key of its own"
)

Masters = dict[str, OutlookEvent | None]


class CalendarStream:
    kind: StreamKind = StreamKind.CALENDAR
    stats: tuple[str, ...] = (
        "captured",
        "unchanged",
        "skipped",
        "removed",
        "cancelled",
        "kept",
        "collisions",
    )
    totals: tuple[str, ...] = ("captured", "skipped", "failed", "cancelled", "collisions")
    probed: bool = True

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
        self._withdrawals = Withdrawals(state, crm, source)
        self._body_limit = min(body_limit, crm.capabilities.journal_body_limit or body_limit)
        self._subject_limit = crm.capabilities.subject_limit
        self._series_check_every = series_check_every
        self._clock = clock

    # -- the sweep's questions -----------------------------------------------------------------------

    def job_anyway(self, config: UserConfig, cursor: Cursor, now: datetime) -> bool:
        """The window moves forward, or the series check is due."""
        return roll_over_due(cursor, now) or series_check_due(cursor, now, self._series_check_every)

    crm_side: bool = False

    async def crm_changed(self, config: UserConfig, cursor: Cursor) -> bool:
        return False

    def retries(self, issue: Issue) -> bool:
        return True

    # -- a run ---------------------------------------------------------------------------------------

    async def run(self, run: Run, *, fresh_round: bool) -> None:
        cursor = await run.settled()
        if fresh_round or not cursor.link or roll_over_due(cursor, self._clock()):
            run.start_from(self._new_round(cursor, run.config))
            run.stats.add("fresh_rounds")
        masters: Masters = {}
        await run.retry_issues(
            partial(self._source.get_event, run.user), lambda events: self._apply(run, events, masters)
        )

        def start_over(error: GraphError, cursor: Cursor) -> Cursor | None:
            if not isinstance(error, DeltaExpired):
                return None
            run.stats.add("fresh_rounds")
            return self._new_round(cursor, run.config)

        def read(link: str) -> object:
            window = (run.cursor.window_start, run.cursor.window_end) if not link else None
            return self._source.read_page(run.user, link, window)  # type: ignore[arg-type]

        await run.read_round(
            Reading(
                read=read,  # type: ignore[arg-type]
                apply=lambda page: self._apply(run, page.changes, masters),
                start_over=start_over,
                checkpoint=lambda cursor, page: advanced(cursor, page),
            )
        )
        cursor = await run.settled()
        if cursor.calendar.reconciled_round != cursor.calendar.round_id:
            await self._withdrawals.reconcile(run, cursor)
        await self._withdrawals.check_series(run, await run.settled(), self._series_check_every)

    def _new_round(self, cursor: Cursor, config: UserConfig) -> Cursor:
        now = self._clock()
        today = datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC)
        return replace(
            cursor,
            link="",
            link_kind=LinkKind.NONE,
            calendar=replace(cursor.calendar, round_id=uuid.uuid4().hex),
            round_started=now,
            window_start=today - timedelta(days=config.calendar_past_days),
            window_end=today + timedelta(days=config.calendar_future_days),
        )

    # -- a page --------------------------------------------------------------------------------------

    async def _master(self, user: str, master_id: str, masters: Masters) -> OutlookEvent | None:
        if master_id not in masters:
            masters[master_id] = await self._source.get_event(user, master_id) if master_id else None
        return masters[master_id]

    async def _apply(self, run: Run, changes: Sequence[EventChange], masters: Masters) -> CalendarPage:
        page = CalendarPage(round_id=run.cursor.calendar.round_id)
        latest = plan.latest_by_id(changes)
        links = await self._state.get_links(run.user, STREAM, [c.id for c in latest])
        page_masters = [c for c in latest if isinstance(c, OutlookEvent) and c.type == "seriesMaster"]
        for master in page_masters:
            masters[master.id] = master
            page.by_id[master.id] = Link(
                run.user,
                STREAM,
                master.id,
                crm_key=master.ical_uid,
                change_key=master.change_key,
                event=EventLink(master=True, round_id=page.round_id),
            )
        events = [c for c in latest if isinstance(c, OutlookEvent) and c.type != "seriesMaster"]
        keyed = await self._hydrate(run, events, page, masters)
        await self._capture_all(run, keyed, links, page)
        for master in page_masters:
            current = {k.key for k in keyed if k.master is not None and k.master.id == master.id}
            await self._withdrawals.drop_stale(run, master, current, page)
        for removal in (c for c in latest if isinstance(c, EventRemoved)):
            await self._confirm_removal(run, removal.id, links.get(removal.id), page, masters)
        return page.recorded()

    async def _hydrate(
        self, run: Run, events: Sequence[OutlookEvent], page: CalendarPage, masters: Masters
    ) -> list[plan.Keyed]:
        keyed: list[plan.Keyed] = []
        for event in events:
            master = None
            if event.type != "singleInstance":
                master = await self._master(run.user, event.series_master_id, masters)
            full = plan.hydrate(event, master)
            key = plan.appointment_key(full, master) if full is not None else ""
            if full is None or not key:
                run.stats.add("skipped")
                page.decisions.append(decision(run, event.id, event.id, Outcome.SKIPPED, NO_MASTER))
                continue
            keyed.append(plan.Keyed(full, key, master))
        return await self._withdrawals.own_keys(keyed, page)

    async def _capture_all(
        self, run: Run, keyed: Sequence[plan.Keyed], links: dict[str, Link], page: CalendarPage
    ) -> None:
        config = run.config
        inputs = plan.Inputs(keyed, links, {}, config.upn, config.calendar_policy, config.calendar_category)
        inputs = replace(inputs, matches=await self._lookup(plan.addresses(inputs)))
        captures: list[plan.Capture] = []
        for action in plan.plan(inputs):
            if isinstance(action, plan.Skip):
                run.stats.add("skipped")
                page.decisions.append(
                    decision(run, action.key, action.event_id, Outcome.SKIPPED, action.reason)
                )
            elif isinstance(action, plan.Withdraw):
                await self._withdrawals.withdraw(run, action.link, page, by_organizer=True)
            else:
                captures.append(action)
        # A meeting seen for the first time is linked before its appointment is written: a worker that
        # dies between the CRM write and the page's links would otherwise leave an appointment no link
        # leads to, which the meeting's later deletion (or a fresh round's reconciliation) never finds.
        first = [self._link(run, c.keyed, page.round_id) for c in captures if c.previous is None]
        # The same for a new key (a rescheduled series): noted on the old link, which keeps its key so the
        # old appointment is still withdrawn; a removal found later withdraws the new key too.
        first += [
            replace(c.previous, event=replace(c.previous.event, pending_key=c.keyed.key))
            for c in captures
            if c.previous is not None
            and c.previous.crm_key not in ("", c.keyed.key)
            and c.previous.event.pending_key != c.keyed.key
        ]
        if first:
            await self._state.put_links(first)
        for c in captures:  # a new key a dead worker wrote, and the meeting moved on again
            old = c.previous
            if old is not None and old.event.pending_key not in ("", c.keyed.key, old.crm_key):
                await self._withdrawals.withdraw(
                    run, at_pending_key(old), page, keep_link=True, pending=False
                )
        failures = 0
        for c in captures:
            failures = await self._capture(run, c, page, failures)
            old, captured = c.previous, page.by_id.get(c.keyed.event.id)
            if (
                old is not None
                and old.crm_key not in ("", c.keyed.key)
                and captured is not None
                and captured.crm_key == c.keyed.key
                and (old.item_id, old.crm_key) not in page.withdrawn
            ):  # re-keyed (a rescheduled series), also when retried alone: its old key is withdrawn
                await self._withdrawals.withdraw(run, old, page, keep_link=True, pending=False)

    async def _capture(self, run: Run, capture: plan.Capture, page: CalendarPage, failures: int) -> int:
        """Write one appointment; a CRM failure becomes an issue, and the third retryable failure in a
        row stops the page. Returns the retryable failures in a row."""
        event, key, master = capture.keyed.event, capture.keyed.key, capture.keyed.master
        appointment = plan.build_appointment(
            event,
            key,
            master.ical_uid if master else "",
            owner=run.config.owner,
            people=capture.people,
            body_limit=self._body_limit,
            seen_by=(run.user.lower(),),
            subject_limit=self._subject_limit,
        )
        if key in page.collided:
            appointment = plan.APPOINTMENTS.rekey(appointment, key)  # its series goes under its own key too
        try:
            written: Written = await write_keyed(
                self._state,
                appointment,
                run.user,
                plan.APPOINTMENTS,
                upsert=self._crm.upsert_appointment,
                doubt_first=True,
            )
        except CrmError as error:
            run.stats.add("failed")
            await run.note_issue(key, f"CRM: {error}", event.id)
            page.decisions.append(decision(run, key, event.id, Outcome.FAILED, f"CRM: {error}"))
            if isinstance(error, CrmRetryableError):
                failures += 1
                if failures >= MAX_CONSECUTIVE_CRM_FAILURES:
                    raise
            return failures
        run.stats.add("captured" if written.changed else "unchanged")
        reason = capture.reason
        if key in page.collided or written.collided:
            reason = f"{reason}; {COLLIDED}"
            run.stats.add("collisions", written.changed)  # counted once: when its own appointment is written
        page.by_id[event.id] = self._link(run, replace(capture.keyed, key=written.key), page.round_id)
        page.decisions.append(decision(run, key, event.id, Outcome.SYNCED, reason, crm_key=written.key))
        return 0

    @staticmethod
    def _link(run: Run, keyed: plan.Keyed, round_id: str) -> Link:
        event = keyed.event
        return Link(
            run.user,
            STREAM,
            event.id,
            crm_key=keyed.key,
            change_key=event.change_key,
            event=EventLink(
                series=keyed.master.id if keyed.master else "",
                start=event.start,
                end=event.end,
                round_id=round_id,
            ),
        )

    async def _lookup(self, addresses: Sequence[str]) -> dict[str, list[PersonRef]]:
        found: dict[str, list[PersonRef]] = {}
        for start in range(0, len(addresses), LOOKUP_CHUNK):
            found.update(await self._crm.find_people(addresses[start : start + LOOKUP_CHUNK]))
        return found

    async def _confirm_removal(
        self, run: Run, item_id: str, link: Link | None, page: CalendarPage, masters: Masters
    ) -> None:
        """`@removed` means deleted *or* out of the window: only a 404 withdraws the meeting."""
        if link is None or link.event.from_crm:
            return
        event = await self._source.get_event(run.user, item_id)
        if link.event.master:
            if event is None:
                for member in await self._withdrawals.members(run.user, item_id):
                    await self._withdrawals.withdraw(run, member, page)
                await self._state.delete_link(run.user, STREAM, item_id)
                page.by_id.pop(item_id, None)
            return
        if event is None:
            await self._withdrawals.withdraw(run, link, page)
            return
        run.stats.add("kept")  # still there, outside the window: keep it, with its new times
        master = (
            await self._master(run.user, event.series_master_id, masters) if event.series_master_id else None
        )
        full = plan.hydrate(event, master)
        key = plan.appointment_key(full, master) if full is not None else ""
        if full is not None and key:
            [own] = await self._withdrawals.own_keys([plan.Keyed(full, key, master)], page)
            if own.key != link.crm_key:
                await self._withdrawals.withdraw(run, link, page, pending=False)
            await self._capture_all(run, [own], {}, page)


def roll_over_due(cursor: Cursor, now: datetime) -> bool:
    """A finished round older than a day: the next run starts a new one so the window moves forward."""
    return (
        cursor.link_kind == LinkKind.DELTA
        and cursor.round_started is not None
        and now - cursor.round_started >= ROLL_OVER_AFTER
    )


__all__ = ["CalendarProgress", "CalendarStream", "roll_over_due"]
