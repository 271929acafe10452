"""The one page loop, and everything a stream's run shares: checkpoints after effects, the lease kept
alive, items that failed before retried, counters and running totals.

    Runner.run(stream, config, stream id, lease)
      └ Run: the saved cursor, the lease, the counters
          └ stream.run(run)            the stream decides what to read and what it means
              ├ run.retry_issues(…)    items that failed before, fetched again and applied
              ├ run.read_round(…)      read → apply → record → checkpoint, page after page
              └ run.save(…)            a cursor saved outside a page (a round read whole, a check done)

The sync contract (docs/architecture.md): a page's cursor is saved only after the page's effects and
the rows that record them (links, then decisions), conditionally on the cursor's ETag, so a cursor
never goes past an item that is not done, and never backwards. A link that expired (410) or no longer
leads anywhere (404) starts the round over, at most twice in a run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from shared.errors import DeltaExpired, GraphError, GraphNotFound
from shared.model import Cursor, Decision, Issue, Lease, LinkKind, Outcome, Page, StreamId, UserConfig
from shared.ports.state import StateStore
from shared.sync.stream import COMMON_STATS, Applied, Progress, Reading, Stats, Stream

logger = logging.getLogger(__name__)

T = TypeVar("T")
Item = TypeVar("Item")
LEASE_SECONDS = 300.0
MAX_RESTARTS = 2  # a round started over more often than this in one run gives up with the error
MAX_ISSUE_RETRIES_PER_RUN = 50


def advanced(cursor: Cursor, page: Page[T]) -> Cursor:
    """The cursor past a delta page: its nextLink (more to read) or the round's deltaLink."""
    if page.next_link:
        return replace(cursor, link=page.next_link, link_kind=LinkKind.NEXT)
    if not page.delta_link:
        raise GraphError("Graph returned a delta page with neither nextLink nor deltaLink")
    return replace(cursor, link=page.delta_link, link_kind=LinkKind.DELTA)


