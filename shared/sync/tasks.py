"""The tasks stream: the owned To Do list ↔ the tasks the CRM assigns to the user.

One run, as the contacts stream's: find (or create) the owned list → read the list's delta to the end
of the round → read the CRM's task feed since its cursor → read the link rows → decide (pure,
`tasks_plan`) → check the mass-change brake → apply each action (`tasks_apply`: effect first, then its
link row) → save one cursor holding the deltaLink, the CRM feed cursor and the list id.

Nothing is checkpointed before every effect of the run is applied, so a crash anywhere re-reads the
same changes and re-plans: writes are compared by content (and by our key and the CRM id in the
linkedResource for creations), so the re-run completes what was left and writes nothing twice.

Trigger: Graph offers no change notifications on To Do tasks to an app-only application, so there is
no subscription (`subscription()` is None). The sweep probes the owned list's saved deltaLink in its
`$batch` (`probed`), and peeks at the CRM's task feed (`crm_side`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from shared.errors import CrmRejectedError, DeltaExpired, GraphError, GraphNotFound, MassChangeRefused
from shared.model import (
    CrmRef,
    CrmTask,
    CrmTaskRemoved,
    Cursor,
    Held,
    Issue,
    Link,
    LinkKind,
    OutlookTask,
    OutlookTaskRemoved,
    Page,
    StreamId,
    StreamKind,
    TaskChange,
    TaskFeedPage,
    TasksProgress,
    UserConfig,
)
from shared.ports.crm import CrmPort
from shared.ports.graph import TasksSide
from shared.ports.state import StateStore
from shared.sync import tasks_plan as tp
from shared.sync.contacts_apply import RETRY_PREFIX
from shared.sync.contacts_plan import brake
from shared.sync.runner import Run
from shared.sync.stream import Applied, Reading
from shared.sync.tasks_apply import DROPPED, STREAM, TasksWriter

logger = logging.getLogger(__name__)

APPROVAL_COLUMN = "TasksApprovedUtc"
REVIEW_COLUMN = "ReviewPending"


@dataclass
class _Read:
    changes: list[TaskChange] = field(default_factory=list)
    complete: bool = False  # a whole initial round: every task of the list is in it


class TasksStream:
    kind: StreamKind = StreamKind.TASKS
    stats: tuple[str, ...] = (
        "crm_changes",
        "created",
        "updated",
        "completed",
        "removed",
        "linked",
        "unlinked",
        "conflicts",
        "held",
    )
    totals: tuple[str, ...] = (
        "created",
        "updated",
        "completed",
        "removed",
        "linked",
        "unlinked",
        "conflicts",
        "failed",
    )
    probed: bool = True
    crm_side: bool = True

    def __init__(self, state: StateStore, crm: CrmPort, outlook: TasksSide) -> None:
        self._state = state
        self._crm = crm
        self._outlook = outlook
        self._writer = TasksWriter(state, crm, outlook)

    # -- the sweep's questions -----------------------------------------------------------------------

    def job_anyway(self, config: UserConfig, cursor: Cursor, now: datetime) -> bool:
        """Held by the brake, the list not known yet, or a CRM whose tasks only a whole read can tell."""
        snapshot_only = not self._crm.capabilities.task_change_feed or not cursor.crm_cursor
        return cursor.tasks.held is not None or not cursor.tasks.list_id or snapshot_only

    async def crm_changed(self, config: UserConfig, cursor: Cursor) -> bool:
        feed = await self._crm.task_changes(config.owner, cursor.crm_cursor)
        return bool(feed.changes) or feed.snapshot

    def retries(self, issue: Issue) -> bool:
        return issue.item_key.startswith(RETRY_PREFIX)

    def subscription(self, config: UserConfig, stream: StreamId, cursor: Cursor) -> str | None:
        """None: Graph refuses change notifications on To Do tasks to an app-only application (only a
        delegated `/me/todo/lists/{id}/tasks` subscription exists); the sweep's probe is the trigger."""
        return None

    # -- a run ---------------------------------------------------------------------------------------

    async def run(self, run: Run, *, fresh_round: bool) -> None:
        user, config = run.user, run.config
        if not self._crm.capabilities.tasks:
            raise CrmRejectedError(
                "this CRM connector has no tasks: set Tasks to false for this user", status=501
            )
        list_id = await self._list(run)
        if fresh_round:
            run.start_from(replace(await run.settled(), link=""))
        run.stats.add("fresh_rounds", not run.cursor.link)
        try:
            read, last = await self._read(run, list_id)
        except GraphNotFound:
            await self._forget_list(run)
            list_id = await self._list(run)
            read, last = await self._read(run, list_id)
        await run.renew()
        cursor = await run.settled()
        since = None if fresh_round else (cursor.crm_cursor or None)
        feed = await self._crm.task_changes(config.owner, since)
        run.stats.add("crm_changes", len(feed.changes))
        run.report()

        links = {link.item_id: link for link in await self._state.list_links(user, STREAM)}
        dropped = frozenset(d.item_id for d in await self._state.list_links(user, DROPPED))
        issues = {i.item_key: i for i in await self._state.list_issues(user, STREAM)}
        outlook_changes = await self._with_retries(run, list_id, tp.latest_by_id(read.changes), issues)
        crm_changes = await self._crm_with_retries(feed, issues)
        plan = tp.plan(
            tp.Inputs(
                config=config,
                links=links,
                dropped=dropped,
                outlook=outlook_changes,
                crm=crm_changes,
                outlook_complete=read.complete,
                crm_complete=feed.snapshot or since is None,
                crm_current=await self._crm_current(outlook_changes, crm_changes, links),
                crm_fields=self._crm.capabilities.task_fields,
            )
        )
        await self._brake(run, cursor, plan)
        failed = await self._writer.apply(run, list_id, plan)
        await self._writer.resolve(run, issues, outlook_changes, crm_changes, failed)
        await self._writer.conflicts(run, plan)
        done = replace(
            cursor,
            link=last.delta_link,
            link_kind=LinkKind.DELTA,
            round_started=run.now() if read.complete else cursor.round_started,
            crm_cursor=feed.cursor,
            last_page=run.now(),
            tasks=replace(cursor.tasks, held=None),
        )
        await run.save(done)
        if cursor.tasks.held is not None:
            await self._state.update_status(user, {REVIEW_COLUMN: ""})
        await run.renew()
        run.report()

    async def _brake(self, run: Run, cursor: Cursor, plan: tp.Plan) -> None:
        held, threshold = cursor.tasks.held, run.config.tasks_change_threshold
        verdict = brake(
            plan.changes, threshold, held, await self._approved_at(run.user),
            things="tasks", column="TasksChangeThreshold", where="the To Do list",
        )  # fmt: skip
        if verdict.apply:
            return
        run.stats.add("held", plan.changes)
        if held is None or plan.changes > held.changes:
            now_held = Held(since=run.now(), changes=plan.changes)
            await run.save(replace(cursor, tasks=replace(cursor.tasks, held=now_held)))
        raise MassChangeRefused(verdict.reason, planned=plan.changes, threshold=threshold)

    # -- reading -------------------------------------------------------------------------------------

    async def _list(self, run: Run) -> str:
        """The owned list's id, found or created once and kept in the cursor."""
        cursor, name = await run.settled(), run.config.tasks_list
        list_id = cursor.tasks.list_id
        if list_id and cursor.tasks.list_name == name:
            return list_id
        found = await self._outlook.owned_list(run.user, name)
        if list_id and found != list_id:  # TasksList now names another list: sync it from the start
            await self._forget_list(run)
        cursor = await run.settled()
        await run.save(replace(cursor, tasks=replace(cursor.tasks, list_id=found, list_name=name)))
        return found

    async def _forget_list(self, run: Run) -> None:
        """The owned list is gone (deleted by the user) or another one is configured: start again as on
        a first sync. Nothing is deleted in the CRM; tasks the user had deleted stay out of To Do."""
        logger.info("To Do list is gone: recreating it and syncing it again from the start")
        for old in await self._state.list_links(run.user, STREAM):
            await self._state.delete_link(run.user, STREAM, old.item_id)
        cursor = await run.settled()
        progress = TasksProgress(list_name=cursor.tasks.list_name)
        await run.save(replace(cursor, link="", link_kind=LinkKind.NONE, crm_cursor="", tasks=progress))

    async def _read(self, run: Run, list_id: str) -> tuple[_Read, Page[TaskChange]]:
        """The list's delta to the end of the round, gathered (nothing is checkpointed per page)."""
        read = _Read(complete=not run.cursor.link)
        zone = run.config.tasks_time_zone

        def start_over(error: GraphError, cursor: Cursor) -> Cursor | None:
            if isinstance(error, GraphNotFound) and not cursor.link:
                return None  # the list itself is gone: the run finds or makes it again
            if isinstance(error, DeltaExpired):
                run.stats.add("fresh_rounds")
            read.changes.clear()
            read.complete = True
            return replace(cursor, link="")

        async def gather(page: Page[TaskChange]) -> Applied:
            read.changes.extend(page.changes)
            return Applied()

        last = await run.read_round(
            Reading(
                read=lambda link: self._outlook.read_page(run.user, list_id, link, zone),
                apply=gather,
                start_over=start_over,
            )
        )
        if not last.delta_link:
            raise GraphError("Graph returned a delta page with neither nextLink nor deltaLink")
        return read, last

    async def _with_retries(
        self, run: Run, list_id: str, changes: list[TaskChange], issues: Mapping[str, Issue]
    ) -> list[TaskChange]:
        """To Do tasks whose write failed in an earlier run are read again and planned again."""
        seen = {c.id for c in changes}
        for key, issue in issues.items():
            if not key.startswith(RETRY_PREFIX + "outlook:") or not issue.item_id or issue.item_id in seen:
                continue
            item = await self._outlook.get(run.user, list_id, issue.item_id, run.config.tasks_time_zone)
            changes.append(item if item is not None else OutlookTaskRemoved(issue.item_id))
        return changes

    async def _crm_with_retries(
        self, feed: TaskFeedPage, issues: Mapping[str, Issue]
    ) -> list[CrmTask | CrmTaskRemoved]:
        changes = list(feed.changes)
        seen = {tp.crm_id(c) for c in changes}
        for key, issue in issues.items():
            if not key.startswith(RETRY_PREFIX + "crm:") or not issue.item_id or issue.item_id in seen:
                continue
            found = await self._crm.get_task(CrmRef(issue.item_id))
            changes.append(found if found is not None else CrmTaskRemoved(CrmRef(issue.item_id), ""))
        return changes

    async def _crm_current(
        self,
        outlook: Sequence[TaskChange],
        crm: Sequence[CrmTask | CrmTaskRemoved],
        links: Mapping[str, Link],
    ) -> dict[str, CrmTask | None]:
        """The CRM tasks of linked tasks changed in To Do but not in this run's feed (a write to the CRM
        keeps what To Do does not hold, such as the record the task is about)."""
        in_feed = {tp.crm_id(c) for c in crm}
        wanted = sorted(
            {
                links[c.id].crm_key
                for c in outlook
                if isinstance(c, OutlookTask) and c.id in links and links[c.id].crm_key
            }
            - in_feed
        )
        return {ref: await self._crm.get_task(CrmRef(ref)) for ref in wanted}

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
