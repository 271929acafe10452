"""The mail stream: one folder of one mailbox, read by message delta, written to the CRM as journals.

Order of work per page (docs/architecture.md §3): read the page → decide (pure, mail_plan) →
write journals (idempotent upserts keyed by internetMessageId, merged across mailboxes through
SyncKeys) → record decisions → save the page's nextLink (or the round's deltaLink) conditionally on
the cursor's ETag → renew the lease. A crash anywhere re-reads the last saved page and rewrites
nothing new. Items the CRM refuses go to SyncIssues with their reason and are retried by later runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from shared.crm.port import CrmPort
from shared.errors import (
    CrmError,
    CrmRetryableError,
    DeltaExpired,
    GraphError,
    GraphNotFound,
)
from shared.model import Journal, MailMessage, MessageChange, MessageRemoved, PersonRef
from shared.state.port import Cursor, Decision, Issue, Lease, StateStore
from shared.sync import mail_plan
from shared.sync.keyed_write import Written, write_keyed_many
from shared.sync.ports import MailSource
from shared.users import UserConfig

if TYPE_CHECKING:  # keeps msgraph out of the function app's import (cold start)
    from shared.graph.mail import MailPage

logger = logging.getLogger(__name__)

LEASE_SECONDS = 300.0
FILTER_CAP = 5000  # Graph ends a message delta round with $filter after this many messages
MAX_ISSUE_RETRIES_PER_RUN = 50
MAX_CONSECUTIVE_CRM_FAILURES = 3  # then the CRM is down, not one item bad: stop without checkpointing
LOOKUP_CHUNK = 200
COLLIDED = (
    "its Message-ID was already taken by another message (another sender or sent time): "
    "journaled separately under a key of its own"
)


@dataclass
class MailStats:
    pages: int = 0
    journaled: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    removed: int = 0
    issues_retried: int = 0
    fresh_rounds: int = 0
    collisions: int = 0  # messages that reused another message's Message-ID

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _PageResult:
    decisions: list[Decision] = field(default_factory=list)
    consecutive_crm_failures: int = 0


def latest_by_id(changes: Sequence[MessageChange]) -> list[MessageChange]:
    """Graph may repeat an item within a round; the last occurrence wins (a removal beats an earlier add)."""
    last: dict[str, MessageChange] = {}
    for change in changes:
        last.pop(change.id, None)
        last[change.id] = change
    return list(last.values())


class MailStream:
    def __init__(
        self,
        state: StateStore,
        crm: CrmPort,
        source: MailSource,
        *,
        org_domains: Sequence[str] = (),
        body_limit: int = 20000,
        filter_cap: int = FILTER_CAP,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._filter_cap = filter_cap
        self._state = state
        self._crm = crm
        self._source = source
        self._org_domains = tuple(org_domains)
        caps = crm.capabilities
        self._body_limit = min(body_limit, caps.journal_body_limit or body_limit)
        self._subject_limit = caps.subject_limit
        self._clock = clock
        self._folder_ids: dict[tuple[str, str], str] = {}  # (user, folder name) -> folder id

    async def run(
        self,
        config: UserConfig,
        stream: str,
        lease: Lease,
        *,
        fresh_round: bool,
        progress: Callable[[str, Mapping[str, int]], None] | None = None,
    ) -> tuple[MailStats, Lease]:
        user = config.upn
        stats = MailStats()
        cursor = await self._state.get_cursor(user, stream)
        if fresh_round or not cursor.link:
            cursor = self._new_round(cursor)
            stats.fresh_rounds += 1
        lease = await self._retry_issues(config, stream, lease, stats)
        book = _Bookkeeping(self._state, user, stream, cursor, lease, progress)
        try:
            if cursor.extra.get("backfill"):  # a capped first round's listing was cut short: finish it
                await self._backfill(config, stream, book, stats)
            await self._round(config, stream, book, stats)
            if (await book.settled())[0].extra.get("backfill"):  # the round was capped: list the rest
                await self._backfill(config, stream, book, stats)
            return stats, (await book.settled())[1]
        except BaseException as error:
            await book.abandon(error)
            raise

    async def _round(self, config: UserConfig, stream: str, book: _Bookkeeping, stats: MailStats) -> None:
        """Read delta pages to the round's deltaLink. Page N+1 is read while page N is written, and
        page N's bookkeeping runs while page N+1 is written (`_Bookkeeping`)."""
        user, folder = config.upn, stream.partition(":")[2]
        cursor = book.cursor
        restarts = 0
        ahead: asyncio.Task[MailPage | Exception] | None = None
        try:
            while True:
                since = (
                    cursor.round_started - timedelta(days=config.days_back)
                    if not cursor.link and cursor.round_started
                    else None
                )
                given, ahead = ahead, None
                try:
                    if given is None:
                        page = await self._source.read_page(user, folder, cursor.link, since)
                    else:
                        page = _read(await given)
                except (DeltaExpired, GraphNotFound) as error:
                    # an expired token, or a stored link whose folder was deleted and recreated: start over
                    # by the folder's configured name; a fresh round that 404s means the folder is gone
                    restarts += 1
                    if restarts > 2 or (isinstance(error, GraphNotFound) and not cursor.link):
                        raise
                    logger.info(
                        "stored link unusable (%s) stream=%s: starting a fresh round", error.status, stream
                    )
                    cursor = self._new_round((await book.settled())[0])
                    book.restart(cursor)
                    stats.fresh_rounds += 1
                    continue
                stats.pages += 1
                before = stats.as_dict()
                result, ahead = await self._apply_reading_ahead(
                    config,
                    stream,
                    page,
                    stats,
                    partial(self._source.read_page, user, folder, page.next_link, None),
                )
                link, kind = (page.next_link, "next") if page.next_link else (page.delta_link, "delta")
                if not link:
                    raise GraphError("Graph returned a delta page with neither nextLink nor deltaLink")
                cursor = (await book.settled())[0]
                extra = _counted(cursor, before, stats, self._clock())
                if since is not None or extra.get("roundFiltered"):
                    extra["roundFiltered"] = True
                    received = [c for c in page.changes if isinstance(c, MailMessage)]
                    extra["roundItems"] = int(extra.get("roundItems", 0)) + len(received)
                    if found := _oldest(received, extra.get("roundOldest")):
                        extra["roundOldest"] = found
                capped = kind == "delta" and extra.pop("roundFiltered", False)
                oldest = str(extra.pop("roundOldest", "")) if kind == "delta" else ""
                if capped and int(extra.pop("roundItems", 0)) >= self._filter_cap and cursor.round_started:
                    # Graph ends a filtered round at 5,000 messages. The round is ordered newest first, so
                    # it holds the newest 5,000: list only the messages received at or before the oldest
                    # of them (the rest of the window); newer arrivals come through the deltaLink.
                    window = cursor.round_started - timedelta(days=config.days_back)
                    extra["backfill"] = {"link": "", "since": window.isoformat()}
                    if oldest:
                        extra["backfill"]["until"] = oldest
                cursor = replace(cursor, link=link, link_kind=kind, extra=extra)
                book.start(result.decisions, cursor, stats)
                if kind == "delta":
                    return
        except BaseException:  # a page read ahead is not left running behind a failed run
            if ahead is not None:
                ahead.cancel()
            raise

    async def _backfill(self, config: UserConfig, stream: str, book: _Bookkeeping, stats: MailStats) -> None:
        """List the part of the window a capped round did not return, page by page: the messages
        received since the window's start and at or before the oldest message of the round (`until`;
        the whole window when the cursor has none). The listing's link is checkpointed in the cursor
        with each page, so a crash resumes the listing where it stopped. As in `_round`, the next page
        is read, and the page before is checkpointed, while a page is written."""
        user, folder = config.upn, stream.partition(":")[2]
        state = dict((await book.settled())[0].extra["backfill"])
        since = datetime.fromisoformat(str(state["since"]))
        until = datetime.fromisoformat(str(state["until"])) if state.get("until") else None
        ahead: asyncio.Task[MailPage | Exception] | None = None
        try:
            while True:
                given, ahead = ahead, None
                try:
                    if given is None:
                        page = await self._source.list_page(
                            user, folder, str(state.get("link", "")), since, until
                        )
                    else:
                        page = _read(await given)
                except (DeltaExpired, GraphNotFound):
                    if not state.get("link"):
                        raise
                    state["link"] = ""  # the listing's link expired: list again from the start (idempotent)
                    continue
                stats.pages += 1
                before = stats.as_dict()
                result, ahead = await self._apply_reading_ahead(
                    config,
                    stream,
                    page,
                    stats,
                    partial(self._source.list_page, user, folder, page.next_link, since, until),
                )
                cursor = (await book.settled())[0]
                extra = _counted(cursor, before, stats, self._clock())
                if page.next_link:
                    state["link"] = page.next_link
                    extra["backfill"] = dict(state)
                else:
                    extra.pop("backfill", None)
                book.start(result.decisions, replace(cursor, extra=extra), stats)
                if not page.next_link:
                    return
        except BaseException:  # a page read ahead is not left running behind a failed run
            if ahead is not None:
                ahead.cancel()
            raise

    async def _apply_reading_ahead(
        self,
        config: UserConfig,
        stream: str,
        page: MailPage,
        stats: MailStats,
        read_next: Callable[[], Awaitable[MailPage]],
    ) -> tuple[_PageResult, asyncio.Task[MailPage | Exception] | None]:
        """Apply `page` while the page after it (if any) is read by `read_next`."""
        ahead = _prefetch(read_next) if page.next_link else None
        try:
            return await self._apply(config, stream, page.changes, stats), ahead
        except BaseException:
            if ahead is not None:
                ahead.cancel()
            raise

    def _new_round(self, cursor: Cursor) -> Cursor:
        extra = {
            k: v
            for k, v in cursor.extra.items()
            if k not in {"backfill", "roundFiltered", "roundItems", "roundOldest"}
        }
        return replace(cursor, link="", link_kind="", round_started=self._clock(), extra=extra)

    async def _apply(
        self, config: UserConfig, stream: str, changes: Sequence[MessageChange], stats: MailStats
    ) -> _PageResult:
        result = _PageResult()
        messages: list[MailMessage] = []
        removed: list[str] = []
        for change in latest_by_id(changes):
            if isinstance(change, MessageRemoved):
                stats.removed += 1  # left this folder (moved or deleted): the journal stays, as evidence
                removed.append(change.id)
            else:
                messages.append(change)
        messages += await self._still_here(config.upn, stream.partition(":")[2], removed)
        candidates: list[MailMessage] = []
        for message in messages:
            verdict = mail_plan.prefilter(message, config, self._org_domains)
            if verdict.capture:
                candidates.append(message)
            else:
                stats.skipped += 1
                result.decisions.append(self._decision(config, stream, message, "skipped", verdict.reason))
        matches = await self._lookup(config, candidates)
        chosen: list[tuple[MailMessage, Sequence[PersonRef], str]] = []
        for message in candidates:
            people = mail_plan.people_on(message, config, matches)
            verdict = mail_plan.select(message, config, people)
            if not verdict.capture:
                stats.skipped += 1
                result.decisions.append(self._decision(config, stream, message, "skipped", verdict.reason))
                continue
            chosen.append((message, people, verdict.reason))
        # a page's journals go together: their key rows read at once, one bulk CRM write, the key rows
        # written in a transaction per partition (the checkpoint still follows the whole page)
        outcomes = await self._write(config, [(message, people) for message, people, _ in chosen])
        for (message, _, reason), outcome in zip(chosen, outcomes, strict=True):
            await self._capture(config, stream, message, reason, outcome, stats, result)
        return result

    async def _capture(
        self,
        config: UserConfig,
        stream: str,
        message: MailMessage,
        reason: str,
        outcome: Written | CrmError,
        stats: MailStats,
        result: _PageResult,
    ) -> bool:
        """Count one message's outcome; a CRM failure becomes an issue (retried by later runs), and
        the third retryable failure in a row stops the page (the CRM is down, not one item bad)."""
        key = mail_plan.journal_key(message, config.upn)
        if isinstance(outcome, CrmError):
            error = outcome
            stats.failed += 1
            now = self._clock()
            await self._state.record_issue(
                Issue(user=config.upn, item_key=key, stream=stream, reason=f"CRM: {error}", first_seen=now,
                      last_seen=now, item_id=message.id)
            )  # fmt: skip
            result.decisions.append(self._decision(config, stream, message, "failed", f"CRM: {error}"))
            if isinstance(error, CrmRetryableError):
                result.consecutive_crm_failures += 1
                if result.consecutive_crm_failures >= MAX_CONSECUTIVE_CRM_FAILURES:
                    raise error
            return False
        result.consecutive_crm_failures = 0
        if outcome.changed:
            stats.journaled += 1
        else:
            stats.unchanged += 1
        if outcome.collided:
            reason = f"{reason}; {COLLIDED}"
            stats.collisions += outcome.changed  # counted once: when its own journal is first written
        result.decisions.append(
            self._decision(config, stream, message, "synced", reason, crm_key=outcome.key)
        )
        return True

    async def _still_here(self, user: str, folder: str, removed: Sequence[str]) -> list[MailMessage]:
        """The removed messages that are in this folder after all. With immutable ids, a message moved
        A→B→A between two rounds surfaces in A only as `@removed` (docs/graph-behaviour.md §1.2), so an
        `@removed` is checked at mailbox level: one GET by id, and the message is taken when it is back."""
        if not removed:
            return []
        here = self._folder_ids.get((user.lower(), folder))
        if here is None:
            here = self._folder_ids[(user.lower(), folder)] = await self._source.folder_id(user, folder)
        back: list[MailMessage] = []
        for message_id in removed:
            message = await self._source.get_message(user, message_id)
            if message is not None and message.folder_id == here:
                back.append(message)
        return back

    async def _lookup(
        self, config: UserConfig, messages: Sequence[MailMessage]
    ) -> dict[str, list[PersonRef]]:
        addresses = sorted({a.normalized for m in messages for a in mail_plan.others(m, config.upn)})
        found: dict[str, list[PersonRef]] = {}
        for start in range(0, len(addresses), LOOKUP_CHUNK):
            found.update(await self._crm.find_people(addresses[start : start + LOOKUP_CHUNK]))
        return found

    async def _write(
        self, config: UserConfig, chosen: Sequence[tuple[MailMessage, Sequence[PersonRef]]]
    ) -> list[Written | CrmError]:
        """Write the journal(s) of each message. Per message: how its (first) journal was written, or
        the CrmError that stopped one of its journals."""
        units: list[Journal] = []
        owners: list[int] = []  # the message each journal unit belongs to
        for n, (message, people) in enumerate(chosen):
            journal = mail_plan.build_journal(
                message, config, people, body_limit=self._body_limit, subject_limit=self._subject_limit,
                seen_by=(config.upn.lower(),),
            )  # fmt: skip
            split = [journal] if self._crm.capabilities.multi_person_journal else _one_per_person(journal)
            units += split
            owners += [n] * len(split)
        written = await write_keyed_many(
            self._state, units, config.upn, mail_plan.JOURNALS, upsert_many=self._crm.upsert_journals,
            upsert=self._crm.upsert_journal, load=self._crm.get_journal,
        )  # fmt: skip
        outcomes: list[Written | CrmError | None] = [None] * len(chosen)
        for n, outcome in zip(owners, written, strict=True):
            current = outcomes[n]
            if current is None or isinstance(outcome, CrmError) and not isinstance(current, CrmError):
                outcomes[n] = outcome  # the first unit's outcome, unless a later unit failed
            elif isinstance(current, Written) and isinstance(outcome, Written):
                outcomes[n] = replace(
                    current,
                    changed=current.changed or outcome.changed,
                    collided=current.collided or outcome.collided,
                )
        return [o if o is not None else Written(False, "") for o in outcomes]

    async def _retry_issues(self, config: UserConfig, stream: str, lease: Lease, stats: MailStats) -> Lease:
        issues = (await self._state.list_issues(config.upn, stream))[:MAX_ISSUE_RETRIES_PER_RUN]
        for issue in issues:
            stats.issues_retried += 1
            message = await self._source.get_message(config.upn, issue.item_id) if issue.item_id else None
            if message is None:
                gone = "the message was deleted in Outlook before the CRM accepted it"
                await self._state.record_decisions(
                    [
                        Decision(
                            config.upn,
                            issue.item_key,
                            stream,
                            outcome="failed",
                            reason=gone,
                            at=self._clock(),
                        )
                    ]
                )
                await self._state.resolve_issue(config.upn, issue.item_key)
                continue
            result = await self._apply(config, stream, [message], stats)
            await self._state.record_decisions(result.decisions)
            if not any(d.outcome == "failed" for d in result.decisions):
                await self._state.resolve_issue(config.upn, issue.item_key)
            lease = await self._state.renew(lease, LEASE_SECONDS)
        return lease

    def _decision(
        self,
        config: UserConfig,
        stream: str,
        message: MailMessage,
        outcome: str,
        reason: str,
        crm_key: str = "",
    ) -> Decision:
        return Decision(
            user=config.upn,
            item_key=mail_plan.journal_key(message, config.upn),
            stream=stream,
            outcome=outcome,
            reason=reason,
            at=self._clock(),
            crm_key=crm_key,
            details={"graphId": message.id, "folder": message.folder_id},
        )


