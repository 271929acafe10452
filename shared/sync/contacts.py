"""The contacts stream: the owned Outlook contact folder ↔ the contacts the CRM assigns to the user.

One run: find (or create) the owned folder → read the folder's delta to the end of the round → read
the CRM's contact feed since its cursor → read the link rows → decide (pure, `contacts_plan`) → check
the mass-change brake → apply each action (`contacts_apply`: effect first, then its link row) → save
one cursor holding the deltaLink, the CRM feed cursor and the folder id.

Nothing is checkpointed before every effect of the run is applied, so a crash anywhere re-reads the
same changes and re-plans: writes are compared by content (and by our key and stamp for creations),
so the re-run completes what was left and writes nothing twice. A 410 on the delta starts a fresh
round, which is a whole listing of the folder: linked contacts absent from it were deleted meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from shared.errors import DeltaExpired, GraphError, GraphNotFound, MassChangeRefused
from shared.model import (
    ContactFeedPage,
    ContactsProgress,
    CrmContact,
    CrmContactRemoved,
    CrmRef,
    Cursor,
    Held,
    Issue,
    Link,
    LinkKind,
    OutlookChange,
    OutlookContactRemoved,
    OutlookItem,
    Page,
    StreamId,
    StreamKind,
    UserConfig,
    change_id,
)
from shared.ports.crm import CrmPort
from shared.ports.graph import ContactsSide
from shared.ports.state import StateStore
from shared.sync import contacts_plan as cp
from shared.sync.contacts_apply import DROPPED, RETRY_PREFIX, STREAM, ContactsWriter, crm_id
from shared.sync.runner import Run
from shared.sync.stream import Applied, Reading

logger = logging.getLogger(__name__)

APPROVAL_COLUMN = "ContactsApprovedUtc"
REVIEW_COLUMN = "ReviewPending"


@dataclass
class _Read:
    """The owned folder's changes, gathered over a round."""

    changes: list[OutlookChange] = field(default_factory=list)
    complete: bool = False  # a whole initial round: every contact of the folder is in it


