"""The mail stream: one folder of one mailbox, read by message delta, written to the CRM as journals.

A page: the messages (a removal is checked by GET: with immutable ids a message moved away and back
shows only as `@removed`) → who the participants are in the CRM → `mail_plan.plan` → the journals
written, merged across mailboxes through SyncKeys (`keyed_write`) → decisions; the runner then saves
the page's link. Items the CRM refuses become issues, retried by later runs.

A first round asks for the messages received in the user's window; Graph ends such a round at 5,000
messages, newest first, so a capped round is followed by a listing of the rest of the window (the
backfill), checkpointed page by page like the round.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial

from shared.errors import CrmError, CrmRetryableError, GraphError, GraphNotFound
from shared.model import (
    Backfill,
    Cursor,
    Decision,
    Issue,
    Journal,
    LinkKind,
    MailMessage,
    MailProgress,
    MessageChange,
    MessageRemoved,
    Outcome,
    Page,
    StreamId,
    StreamKind,
    UserConfig,
)
from shared.ports.crm import CrmPort
from shared.ports.graph import MailSource
from shared.ports.state import StateStore
from shared.sync import mail_plan
from shared.sync.keyed_write import Written, write_keyed_many
from shared.sync.people import people_by_address
from shared.sync.runner import Run, advanced
from shared.sync.stream import Applied, Reading

logger = logging.getLogger(__name__)

FILTER_CAP = 5000  # Graph ends a message delta round with $filter after this many messages
MAX_CONSECUTIVE_CRM_FAILURES = 3  # then the CRM is down, not one item bad: stop without checkpointing
GONE = "the message was deleted in Outlook before the CRM accepted it"
COLLIDED = (
    "its Message-ID was already taken by another message (another sender or sent time): "
    "journaled separately under a key of its own"
)


class MailStream:
    kind: StreamKind = StreamKind.MAIL
    stats: tuple[str, ...] = ("journaled", "unchanged", "skipped", "removed", "collisions")
    totals: tuple[str, ...] = ("journaled", "skipped", "failed", "collisions")
    probed: bool = True

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
        self._state = state
        self._crm = crm
        self._source = source
        self._org_domains = tuple(org_domains)
        self._filter_cap = filter_cap
        self._body_limit = min(body_limit, crm.capabilities.journal_body_limit or body_limit)
        self._subject_limit = crm.capabilities.subject_limit
        self._clock = clock
        self._folder_ids: dict[tuple[str, str], str] = {}  # (user, folder name) -> folder id

    # -- the sweep's questions -----------------------------------------------------------------------

    def job_anyway(self, config: UserConfig, cursor: Cursor, now: datetime) -> bool:
        return False

    crm_side: bool = False

    async def crm_changed(self, config: UserConfig, cursor: Cursor) -> bool:
        return False

    def retries(self, issue: Issue) -> bool:
        return True

    def subscription(self, config: UserConfig, stream: StreamId, cursor: Cursor) -> str | None:
        return f"users/{config.upn}/mailFolders('{stream.scope}')/messages"

    # -- a run ---------------------------------------------------------------------------------------

    async def run(self, run: Run, *, fresh_round: bool) -> None:
        cursor = await run.settled()
        if fresh_round or not cursor.link:
            run.start_from(self._new_round(cursor))
            run.stats.add("fresh_rounds")
        await run.retry_issues(
            partial(self._source.get_message, run.user), partial(self._apply, run), gone=GONE
        )
        if (await run.settled()).mail.backfill:  # a capped first round's listing was cut short: finish it
            await run.read_round(self._backfill(run))
        await run.read_round(self._round(run))
        if (await run.settled()).mail.backfill:  # the round was capped: list the rest of the window
            await run.read_round(self._backfill(run))

    def _new_round(self, cursor: Cursor) -> Cursor:
        return replace(
            cursor, link="", link_kind=LinkKind.NONE, round_started=self._clock(), mail=MailProgress()
        )

    def _round(self, run: Run) -> Reading[MessageChange]:
        """The folder's message delta to the round's deltaLink; a first round asks for the window."""
        config, folder = run.config, run.stream.scope

        def read(link: str) -> Awaitable[Page[MessageChange]]:
            cursor = run.cursor
            since = cursor.round_started - timedelta(days=config.days_back) if cursor.round_started else None
            return self._source.read_page(run.user, folder, link, None if link else since)

        def start_over(error: GraphError, cursor: Cursor) -> Cursor | None:
            # an expired token, or a stored link whose folder was deleted and recreated: start over by the
            # folder's configured name; a fresh round that 404s means the folder is gone
            if isinstance(error, GraphNotFound) and not cursor.link:
                return None
            run.stats.add("fresh_rounds")
            return self._new_round(cursor)

        return Reading(
            read=read,
            apply=lambda page: self._apply(run, page.changes),
            start_over=start_over,
            checkpoint=partial(self._checkpoint, run),
            read_ahead=True,
        )

    def _checkpoint(self, run: Run, cursor: Cursor, page: Page[MessageChange]) -> Cursor:
        """The cursor past a round's page. A filtered (first) round counts what it returned: Graph ends it
        at 5,000 messages, newest first, so a capped round is followed by a listing of the messages
        received since the window's start and at or before the oldest of them (newer arrivals come
        through the deltaLink)."""
        progress = cursor.mail
        if not cursor.link or progress.round_filtered:
            received = [c for c in page.changes if isinstance(c, MailMessage)]
            times = [m.received_at for m in received if m.received_at is not None]
            times += [progress.round_oldest] if progress.round_oldest else []
            progress = replace(
                progress,
                round_filtered=True,
                round_items=progress.round_items + len(received),
                round_oldest=min(times) if times else None,
            )
        cursor = advanced(replace(cursor, mail=progress), page)
        if page.next_link:
            return cursor
        done = MailProgress(backfill=progress.backfill)
        if progress.round_filtered and progress.round_items >= self._filter_cap and cursor.round_started:
            since = cursor.round_started - timedelta(days=run.config.days_back)
            done = replace(done, backfill=Backfill(since=since, until=progress.round_oldest))
        return replace(cursor, mail=done)

    def _backfill(self, run: Run) -> Reading[MessageChange]:
        """The part of the window a capped round did not return, listed page by page (no 5,000 cap);
        the listing's link is saved in the cursor with each page, so a crash resumes it where it stopped."""
        state = run.cursor.mail.backfill
        assert state is not None

        def start_over(error: GraphError, cursor: Cursor) -> Cursor | None:
            listing = cursor.mail.backfill
            if listing is None or not listing.link:
                return None
            return replace(
                cursor, mail=replace(cursor.mail, backfill=replace(listing, link=""))
            )  # idempotent

        def checkpoint(cursor: Cursor, page: Page[MessageChange]) -> Cursor:
            listing = replace(state, link=page.next_link) if page.next_link else None
            return replace(cursor, mail=replace(cursor.mail, backfill=listing))

        return Reading(
            read=lambda link: self._source.list_page(
                run.user, run.stream.scope, link, state.since, state.until
            ),
            apply=lambda page: self._apply(run, page.changes),
            start_over=start_over,
            position=lambda cursor: cursor.mail.backfill.link if cursor.mail.backfill else "",
            checkpoint=checkpoint,
            read_ahead=True,
        )

    # -- a page --------------------------------------------------------------------------------------

    async def _apply(self, run: Run, changes: Sequence[MessageChange]) -> Applied:
        config = run.config
        messages: list[MailMessage] = []
        removed: list[str] = []
        for change in mail_plan.latest_by_id(changes):
            if isinstance(change, MessageRemoved):
                removed.append(change.id)  # left this folder (moved or deleted): the journal stays
            else:
                messages.append(change)
        run.stats.add("removed", len(removed))
        messages += await self._still_here(run.user, run.stream.scope, removed)
        actions = mail_plan.plan(
            mail_plan.Inputs(
                messages=messages,
                config=config,
                org_domains=self._org_domains,
                matches=await people_by_address(
                    self._crm, mail_plan.addresses(messages, config, self._org_domains)
                ),
                body_limit=self._body_limit,
                subject_limit=self._subject_limit,
                multi_person=self._crm.capabilities.multi_person_journal,
            )
        )
        applied = Applied()
        for action in actions:
            if isinstance(action, mail_plan.Skip):
                run.stats.add("skipped")
                applied.decisions.append(self._decision(run, action.message, Outcome.SKIPPED, action.reason))
        captures = [a for a in actions if isinstance(a, mail_plan.Capture)]
        # a page's journals go together: their key rows read at once, one bulk CRM write, the key rows
        # written in a transaction per partition (the checkpoint still follows the whole page)
        outcomes = await self._write(config, captures)
        failures = 0
        for capture, outcome in zip(captures, outcomes, strict=True):
            failures = await self._count(run, capture, outcome, applied, failures)
        return applied

    async def _count(
        self,
        run: Run,
        capture: mail_plan.Capture,
        outcome: Written | CrmError,
        applied: Applied,
        failures: int,
    ) -> int:
        """Count one message's outcome; a CRM failure becomes an issue (retried by later runs), and the
        third retryable failure in a row stops the page (the CRM is down, not one item bad). Returns the
        retryable failures in a row."""
        message = capture.message
        if isinstance(outcome, CrmError):
            run.stats.add("failed")
            key = mail_plan.journal_key(message, run.user)
            await run.note_issue(key, f"CRM: {outcome}", message.id)
            applied.decisions.append(self._decision(run, message, Outcome.FAILED, f"CRM: {outcome}"))
            if isinstance(outcome, CrmRetryableError):
                failures += 1
                if failures >= MAX_CONSECUTIVE_CRM_FAILURES:
                    raise outcome
            return failures
        run.stats.add("journaled" if outcome.changed else "unchanged")
        reason = capture.reason
        if outcome.collided:
            reason = f"{reason}; {COLLIDED}"
            run.stats.add(
                "collisions", outcome.changed
            )  # counted once: when its own journal is first written
        applied.decisions.append(self._decision(run, message, Outcome.SYNCED, reason, crm_key=outcome.key))
        return 0

    async def _still_here(self, user: str, folder: str, removed: Sequence[str]) -> list[MailMessage]:
        """The removed messages that are in this folder after all. With immutable ids, a message moved
        A→B→A between two rounds surfaces in A only as `@removed` (docs/graph-behaviour.md), so an
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

    async def _write(
        self, config: UserConfig, captures: Sequence[mail_plan.Capture]
    ) -> list[Written | CrmError]:
        """Write the journal(s) of each message. Per message: how its journals were written (changed or
        collided if any was), or the CrmError that stopped one of them."""
        units: list[Journal] = [journal for capture in captures for journal in capture.journals]
        written = await write_keyed_many(
            self._state,
            units,
            config.upn,
            mail_plan.JOURNALS,
            upsert_many=self._crm.upsert_journals,
            upsert=self._crm.upsert_journal,
            load=self._crm.get_journal,
        )
        outcomes: list[Written | CrmError] = []
        position = 0
        for capture in captures:
            mine = written[position : position + len(capture.journals)]
            position += len(capture.journals)
            failed = [o for o in mine if isinstance(o, CrmError)]
            done = [o for o in mine if isinstance(o, Written)]
            outcomes.append(
                failed[0]
                if failed
                else Written(any(o.changed for o in done), done[0].key, any(o.collided for o in done))
            )
        return outcomes

    def _decision(
        self, run: Run, message: MailMessage, outcome: Outcome, reason: str, crm_key: str = ""
    ) -> Decision:
        return run.decision(
            mail_plan.journal_key(message, run.user),
            outcome,
            reason,
            crm_key=crm_key,
            details={"graphId": message.id, "folder": message.folder_id},
        )