class _Bookkeeping:
    """What follows a page's effects: its decisions (the sync log), then its cursor save and the lease
    renewal. It runs while the next page is written; `settled()` waits for it, and `start()` takes the
    next page only after that, so cursors are saved in page order, each after the effects of its page
    and of every page before it (the sync contract)."""

    def __init__(
        self,
        state: StateStore,
        user: str,
        stream: str,
        cursor: Cursor,
        lease: Lease,
        progress: Callable[[str, Mapping[str, int]], None] | None = None,
    ) -> None:
        self._state = state
        self._progress = progress
        self._user = user
        self._stream = stream
        self._cursor = cursor
        self._lease = lease
        self._task: asyncio.Task[tuple[Cursor, Lease]] | None = None

    @property
    def cursor(self) -> Cursor:
        """The cursor of the last page taken (saved, or being saved)."""
        return self._cursor

    async def settled(self) -> tuple[Cursor, Lease]:
        """The saved cursor (with its ETag) and the renewed lease, once the last page's bookkeeping
        is done. Raises what it raised."""
        if self._task is not None:
            task, self._task = self._task, None
            self._cursor, self._lease = await task
        return self._cursor, self._lease

    def start(self, decisions: Sequence[Decision], cursor: Cursor, stats: MailStats) -> None:
        """Record a page's decisions, then save `cursor` (built on the settled one) and renew the lease;
        report the run's `stats` so far."""
        if self._task is not None:
            raise RuntimeError("the page before is not settled")
        self._cursor = cursor
        self._task = asyncio.create_task(self._keep(decisions, cursor, self._lease))
        if self._progress is not None:
            self._progress(self._stream, stats.as_dict())

    def restart(self, cursor: Cursor) -> None:
        """Go on from `cursor` (a fresh round, built on the settled cursor), saved with the next page."""
        if self._task is not None:
            raise RuntimeError("the page before is not settled")
        self._cursor = cursor

    async def abandon(self, error: BaseException) -> None:
        """The run failed with `error`. After an error, the last page's bookkeeping still finishes (its
        effects are done, so its checkpoint is kept); after a crash or a cancellation it is cancelled."""
        task, self._task = self._task, None
        if task is None:
            return
        if not isinstance(error, Exception):
            task.cancel()
            return
        try:
            await task
        except Exception as failed:  # noqa: BLE001 - the run's own error is the one raised
            logger.warning(
                "checkpoint of the last page failed too (%s) stream=%s", type(failed).__name__, self._stream
            )

    async def _keep(
        self, decisions: Sequence[Decision], cursor: Cursor, lease: Lease
    ) -> tuple[Cursor, Lease]:
        await self._state.record_decisions(decisions)
        cursor = await self._state.save_cursor(self._user, self._stream, cursor)
        return cursor, await self._state.renew(lease, LEASE_SECONDS)