class ContactsStream:
    kind: StreamKind = StreamKind.CONTACTS
    stats: tuple[str, ...] = (
        "crm_changes",
        "created",
        "updated",
        "removed",
        "linked",
        "unlinked",
        "conflicts",
        "held",
    )
    totals: tuple[str, ...] = ("created", "updated", "removed", "linked", "unlinked", "conflicts", "failed")
    probed: bool = True

    def __init__(self, state: StateStore, crm: CrmPort, outlook: ContactsSide) -> None:
        self._state = state
        self._crm = crm
        self._outlook = outlook
        self._writer = ContactsWriter(state, crm, outlook)

    # -- the sweep's questions -----------------------------------------------------------------------

    crm_side: bool = True

    def job_anyway(self, config: UserConfig, cursor: Cursor, now: datetime) -> bool:
        """Held by the brake (an approval applies in the job), the folder not known yet, or a CRM whose
        contacts only a whole read can tell."""
        snapshot_only = not self._crm.capabilities.contact_change_feed or not cursor.crm_cursor
        return cursor.contacts.held is not None or not cursor.contacts.folder_id or snapshot_only

    async def crm_changed(self, config: UserConfig, cursor: Cursor) -> bool:
        feed = await self._crm.contact_changes(config.owner, cursor.crm_cursor)
        return bool(feed.changes) or feed.snapshot

    def retries(self, issue: Issue) -> bool:
        """A contact that does not fit Outlook is an issue until it changes in the CRM (the peek sees
        that); only an action that failed (`retry:`) is retried by a job."""
        return issue.item_key.startswith(RETRY_PREFIX)

    def subscription(self, config: UserConfig, stream: StreamId, cursor: Cursor) -> str | None:
        folder = cursor.contacts.folder_id  # known once the first run found (or made) the owned folder
        return f"users/{config.upn}/contactFolders/{folder}/contacts" if folder else None

    # -- a run ---------------------------------------------------------------------------------------

    async def run(self, run: Run, *, fresh_round: bool) -> None:
        user, config = run.user, run.config
        folder = await self._folder(run)
        if fresh_round:
            run.start_from(replace(await run.settled(), link=""))
        run.stats.add("fresh_rounds", not run.cursor.link)
        try:
            read, last = await self._read(run, folder)
        except GraphNotFound:
            await self._forget_folder(run)
            folder = await self._folder(run)
            read, last = await self._read(run, folder)
        await run.renew()
        cursor = await run.settled()
        since = None if fresh_round else (cursor.crm_cursor or None)
        feed = await self._crm.contact_changes(config.owner, since)
        run.stats.add("crm_changes", len(feed.changes))
        run.report()

        links = {link.item_id: link for link in await self._state.list_links(user, STREAM)}
        dropped = frozenset(d.item_id for d in await self._state.list_links(user, DROPPED))
        issues = {i.item_key: i for i in await self._state.list_issues(user, STREAM)}
        outlook_changes = await self._with_retries(user, folder, cp.latest_by_id(read.changes), issues)
        crm_changes = await self._crm_with_retries(feed, issues)
        crm_complete = feed.snapshot or since is None
        plan = cp.plan(
            cp.Inputs(
                config=config,
                links=links,
                dropped=dropped,
                outlook=outlook_changes,
                crm=crm_changes,
                outlook_complete=read.complete,
                crm_complete=crm_complete,
                crm_current=await self._crm_current(outlook_changes, crm_changes, links),
                candidates=await self._candidates(config, outlook_changes, links, crm_complete),
            )
        )
        await self._brake(run, cursor, plan)
        failed = await self._writer.apply(run, folder, plan)
        await self._writer.issues(run, plan, issues, outlook_changes, crm_changes, failed)
        await self._writer.conflicts(run, plan)
        done = replace(
            cursor,
            link=last.delta_link,
            link_kind=LinkKind.DELTA,
            round_started=run.now() if read.complete else cursor.round_started,
            crm_cursor=feed.cursor,
            last_page=run.now(),
            contacts=replace(cursor.contacts, held=None),
        )
        await run.save(done)
        if cursor.contacts.held is not None:
            await self._state.update_status(user, {REVIEW_COLUMN: ""})
        await run.renew()
        run.report()

    async def _brake(self, run: Run, cursor: Cursor, plan: cp.Plan) -> None:
        """More deletes and changes than the threshold: nothing is applied, the user waits for an admin."""
        held, threshold = cursor.contacts.held, run.config.contacts_change_threshold
        verdict = cp.brake(plan.changes, threshold, held, await self._approved_at(run.user))
        if verdict.apply:
            return
        run.stats.add("held", plan.changes)
        if held is None or plan.changes > held.changes:
            # held for the first time, or more than before: what an admin approves starts now
            now_held = Held(since=run.now(), changes=plan.changes)
            await run.save(replace(cursor, contacts=replace(cursor.contacts, held=now_held)))
        raise MassChangeRefused(verdict.reason, planned=plan.changes, threshold=threshold)

    # -- reading -------------------------------------------------------------------------------------

    async def _folder(self, run: Run) -> str:
        """The owned folder's id, found or created once and kept in the cursor (subscriptions read it)."""
        cursor, name = await run.settled(), run.config.contacts_folder
        folder = cursor.contacts.folder_id
        if folder and cursor.contacts.folder_name == name:
            return folder
        found = await self._outlook.owned_folder(run.user, name)
        if folder and found != folder:  # ContactsFolder now names another folder: sync it from the start
            await self._forget_folder(run)
        cursor = await run.settled()
        await run.save(replace(cursor, contacts=replace(cursor.contacts, folder_id=found, folder_name=name)))
        return found

    async def _forget_folder(self, run: Run) -> None:
        """The owned folder is gone (deleted by the user or an admin) or another one is configured: start
        again as on a first sync, with a folder that the CRM contacts fill (contacts already in it are
        matched by address). Nothing is deleted in the CRM, and contacts the user had deleted from the
        folder stay out of it."""
        logger.info("contacts folder is gone: recreating it and syncing it again from the start")
        for old in await self._state.list_links(run.user, STREAM):
            await self._state.delete_link(run.user, STREAM, old.item_id)
        cursor = await run.settled()
        progress = ContactsProgress(folder_name=cursor.contacts.folder_name)
        await run.save(replace(cursor, link="", link_kind=LinkKind.NONE, crm_cursor="", contacts=progress))

    async def _read(self, run: Run, folder: str) -> tuple[_Read, Page[OutlookChange]]:
        """The folder's delta to the end of the round, gathered (nothing is checkpointed per page)."""
        read = _Read(complete=not run.cursor.link)

        def start_over(error: GraphError, cursor: Cursor) -> Cursor | None:
            if isinstance(error, GraphNotFound) and not cursor.link:
                return None  # the folder itself is gone: the run finds or makes it again
            if isinstance(error, DeltaExpired):
                run.stats.add("fresh_rounds")
            read.changes.clear()
            read.complete = True
            return replace(cursor, link="")

        async def gather(page: Page[OutlookChange]) -> Applied:
            read.changes.extend(page.changes)
            return Applied()

        last = await run.read_round(
            Reading(
                read=lambda link: self._outlook.read_page(run.user, folder, link),
                apply=gather,
                start_over=start_over,
            )
        )
        if not last.delta_link:
            raise GraphError("Graph returned a delta page with neither nextLink nor deltaLink")
        return read, last

    async def _with_retries(
        self, user: str, folder: str, changes: list[OutlookChange], issues: Mapping[str, Issue]
    ) -> list[OutlookChange]:
        """Outlook contacts whose write failed in an earlier run are read again and planned again."""
        seen = {change_id(c) for c in changes}
        for key, issue in issues.items():
            if not key.startswith(RETRY_PREFIX + "outlook:") or not issue.item_id or issue.item_id in seen:
                continue
            item = await self._outlook.get(user, folder, issue.item_id)
            # gone: a linked one is unlinked; for one never linked there is nothing left to retry
            changes.append(item if item is not None else OutlookContactRemoved(issue.item_id))
        return changes

    async def _crm_with_retries(
        self, feed: ContactFeedPage, issues: Mapping[str, Issue]
    ) -> list[CrmContact | CrmContactRemoved]:
        changes = list(feed.changes)
        seen = {crm_id(c) for c in changes}
        for key, issue in issues.items():
            if not key.startswith(RETRY_PREFIX + "crm:") or not issue.item_id or issue.item_id in seen:
                continue
            found = await self._crm.get_contact(CrmRef(issue.item_id))
            changes.append(found if found is not None else CrmContactRemoved(CrmRef(issue.item_id), ""))
        return changes

    async def _crm_current(
        self,
        outlook: Sequence[OutlookChange],
        crm: Sequence[CrmContact | CrmContactRemoved],
        links: Mapping[str, Link],
    ) -> dict[str, CrmContact | None]:
        """The CRM records of linked contacts changed in Outlook but not in this run's feed (a write to the
        CRM keeps what Outlook cannot hold, and a CRM edit the feed already reported is still merged)."""
        in_feed = {crm_id(c) for c in crm}
        wanted = sorted(
            {
                links[c.contact.id].crm_key
                for c in outlook
                if isinstance(c, OutlookItem) and c.contact.id in links and links[c.contact.id].crm_key
            }
            - in_feed
        )
        return {ref: await self._crm.get_contact(CrmRef(ref)) for ref in wanted}

    async def _candidates(
        self, config: UserConfig, outlook: Sequence[OutlookChange], links: Mapping[str, Link], complete: bool
    ) -> list[CrmContact]:
        """The owner's CRM contacts sharing an address with a new Outlook contact (not needed when the
        feed was read whole: every contact of the owner is in it)."""
        if complete:
            return []
        addresses = sorted(
            {
                e.strip().lower()
                for c in outlook
                if isinstance(c, OutlookItem) and c.contact.id not in links
                for e in c.contact.fields.emails
                if e.strip()
            }
        )
        if not addresses:
            return []
        found = await self._crm.find_people(addresses)
        ids = sorted({p.id for refs in found.values() for p in refs if p.kind == "contact"})
        contacts = [await self._crm.get_contact(CrmRef(i)) for i in ids]
        return [c for c in contacts if c is not None and c.owner == config.owner]

    async def _approved_at(self, user: str) -> datetime | None:
        row = await self._state.get_user(user)
        value = row.columns.get(APPROVAL_COLUMN) if row else None
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        if isinstance(value, str) and value:
            try:
                return datetime.fromisoformat(value).astimezone(UTC)
            except ValueError:
                return None
        return None
