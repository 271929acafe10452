"""The contacts stream: the owned Outlook contact folder ↔ the contacts the CRM assigns to the user.

One run: find (or create) the owned folder → read the folder's delta to the end of the round → read
the CRM's contact feed since its cursor → read the link rows → decide (pure, contacts_plan) → check
the mass-change brake → apply each action (effect first, then its link row) → save one cursor holding
the deltaLink, the CRM feed cursor and the folder id.

Nothing is checkpointed before every effect of the run is applied, so a crash anywhere re-reads the
same changes and re-plans: writes are compared by content (and by our key and stamp for creations),
so the re-run completes what was left and writes nothing twice. A 410 on the delta starts a fresh
round, which is a whole listing of the folder: linked contacts absent from it were deleted meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from shared.errors import (
    CrmRejectedError,
    DeltaExpired,
    GraphError,
    GraphNotFound,
    GraphThrottled,
    MassChangeRefused,
    OutlookChanged,
)
from shared.model import (
    ContactFeedPage,
    CrmContact,
    CrmContactRemoved,
    CrmRef,
    Cursor,
    Decision,
    Issue,
    Lease,
    Link,
    OutlookChange,
    OutlookContactRemoved,
    OutlookItem,
    UserConfig,
    change_id,
)
from shared.ports.crm import CrmPort
from shared.ports.graph import ContactsSide
from shared.ports.state import StateStore
from shared.sync import contacts_plan as cp

logger = logging.getLogger(__name__)

STREAM = "contacts"
DROPPED = "contacts-dropped"  # link rows keyed by CRM id: contacts the user deleted from Outlook
LEASE_SECONDS = 300.0
RETRY_PREFIX = "retry:"
APPROVAL_COLUMN = "ContactsApprovedUtc"
REVIEW_COLUMN = "ReviewPending"
TOTALS = ("created", "updated", "removed", "linked", "unlinked", "conflicts", "failed")


@dataclass
class ContactsStats:
    pages: int = 0
    crm_changes: int = 0
    created: int = 0  # on either side
    updated: int = 0  # on either side
    removed: int = 0  # deleted from Outlook or from the CRM
    linked: int = 0  # matched on first sight instead of duplicated
    unlinked: int = 0
    conflicts: int = 0
    held: int = 0  # changes held back by the brake
    failed: int = 0
    fresh_rounds: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Read:
    changes: list[OutlookChange]
    delta_link: str
    complete: bool  # a whole initial round


def latest_by_id(changes: Sequence[OutlookChange]) -> list[OutlookChange]:
    """Graph may repeat an item within a round; the last occurrence wins (a removal beats an earlier add)."""
    last: dict[str, OutlookChange] = {}
    for change in changes:
        key = change_id(change)
        last.pop(key, None)
        last[key] = change
    return list(last.values())


class ContactsStream:
    def __init__(
        self,
        state: StateStore,
        crm: CrmPort,
        outlook: ContactsSide,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._state = state
        self._crm = crm
        self._outlook = outlook
        self._clock = clock

    async def run(
        self,
        config: UserConfig,
        stream: str,
        lease: Lease,
        *,
        fresh_round: bool,
        progress: Callable[[str, Mapping[str, int]], None] | None = None,
    ) -> tuple[ContactsStats, Lease]:
        user = config.upn
        stats = ContactsStats()
        cursor = await self._state.get_cursor(user, STREAM)
        cursor, folder = await self._folder(config, cursor)
        link = "" if fresh_round else cursor.link
        stats.fresh_rounds += not link
        try:
            read = await self._read_outlook(user, folder, link, stats)
        except GraphNotFound:
            cursor = await self._forget_folder(user, cursor)
            cursor, folder = await self._folder(config, cursor)
            read = await self._read_outlook(user, folder, "", stats)
        lease = await self._state.renew(lease, LEASE_SECONDS)
        crm_cursor = None if fresh_round else (cursor.extra.get("crmCursor") or None)
        feed = await self._crm.contact_changes(config.owner, crm_cursor)
        stats.crm_changes = len(feed.changes)
        if progress is not None:
            progress(STREAM, stats.as_dict())

        links = {link.item_id: link for link in await self._state.list_links(user, STREAM)}
        dropped = frozenset(d.item_id for d in await self._state.list_links(user, DROPPED))
        issues = {i.item_key: i for i in await self._state.list_issues(user, STREAM)}
        outlook_changes = await self._with_retries(user, folder, latest_by_id(read.changes), links, issues)
        crm_changes = await self._crm_with_retries(feed, issues)
        inputs = cp.Inputs(
            config=config,
            links=links,
            dropped=dropped,
            outlook=outlook_changes,
            crm=crm_changes,
            outlook_complete=read.complete,
            crm_complete=feed.snapshot or crm_cursor is None,
            crm_current=await self._crm_current(outlook_changes, crm_changes, links),
            candidates=await self._candidates(
                config, outlook_changes, links, feed.snapshot or crm_cursor is None
            ),
        )
        plan = cp.plan(inputs)

        held = cursor.extra.get("held")
        verdict = cp.brake(
            plan.changes,
            config.contacts_change_threshold,
            held if isinstance(held, Mapping) else None,
            await self._approved_at(user),
        )
        if not verdict.apply:
            stats.held = plan.changes
            if not (isinstance(held, Mapping) and plan.changes <= int(held.get("changes", 0))):
                # held for the first time, or more than before: what an admin approves starts now
                held_now = {"since": self._clock().isoformat(), "changes": plan.changes}
                extra_held = {**cursor.extra, "held": held_now}
                await self._state.save_cursor(user, STREAM, replace(cursor, extra=extra_held))
            raise MassChangeRefused(
                verdict.reason, planned=plan.changes, threshold=config.contacts_change_threshold
            )

        lease, failed = await self._apply(config, folder, plan, stats, lease)
        await self._issues(user, plan, issues, outlook_changes, crm_changes, failed)
        await self._conflicts(config, plan)
        extra: dict[str, Any] = {k: v for k, v in cursor.extra.items() if k != "held"}
        extra.update(
            crmCursor=feed.cursor, lastPageUtc=self._clock().isoformat(), totals=_totals(cursor, stats)
        )
        await self._state.save_cursor(
            user,
            STREAM,
            replace(
                cursor,
                link=read.delta_link,
                link_kind="delta",
                round_started=self._clock() if read.complete else cursor.round_started,
                extra=extra,
            ),
        )
        if held:
            await self._state.update_status(user, {REVIEW_COLUMN: ""})
        lease = await self._state.renew(lease, LEASE_SECONDS)
        if progress is not None:
            progress(STREAM, stats.as_dict())
        return stats, lease

    # -- reading -----------------------------------------------------------------------------------

    async def _folder(self, config: UserConfig, cursor: Cursor) -> tuple[Cursor, str]:
        """The owned folder's id, found or created once and kept in the cursor (subscriptions read it)."""
        folder = str(cursor.extra.get("folderId", ""))
        if folder and cursor.extra.get("folderName") == config.contacts_folder:
            return cursor, folder
        found = await self._outlook.owned_folder(config.upn, config.contacts_folder)
        if folder and found != folder:  # ContactsFolder now names another folder: sync it from the start
            cursor = await self._forget_folder(config.upn, cursor)
        cursor = await self._state.save_cursor(
            config.upn,
            STREAM,
            replace(cursor, extra={**cursor.extra, "folderId": found, "folderName": config.contacts_folder}),
        )
        return cursor, found

    async def _forget_folder(self, user: str, cursor: Cursor) -> Cursor:
        """The owned folder is gone (deleted by the user or an admin) or another one is configured: start
        again as on a first sync, with a folder that the CRM contacts fill (contacts already in it are
        matched by address). Nothing is deleted in the CRM, and contacts
        the user had deleted from the folder stay out of it."""
        logger.info("contacts folder is gone: recreating it and syncing it again from the start")
        for old in await self._state.list_links(user, STREAM):
            await self._state.delete_link(user, STREAM, old.item_id)
        extra = {k: v for k, v in cursor.extra.items() if k not in ("folderId", "crmCursor", "held")}
        return await self._state.save_cursor(
            user, STREAM, replace(cursor, link="", link_kind="", extra=extra)
        )

    async def _read_outlook(self, user: str, folder: str, link: str, stats: ContactsStats) -> _Read:
        changes: list[OutlookChange] = []
        complete = not link
        restarts = 0
        while True:
            try:
                page = await self._outlook.read_page(user, folder, link)
            except GraphNotFound:
                if link:  # a stale link to a folder that is gone: a new round will tell
                    changes, link, complete = [], "", True
                    continue
                raise
            except DeltaExpired:
                restarts += 1
                if restarts > 2:
                    raise
                logger.info("contacts delta link expired: starting a fresh round")
                changes, link, complete = [], "", True
                stats.fresh_rounds += 1
                continue
            stats.pages += 1
            changes.extend(page.changes)
            if page.next_link:
                link = page.next_link
                continue
            if not page.delta_link:
                raise GraphError("Graph returned a delta page with neither nextLink nor deltaLink")
            return _Read(changes, page.delta_link, complete)

    async def _with_retries(
        self,
        user: str,
        folder: str,
        changes: list[OutlookChange],
        links: Mapping[str, Link],
        issues: Mapping[str, Issue],
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
        seen = {_crm_id(c) for c in changes}
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
        in_feed = {_crm_id(c) for c in crm}
        wanted = sorted(
            {
                links[c.contact.id].crm_key
                for c in outlook
                if isinstance(c, OutlookItem) and c.contact.id in links and links[c.contact.id].crm_key
            }
            - in_feed
        )
        return {crm_id: await self._crm.get_contact(CrmRef(crm_id)) for crm_id in wanted}

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

    # -- applying ----------------------------------------------------------------------------------

    async def _apply(
        self, config: UserConfig, folder: str, plan: cp.Plan, stats: ContactsStats, lease: Lease
    ) -> tuple[Lease, set[str]]:
        """Apply every action; returns the lease and the retry keys of the actions that failed."""
        failed: set[str] = set()
        for n, action in enumerate(plan.actions, start=1):
            try:
                await self._one(config, folder, action, stats)
            except (CrmRejectedError, OutlookChanged) as error:
                failed.add(await self._failed(config, action, error, stats))
            except GraphError as error:
                if isinstance(error, GraphThrottled | DeltaExpired) or error.status in (0, 401, 403):
                    raise
                failed.add(await self._failed(config, action, error, stats))
            if n % 25 == 0:
                lease = await self._state.renew(lease, LEASE_SECONDS)
        return lease, failed

    async def _one(self, config: UserConfig, folder: str, action: cp.Action, stats: ContactsStats) -> None:
        user = config.upn
        if isinstance(action, cp.SyncPair):
            try:
                await self._pair(config, folder, action, stats)
            except GraphNotFound:
                if not action.outlook_id or action.crm_ref is None:
                    raise
                # deleted in Outlook after this run read the folder: as if the delta had said so
                delete = config.contacts_delete_in_crm and config.contacts_direction != "crm-to-outlook"
                await self._one(config, folder, cp.Unlink(action.outlook_id, action.crm_ref, delete), stats)
        elif isinstance(action, cp.Unlink):
            if action.crm_ref is not None:
                if action.delete_in_crm:
                    await self._crm.delete_contact(action.crm_ref)
                    stats.removed += 1
                else:
                    await self._state.put_links([Link(user, DROPPED, action.crm_ref.id)])
            await self._state.delete_link(user, STREAM, action.outlook_id)
            stats.unlinked += 1
        elif isinstance(action, cp.RemoveFromOutlook):
            if action.delete:
                # marked first: a run that dies after the delete must not take it for the user's
                link = await self._state.get_link(user, STREAM, action.outlook_id)
                if link is not None and not link.extra.get(cp.REMOVING):
                    await self._state.put_links([replace(link, extra={**link.extra, cp.REMOVING: True})])
                await self._outlook.delete(user, folder, action.outlook_id)
                await self._state.delete_link(user, STREAM, action.outlook_id)
                stats.removed += 1
            else:
                await self._state.put_links([Link(user, STREAM, action.outlook_id, crm_key="")])
                stats.unlinked += 1
        elif isinstance(action, cp.ForgetLink):
            await self._state.delete_link(user, STREAM, action.outlook_id)
        else:
            await self._state.delete_link(user, DROPPED, action.crm_id)

    async def _pair(self, config: UserConfig, folder: str, a: cp.SyncPair, stats: ContactsStats) -> None:
        user, notes = config.upn, config.contacts_notes
        if a.drop:
            await self._state.put_links([Link(user, DROPPED, a.drop)])
        crm_ref, crm_print, version = a.crm_ref, a.crm_print, a.crm_version
        if (a.to_crm is None) != (a.to_outlook is None) and a.crm_ref is not None and a.outlook_id:
            await self._note_pending(user, a, notes)
        if a.to_crm is not None:
            written = await self._crm.upsert_contact(
                CrmContact(ref=a.crm_ref, owner=config.owner, fields=a.to_crm, key=a.crm_key)
            )
            crm_ref, version = written, written.version
            crm_print = cp.print_of(cp.project(a.to_crm, notes=notes))
            stats.created += a.crm_ref is None
            stats.updated += a.crm_ref is not None
        if crm_ref is None:
            raise GraphError("a contact pair without a CRM side")  # the plan never makes one
        outlook_id, change_key, outlook_print = a.outlook_id, a.outlook_change_key, a.outlook_print
        if a.to_outlook is not None:
            if outlook_id:
                item = await self._outlook.update(
                    user, folder, outlook_id, a.to_outlook, change_key=a.outlook_change_key, notes=notes
                )
                stats.updated += 1
            else:
                item = await self._outlook.create(user, folder, a.to_outlook, crm_id=crm_ref.id, notes=notes)
                stats.created += 1
            outlook_id, change_key = item.contact.id, item.contact.change_key
            outlook_print = cp.print_of(cp.project(item.contact.fields, notes=notes))
        if a.crm_ref is not None and a.outlook_id and a.reason.startswith("matched"):
            stats.linked += 1
        await self._state.put_links(
            [
                Link(
                    user, STREAM, outlook_id, crm_key=crm_ref.id, change_key=change_key,
                    local_fingerprint=outlook_print, crm_fingerprint=crm_print,
                    extra={"base": cp.to_dict(a.merged), "crmVersion": version},
                )
            ]
        )  # fmt: skip
        if a.undrop:
            await self._state.delete_link(user, DROPPED, a.undrop)

    async def _note_pending(self, user: str, a: cp.SyncPair, notes: bool) -> None:
        """Before a linked contact's one-sided write, on its link: should the answer be lost while the
        side applied it, the next run recognises that side's copy as this write, not as an edit there."""
        link = await self._state.get_link(user, STREAM, a.outlook_id)
        if link is None or a.crm_ref is None or link.crm_key != a.crm_ref.id:
            return
        crm_print, outlook_print = a.crm_print, a.outlook_print
        if a.to_crm is not None:
            crm_print = cp.print_of(cp.project(a.to_crm, notes=notes))
        if a.to_outlook is not None:
            outlook_print = cp.print_of(cp.project(a.to_outlook, notes=notes))
        pending = {
            "side": "crm" if a.to_crm is not None else "outlook", "crm": crm_print, "local": outlook_print,
            "changeKey": a.outlook_change_key, "base": cp.to_dict(a.merged),
        }  # fmt: skip
        await self._state.put_links([replace(link, extra={**link.extra, cp.PENDING_WRITE: pending})])

    async def _failed(
        self, config: UserConfig, action: cp.Action, error: Exception, stats: ContactsStats
    ) -> str:
        """Recorded with its reason and planned again by later runs; the other contacts go on."""
        stats.failed += 1
        if isinstance(action, cp.SyncPair) and action.outlook_id:
            key, item_id = f"{RETRY_PREFIX}outlook:{action.outlook_id}", action.outlook_id
        elif isinstance(action, cp.SyncPair) and action.crm_ref is not None:
            key, item_id = f"{RETRY_PREFIX}crm:{action.crm_ref.id}", action.crm_ref.id
        else:
            return ""  # deletes and unlinks are found again from the link rows
        now = self._clock()
        reason = (
            "Outlook changed meanwhile; merged again next run"
            if isinstance(error, OutlookChanged)
            else str(error)
        )
        await self._state.record_issue(
            Issue(config.upn, key, STREAM, reason=reason, first_seen=now, last_seen=now, item_id=item_id)
        )
        return key

    async def _issues(
        self,
        user: str,
        plan: cp.Plan,
        open_issues: Mapping[str, Issue],
        outlook: Sequence[OutlookChange],
        crm: Sequence[CrmContact | CrmContactRemoved],
        failed: set[str],
    ) -> None:
        now = self._clock()
        for key, reason in plan.issues.items():
            known = open_issues.get(key)
            if known is None or known.reason != reason:
                await self._state.record_issue(
                    Issue(user, key, STREAM, reason, first_seen=now, last_seen=now)
                )
        for key in plan.resolved:
            if key in open_issues:
                await self._state.resolve_issue(user, key)
        retried = {change_id(c) for c in outlook} | {_crm_id(c) for c in crm}
        for key, issue in open_issues.items():
            if key.startswith(RETRY_PREFIX) and issue.item_id in retried and key not in failed:
                await self._state.resolve_issue(user, key)

    async def _conflicts(self, config: UserConfig, plan: cp.Plan) -> None:
        """Recorded on the user's status (no values, only which fields and which rule decided)."""
        if not plan.conflicts:
            return
        now = self._clock()
        decisions = [
            Decision(
                config.upn, cp.contact_issue_key(c.crm_id), STREAM, outcome="synced",
                reason=f"conflict on {', '.join(cp.API_NAMES[f] for f in c.fields)}: "
                f"{c.rule} ({c.winner} kept)",
                at=now, crm_key=c.crm_id, details={"fields": [cp.API_NAMES[f] for f in c.fields]},
            )
            for c in plan.conflicts
        ]  # fmt: skip
        await self._state.record_decisions(decisions)
        row = await self._state.get_user(config.upn)
        total = int((row.columns.get("ContactsConflicts") or 0) if row else 0) + len(plan.conflicts)
        last = decisions[-1]
        await self._state.update_status(
            config.upn,
            {
                "ContactsConflicts": total,
                "LastContactsConflict": f"{now:%Y-%m-%d %H:%M} UTC contact {last.crm_key}: {last.reason}",
            },
        )


def _crm_id(change: CrmContact | CrmContactRemoved) -> str:
    if isinstance(change, CrmContactRemoved):
        return change.ref.id
    return change.ref.id if change.ref is not None else ""


def _totals(cursor: Cursor, stats: ContactsStats) -> dict[str, int]:
    totals = {k: int(v) for k, v in dict(cursor.extra.get("totals", {})).items()}
    for name in TOTALS:
        totals[name] = totals.get(name, 0) + int(getattr(stats, name))
    return totals
