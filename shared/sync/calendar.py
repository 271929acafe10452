"""The calendar stream: a user's primary calendar, read by calendarView delta over a window, written to
the CRM as appointments (the CRM → Outlook direction is its own stream, `shared/sync/push.py`).

A page: link rows of series masters → the events captured (`shared/sync/calendar_capture.py`) → a
series that arrived whole has its stale occurrences withdrawn → removals confirmed by GET
(`shared/sync/calendar_withdraw.py`) → the runner records links and decisions, then saves the page's
link.

The window (`CalendarPastDays` / `CalendarFutureDays`) is frozen into a round's token, so it is kept
in the cursor and moved forward by a fresh round once the round is a day old; the keys make the new
round rewrite nothing it already wrote. After a round: the reconciliation (once per round) and the
series check (`shared/sync/calendar_withdraw.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from functools import partial

from shared.errors import DeltaExpired, GraphError
from shared.model import (
    Cursor,
    EventChange,
    EventLink,
    EventRemoved,
    Issue,
    Link,
    LinkKind,
    OutlookEvent,
    Page,
    StreamId,
    StreamKind,
    UserConfig,
)
from shared.ports.crm import CrmPort
from shared.ports.graph import CalendarSource
from shared.ports.state import StateStore
from shared.sync import calendar_plan as plan
from shared.sync.calendar_capture import Captures, Masters
from shared.sync.calendar_withdraw import (
    SERIES_CHECK_EVERY,
    STREAM,
    CalendarPage,
    Withdrawals,
    series_check_due,
)
from shared.sync.runner import Run, advanced
from shared.sync.stream import Reading

ROLL_OVER_AFTER = timedelta(days=1)


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
        self._captures = Captures(
            state,
            crm,
            source,
            self._withdrawals,
            body_limit=min(body_limit, crm.capabilities.journal_body_limit or body_limit),
            subject_limit=crm.capabilities.subject_limit,
        )
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

    def subscription(self, config: UserConfig, stream: StreamId, cursor: Cursor) -> str | None:
        return f"users/{config.upn}/events"

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

        def read(link: str) -> Awaitable[Page[EventChange]]:
            start, end = run.cursor.window_start, run.cursor.window_end
            window = (start, end) if not link and start is not None and end is not None else None
            return self._source.read_page(run.user, link, window)

        await run.read_round(
            Reading(
                read=read,
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
        keyed = await self._captures.hydrate(run, events, page, masters)
        await self._captures.capture_all(run, keyed, links, page)
        for master in page_masters:
            current = {k.key for k in keyed if k.master is not None and k.master.id == master.id}
            await self._withdrawals.drop_stale(run, master, current, page)
        for removal in (c for c in latest if isinstance(c, EventRemoved)):
            await self._captures.confirm_removal(run, removal.id, links.get(removal.id), page, masters)
        return page.recorded()


def roll_over_due(cursor: Cursor, now: datetime) -> bool:
    """A finished round older than a day: the next run starts a new one so the window moves forward."""
    return (
        cursor.link_kind == LinkKind.DELTA
        and cursor.round_started is not None
        and now - cursor.round_started >= ROLL_OVER_AFTER
    )