class Runner:
    def __init__(
        self, state: StateStore, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._state = state
        self._clock = clock

    async def run(
        self,
        stream: Stream,
        config: UserConfig,
        stream_id: StreamId,
        lease: Lease,
        *,
        fresh_round: bool,
        progress: Progress | None = None,
    ) -> tuple[Stats, Lease]:
        cursor = await self._state.get_cursor(config.upn, stream_id)
        run = Run(self._state, stream, config, stream_id, cursor, lease, self._clock, progress)
        try:
            await stream.run(run, fresh_round=fresh_round)
        except BaseException as error:
            await run.abandon(error)
            raise
        await run.settled()
        return run.stats, run.lease


class Run:
    """One run of one stream of one user."""

    def __init__(
        self,
        state: StateStore,
        stream: Stream,
        config: UserConfig,
        stream_id: StreamId,
        cursor: Cursor,
        lease: Lease,
        clock: Callable[[], datetime],
        progress: Progress | None,
    ) -> None:
        self.state = state
        self.config = config
        self.stream = stream_id
        self.stats = Stats(COMMON_STATS + stream.stats)
        self._totals = stream.totals
        self._counted = self.stats.as_dict()  # the counters the saved totals already hold
        self._cursor = cursor
        self._lease = lease
        self._clock = clock
        self._progress = progress
        self._pending: asyncio.Task[tuple[Cursor, Lease]] | None = None  # the last page's bookkeeping

    @property
    def user(self) -> str:
        return self.config.upn

    @property
    def lease(self) -> Lease:
        return self._lease

    @property
    def cursor(self) -> Cursor:
        """The cursor of the last page taken (saved, or being saved: `settled()` waits for it)."""
        return self._cursor

    def now(self) -> datetime:
        return self._clock()

    # -- the cursor ----------------------------------------------------------------------------

    async def settled(self) -> Cursor:
        """The cursor the run goes on from, once the last page's bookkeeping is done (with its ETag).
        Raises what that bookkeeping raised."""
        if self._pending is not None:
            task, self._pending = self._pending, None
            self._cursor, self._lease = await task
        return self._cursor

    def start_from(self, cursor: Cursor) -> None:
        """Go on from `cursor` (a new round built on the settled cursor); saved with the next save."""
        if self._pending is not None:
            raise RuntimeError("the page before is not settled")
        self._cursor = cursor

    def totalled(self, cursor: Cursor) -> Cursor:
        """`cursor` with the running totals of what the run counted since the last save."""
        now = self.stats.as_dict()
        totals = dict(cursor.totals)
        for name in self._totals:
            totals[name] = totals.get(name, 0) + now.get(name, 0) - self._counted.get(name, 0)
        self._counted = now
        return replace(cursor, totals=totals)

    async def save(self, cursor: Cursor) -> Cursor:
        """Save `cursor` (built on the settled one), with the totals counted since the last save."""
        if self._pending is not None:
            raise RuntimeError("the page before is not settled")
        self._cursor = await self.state.save_cursor(self.user, self.stream, self.totalled(cursor))
        return self._cursor

    # -- what runs share ------------------------------------------------------------------------

    async def renew(self) -> None:
        self._lease = await self.state.renew(self._lease, LEASE_SECONDS)

    def report(self) -> None:
        if self._progress is not None:
            self._progress(self.stream, self.stats.as_dict())

    async def record(self, applied: Applied) -> None:
        """The rows that record effects already made: links first, then decisions."""
        if applied.links:
            await self.state.put_links(applied.links)
        if applied.decisions:
            await self.state.record_decisions(applied.decisions)

    def decision(
        self,
        item_key: str,
        outcome: Outcome,
        reason: str,
        *,
        crm_key: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> Decision:
        return Decision(self.user, item_key, self.stream, outcome, reason, self.now(), crm_key, details or {})

    async def retry_issues(
        self,
        fetch: Callable[[str], Awaitable[Item | None]],
        apply: Callable[[Sequence[Item]], Awaitable[Applied]],
        *,
        gone: str = "",
    ) -> None:
        """Items that failed in earlier runs, fetched again by id and applied like a page of one; an
        item that no longer exists is resolved (with a `failed` decision saying `gone`, if given)."""
        issues = (await self.state.list_issues(self.user, self.stream))[:MAX_ISSUE_RETRIES_PER_RUN]
        for issue in issues:
            self.stats.add("issues_retried")
            item = await fetch(issue.item_id) if issue.item_id else None
            if item is None:
                if gone:
                    await self.state.record_decisions([self.decision(issue.item_key, Outcome.FAILED, gone)])
                await self.state.resolve_issue(self.user, issue.item_key)
                continue
            applied = await apply([item])
            await self.record(applied)
            if not applied.failed:
                await self.state.resolve_issue(self.user, issue.item_key)
            await self.renew()

    async def note_issue(self, item_key: str, reason: str, item_id: str = "") -> None:
        now = self.now()
        await self.state.record_issue(
            Issue(self.user, item_key, self.stream, reason, first_seen=now, last_seen=now, item_id=item_id)
        )

    # -- the page loop ---------------------------------------------------------------------------

    async def read_round(self, reading: Reading[T]) -> Page[T]:
        """Read pages from the settled cursor's position to the end of the round (a deltaLink, or a
        listing's last page); each page is applied, recorded and checkpointed in page order. Returns
        the last page."""
        restarts = 0
        link = reading.position(await self.settled())
        ahead: asyncio.Task[Page[T] | Exception] | None = None
        try:
            while True:
                given, ahead = ahead, None
                try:
                    page = _taken(await given) if given is not None else await reading.read(link)
                except (DeltaExpired, GraphNotFound) as error:
                    restarts += 1
                    again = reading.start_over(error, await self.settled())
                    if again is None or restarts > MAX_RESTARTS:
                        raise
                    logger.info("link unusable (%s) stream=%s: reading again", error.status, self.stream.kind)
                    self.start_from(again)
                    link = reading.position(again)
                    continue
                self.stats.add("pages")
                if reading.read_ahead and page.next_link:
                    ahead = _read_ahead(reading.read, page.next_link)
                applied = await reading.apply(page)
                if reading.checkpoint is not None:
                    self._keep(applied, reading.checkpoint(await self.settled(), page))
                    if not reading.read_ahead:
                        await self.settled()
                if not page.next_link:
                    return page
                link = page.next_link
        except BaseException:
            if ahead is not None:  # a page read ahead is not left running behind a failed run
                ahead.cancel()
            raise

    def _keep(self, applied: Applied, cursor: Cursor) -> None:
        """After a page's effects: record it, save `cursor` (with its totals), renew the lease; in the
        background, so the next page is written meanwhile (`settled()` waits for it)."""
        self._cursor = cursor = replace(self.totalled(cursor), last_page=self.now())
        self._pending = asyncio.create_task(self._bookkeeping(applied, cursor, self._lease))
        self.report()

    async def _bookkeeping(self, applied: Applied, cursor: Cursor, lease: Lease) -> tuple[Cursor, Lease]:
        await self.record(applied)
        cursor = await self.state.save_cursor(self.user, self.stream, cursor)
        return cursor, await self.state.renew(lease, LEASE_SECONDS)

    async def abandon(self, error: BaseException) -> None:
        """The run failed with `error`. After an error, the last page's bookkeeping still finishes (its
        effects are done, so its checkpoint is kept); after a crash or a cancellation it is cancelled."""
        task, self._pending = self._pending, None
        if task is None:
            return
        if not isinstance(error, Exception):
            task.cancel()
            return
        try:
            await task
        except Exception as failed:  # noqa: BLE001 - the run's own error is the one raised
            logger.warning(
                "checkpoint of the last page failed too (%s) stream=%s", type(failed).__name__, self.stream
            )


def _read_ahead(read: Callable[[str], Awaitable[Page[T]]], link: str) -> asyncio.Task[Page[T] | Exception]:
    """Read a page in the background. Its error is kept and raised when the page loop gets to it, so a
    failed read ahead never stops the writes of the page before it."""

    async def kept() -> Page[T] | Exception:
        try:
            return await read(link)
        except Exception as error:  # noqa: BLE001 - handed to the page loop, which handles or raises it
            return error

    return asyncio.create_task(kept())


def _taken(page: Page[T] | Exception) -> Page[T]:
    if isinstance(page, Exception):
        raise page
    return page
