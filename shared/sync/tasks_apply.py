"""Applying a tasks plan: each action's effect first, then its link row; a failed action becomes an
issue planned again by later runs, and the others go on. Conflicts are recorded on the user's status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from shared.errors import (
    CrmRejectedError,
    DeltaExpired,
    GraphError,
    GraphNotFound,
    GraphThrottled,
    OutlookChanged,
)
from shared.model import (
    CrmTask,
    CrmTaskRemoved,
    Issue,
    Link,
    Outcome,
    TaskChange,
    TaskLink,
    TaskPendingWrite,
    TaskStatus,
)
from shared.ports.crm import CrmPort
from shared.ports.graph import TasksSide
from shared.ports.state import StateStore
from shared.sync import tasks_plan as tp
from shared.sync.contacts_apply import RENEW_EVERY, RETRY_PREFIX
from shared.sync.runner import Run

STREAM = tp.STREAM
DROPPED = "tasks-dropped"  # link rows keyed by CRM id: tasks the user deleted from To Do


class TasksWriter:
    def __init__(self, state: StateStore, crm: CrmPort, outlook: TasksSide) -> None:
        self._state = state
        self._crm = crm
        self._outlook = outlook

    async def apply(self, run: Run, list_id: str, plan: tp.Plan) -> set[str]:
        """Apply every action; returns the retry keys of the actions that failed."""
        failed: set[str] = set()
        for n, action in enumerate(plan.actions, start=1):
            try:
                await self._one(run, list_id, action)
            except (CrmRejectedError, OutlookChanged) as error:
                failed.add(await self._failed(run, action, error))
            except GraphError as error:
                if isinstance(error, GraphThrottled | DeltaExpired) or error.status in (0, 401, 403):
                    raise
                failed.add(await self._failed(run, action, error))
            if n % RENEW_EVERY == 0:
                await run.renew()
        return failed

    async def _one(self, run: Run, list_id: str, action: tp.Action) -> None:
        user, config = run.user, run.config
        if isinstance(action, tp.SyncPair):
            try:
                await self._pair(run, list_id, action)
            except GraphNotFound:
                if not action.outlook_id or action.crm_ref is None:
                    raise
                # deleted in To Do after this run read the list: as if the delta had said so
                delete = config.tasks_delete_in_crm and config.tasks_direction != "crm-to-outlook"
                await self._one(run, list_id, tp.Unlink(action.outlook_id, action.crm_ref, delete))
        elif isinstance(action, tp.Unlink):
            if action.crm_ref is not None:
                if action.delete_in_crm:
                    await self._crm.delete_task(action.crm_ref)
                    run.stats.add("removed")
                else:
                    await self._state.put_links([Link(user, DROPPED, action.crm_ref.id)])
            await self._state.delete_link(user, STREAM, action.outlook_id)
            run.stats.add("unlinked")
        elif isinstance(action, tp.RemoveFromOutlook):
            if action.delete:
                # marked first: a run that dies after the delete must not take it for the user's
                link = await self._state.get_link(user, STREAM, action.outlook_id)
                if link is not None and not link.task.removing:
                    await self._state.put_links([replace(link, task=replace(link.task, removing=True))])
                await self._outlook.delete(user, list_id, action.outlook_id)
                await self._state.delete_link(user, STREAM, action.outlook_id)
                run.stats.add("removed")
            else:
                await self._state.put_links([Link(user, STREAM, action.outlook_id, crm_key="")])
                run.stats.add("unlinked")
        elif isinstance(action, tp.ForgetLink):
            await self._state.delete_link(user, STREAM, action.outlook_id)
        else:
            await self._state.delete_link(user, DROPPED, action.crm_id)

    async def _pair(self, run: Run, list_id: str, a: tp.SyncPair) -> None:
        user, zone, names = run.user, run.config.tasks_time_zone, self._crm.capabilities.task_fields
        if (a.to_crm is None) != (a.to_outlook is None) and a.crm_ref is not None and a.outlook_id:
            await self._note_pending(run, a)
        crm_ref, crm_print, crm_task = a.crm_ref, a.crm_print, a.crm_task
        if a.to_crm is not None:
            regarding = crm_task.regarding if crm_task is not None else ""
            crm_ref = await self._crm.upsert_task(
                CrmTask(
                    ref=a.crm_ref, owner=run.config.owner, fields=a.to_crm, key=a.crm_key, regarding=regarding
                )
            )
            crm_print = tp.print_of(a.to_crm, names)
            run.stats.add("created" if a.crm_ref is None else "updated")
            if a.to_crm.status == TaskStatus.COMPLETED and (
                a.crm_task is None or a.crm_task.fields.status != TaskStatus.COMPLETED
            ):
                run.stats.add("completed")
        if crm_ref is None:
            raise GraphError("a task pair without a CRM side")  # the plan never makes one
        outlook_id, etag, outlook_print = a.outlook_id, a.etag, a.outlook_print
        if a.to_outlook is not None:
            if outlook_id:
                item = await self._outlook.update(
                    user, list_id, outlook_id, a.to_outlook, since=a.outlook_now, etag=a.etag, zone=zone
                )
                run.stats.add("updated")
                if a.to_outlook.status == TaskStatus.COMPLETED and (
                    a.outlook_now is None or a.outlook_now.status != TaskStatus.COMPLETED
                ):
                    run.stats.add("completed")
            else:
                made = (
                    crm_task
                    if crm_task is not None and crm_task.ref is not None
                    else CrmTask(crm_ref, run.config.owner, a.merged)
                )
                item = await self._outlook.create(user, list_id, a.to_outlook, crm=made, zone=zone)
                run.stats.add("created")
            outlook_id, etag = item.id, item.etag
            outlook_print = tp.print_of(tp.project(item.fields))
            if (
                item.recurring
                and a.to_outlook.status == TaskStatus.COMPLETED
                and item.fields.status != TaskStatus.COMPLETED
            ):
                # To Do moved the series on and made the completed occurrence a task of its own: the next
                # run sees both and gives each occurrence its CRM task (tasks_plan._occurrence_done)
                etag, outlook_print = "", tp.print_of(a.to_outlook)
        if a.crm_ref is not None and a.outlook_id and a.reason.startswith("matched"):
            run.stats.add("linked")
        link = Link(
            user, STREAM, outlook_id, crm_key=crm_ref.id, change_key=etag, local_fingerprint=outlook_print,
            crm_fingerprint=crm_print, task=TaskLink(base=a.merged),
        )  # fmt: skip
        await self._state.put_links([link])
        if a.undrop:
            await self._state.delete_link(user, DROPPED, a.undrop)

    async def _note_pending(self, run: Run, a: tp.SyncPair) -> None:
        """Before a linked task's one-sided write, on its link: should the answer be lost while the side
        applied it, the next run recognises that side's copy as this write, not as an edit there."""
        link = await self._state.get_link(run.user, STREAM, a.outlook_id)
        if link is None or a.crm_ref is None or link.crm_key != a.crm_ref.id:
            return
        names = self._crm.capabilities.task_fields
        crm_print = tp.print_of(a.to_crm, names) if a.to_crm is not None else a.crm_print
        outlook_print = tp.print_of(a.to_outlook) if a.to_outlook is not None else a.outlook_print
        side = "crm" if a.to_crm is not None else "outlook"
        pending = TaskPendingWrite(side, crm_print, outlook_print, a.etag, a.merged)
        await self._state.put_links([replace(link, task=replace(link.task, pending_write=pending))])

    async def _failed(self, run: Run, action: tp.Action, error: Exception) -> str:
        """Recorded with its reason and planned again by later runs; the other tasks go on."""
        run.stats.add("failed")
        if isinstance(action, tp.SyncPair) and action.outlook_id:
            key, item_id = f"{RETRY_PREFIX}outlook:{action.outlook_id}", action.outlook_id
        elif isinstance(action, tp.SyncPair) and action.crm_ref is not None:
            key, item_id = f"{RETRY_PREFIX}crm:{action.crm_ref.id}", action.crm_ref.id
        else:
            return ""  # deletes and unlinks are found again from the link rows
        changed = isinstance(error, OutlookChanged)
        await run.note_issue(
            key, "To Do changed meanwhile; merged again next run" if changed else str(error), item_id
        )
        return key

    async def resolve(
        self,
        run: Run,
        open_issues: Mapping[str, Issue],
        outlook: Sequence[TaskChange],
        crm: Sequence[CrmTask | CrmTaskRemoved],
        failed: set[str],
    ) -> None:
        """Issues of items planned again this run and not failed again are resolved."""
        retried = {c.id for c in outlook} | {tp.crm_id(c) for c in crm}
        for key, issue in open_issues.items():
            if key.startswith(RETRY_PREFIX) and issue.item_id in retried and key not in failed:
                await self._state.resolve_issue(run.user, key)

    async def conflicts(self, run: Run, plan: tp.Plan) -> None:
        """Recorded as decisions and on the user's status (no values: which fields, which rule decided)."""
        if not plan.conflicts:
            return
        run.stats.add("conflicts", len(plan.conflicts))
        decisions = [
            run.decision(
                f"task:{c.crm_id}",
                Outcome.SYNCED,
                f"conflict on {', '.join(tp.API_NAMES[f] for f in c.fields)}: {c.rule} ({c.winner} kept)",
                crm_key=c.crm_id,
                details={"fields": [tp.API_NAMES[f] for f in c.fields]},
            )
            for c in plan.conflicts
        ]
        await self._state.record_decisions(decisions)
        row = await self._state.get_user(run.user)
        total = int((row.columns.get("TasksConflicts") or 0) if row else 0) + len(plan.conflicts)
        last = decisions[-1]
        await self._state.update_status(
            run.user,
            {
                "TasksConflicts": total,
                "LastTasksConflict": f"{run.now():%Y-%m-%d %H:%M} UTC task {last.crm_key}: {last.reason}",
            },
        )