def _prefetch(read: Callable[[], Awaitable[MailPage]]) -> asyncio.Task[MailPage | Exception]:
    """Read a page in the background. Its error is kept and raised when the page loop gets to it (by
    `_read`), so a failed read ahead never stops the writes of the page before it."""

    async def kept() -> MailPage | Exception:
        try:
            return await read()
        except Exception as error:  # noqa: BLE001 - handed to the page loop, which handles or raises it
            return error

    return asyncio.create_task(kept())


def _read(page: MailPage | Exception) -> MailPage:
    if isinstance(page, Exception):
        raise page
    return page


def _one_per_person(journal: Journal) -> list[Journal]:
    """For CRMs whose journal has one home record: one journal per linked person."""
    if not journal.people:
        return [journal]
    return [replace(journal, key=f"{journal.key}|{p.id}", people=(p,)) for p in journal.people]


def _oldest(messages: Sequence[MailMessage], known: Any) -> str:
    """The earliest receivedDateTime among `messages` and `known` (ISO text), as ISO text ("" if none)."""
    times = [m.received_at for m in messages if m.received_at is not None]
    if isinstance(known, str) and known:
        times.append(datetime.fromisoformat(known))
    return min(times).isoformat() if times else ""


def _counted(cursor: Cursor, before: dict[str, int], stats: MailStats, now: datetime) -> dict[str, Any]:
    """The cursor's running totals plus what this page added (saved with the page's link)."""
    extra = dict(cursor.extra)
    totals = dict(extra.get("totals", {}))
    for name in ("journaled", "skipped", "failed", "collisions"):
        totals[name] = int(totals.get(name, 0)) + getattr(stats, name) - before[name]
    extra["totals"] = totals
    extra["lastPageUtc"] = now.isoformat()
    return extra
