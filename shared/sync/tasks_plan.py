"""Pure decisions for tasks: what one run writes on each side, given both sides' changes and the links.

No I/O here. The stream reads the owned To Do list's delta, the CRM's task feed and the link rows, and
`plan()` returns the actions; the mass-change brake is the contacts one (`contacts_plan.brake`).

The same rules as contacts (docs/streams/tasks.md):
- Fields are compared as `project()`ed (trimmed text, categories without repeats, a reminder to the
  minute, a completion day only on a completed task). A task's base is what both sides agreed on at
  the last sync (on the link); a side changed when its fingerprint differs from the one recorded after
  the last sync (for To Do, also its `@odata.etag`), so our own writes never come back. Fields the CRM
  does not hold (`Capabilities.task_fields`) are To Do's alone: never compared with the CRM's nothing.
- Both sides changed: each field changed on one side takes that side; a field changed on both to
  different values follows `TasksConflictRule`, and the conflict is reported.
- Unlinked tasks are matched (our key, the CRM id in a linkedResource we wrote, then the same title
  and due date among the owner's unlinked CRM tasks) and linked instead of duplicated. CRM tasks
  already completed when first seen are not brought into To Do.
- Deletes: a To Do delete unlinks (the CRM task is deleted only with `TasksDeleteInCrm`, otherwise
  remembered as "dropped" so it is not pushed back); a CRM delete or unassignment removes the task from
  the owned list.
- Recurring To Do tasks: completing one keeps its id and moves it to the next due date, while the
  completed occurrence appears as a new task. Seen together, the completed occurrence takes over the
  link (the CRM task is completed) and the series, now the next occurrence, becomes a CRM task of its
  own: each occurrence is a CRM task, as the CRM sees it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.model import (
    TASK_FIELD_NAMES,
    ConflictRule,
    CrmRef,
    CrmTask,
    CrmTaskRemoved,
    Link,
    OutlookTask,
    OutlookTaskRemoved,
    TaskChange,
    TaskFields,
    TaskStatus,
    UserConfig,
    fingerprint,
)
from shared.sync.contacts_plan import ForgetDropped as ForgetDropped
from shared.sync.contacts_plan import ForgetLink as ForgetLink
from shared.sync.contacts_plan import RemoveFromOutlook as RemoveFromOutlook
from shared.sync.contacts_plan import Unlink as Unlink

STREAM = "tasks"
API_NAMES = {
    "title": "title", "body": "body", "due": "dueDateTime", "reminder": "reminderDateTime",
    "importance": "importance", "status": "status", "completed": "completedDateTime",
    "categories": "categories",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Fields


def project(fields: TaskFields) -> TaskFields:
    """The fields as both sides hold them: what the sync compares, merges and writes."""
    completed = fields.completed if fields.status == TaskStatus.COMPLETED else None
    reminder = fields.reminder.replace(second=0, microsecond=0) if fields.reminder is not None else None
    return dataclasses.replace(
        fields,
        title=fields.title.strip(),
        body=fields.body.strip(),
        reminder=reminder,
        completed=completed,
        categories=tuple(dict.fromkeys(c.strip() for c in fields.categories if c.strip())),
    )


def held_by_crm(fields: TaskFields, names: frozenset[str] | None, other: TaskFields) -> TaskFields:
    """The CRM's fields, with those it does not hold taken from `other` (To Do's, or the base)."""
    if names is None:
        return fields
    return dataclasses.replace(fields, **{n: getattr(other, n) for n in TASK_FIELD_NAMES if n not in names})


def print_of(fields: TaskFields, names: frozenset[str] | None = None) -> str:
    """The fingerprint of the fields (of `names` only, when given: the CRM's print)."""
    data = dataclasses.asdict(fields)
    return fingerprint({k: v for k, v in data.items() if names is None or k in names})


def merge(
    base: TaskFields, outlook: TaskFields, crm: TaskFields, *, outlook_wins: bool
) -> tuple[TaskFields, tuple[str, ...]]:
    """Three-way merge by field: a field changed on one side takes that side; changed on both, the
    winner's. Returns the merged fields and the fields in conflict."""
    values: dict[str, Any] = {}
    conflicts: list[str] = []
    for name in TASK_FIELD_NAMES:
        b, o, c = getattr(base, name), getattr(outlook, name), getattr(crm, name)
        if o in (c, b):
            values[name] = c
        elif c == b:
            values[name] = o
        else:
            conflicts.append(name)
            values[name] = o if outlook_wins else c
    merged = TaskFields(**values)
    if merged.status != TaskStatus.COMPLETED and merged.completed is not None:
        merged = dataclasses.replace(merged, completed=None)
    return merged, tuple(conflicts)


def outlook_key(user: str, outlook_id: str, occurrence: str = "") -> str:
    """Our idempotency key for a CRM task made from a To Do task (a re-run finds it)."""
    return "todo:" + fingerprint([user.lower(), outlook_id, occurrence])


def _same_task(a: TaskFields, b: TaskFields) -> bool:
    return a.title.casefold() == b.title.casefold() and a.due == b.due


# ---------------------------------------------------------------------------------------------
# Actions


@dataclass(frozen=True)
class SyncPair:
    """Write one task pair where needed, then record the link (base = `merged`).

    `outlook_id == ""`: create the task in To Do. `crm_ref is None`: create it in the CRM under
    `crm_key`. `to_outlook` / `to_crm` are None when that side already holds the merged fields;
    `outlook_now` is what To Do holds (an update sends only what differs)."""

    outlook_id: str
    crm_ref: CrmRef | None
    crm_key: str
    merged: TaskFields
    to_outlook: TaskFields | None
    to_crm: TaskFields | None
    outlook_now: TaskFields | None = None
    etag: str = ""  # If-Match for a To Do update
    outlook_print: str = ""  # the To Do side's fingerprint when it is not written
    crm_print: str = ""  # the CRM side's fingerprint when it is not written
    crm_task: CrmTask | None = None  # the CRM task as read (its regarding and web address are kept)
    reason: str = ""
    conflicts: tuple[str, ...] = ()
    undrop: str = ""  # a CRM id no longer "dropped" (the user added it back)
    changes_existing: bool = False  # counts toward the mass-change brake


Action = SyncPair | Unlink | RemoveFromOutlook | ForgetLink | ForgetDropped


@dataclass(frozen=True)
class Conflict:
    crm_id: str
    fields: tuple[str, ...]
    rule: str
    winner: str


@dataclass(frozen=True)
class Plan:
    actions: list[Action] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def changes(self) -> int:
        """Deletes, completions and other changes of existing tasks (creations and first links do not
        count)."""
        return sum(
            1
            for a in self.actions
            if isinstance(a, Unlink | RemoveFromOutlook) or (isinstance(a, SyncPair) and a.changes_existing)
        )


@dataclass(frozen=True)
class Inputs:
    config: UserConfig
    links: Mapping[str, Link]  # by To Do id (stream "tasks")
    dropped: frozenset[str]  # CRM ids deleted from To Do by the user, not to be pushed back
    outlook: Sequence[TaskChange]  # this run's delta, latest by id
    crm: Sequence[CrmTask | CrmTaskRemoved]  # this run's CRM feed, latest by id
    outlook_complete: bool = False  # a whole initial round: linked ids absent from it were deleted
    crm_complete: bool = False  # a whole CRM read: linked ids absent from it are no longer assigned
    crm_current: Mapping[str, CrmTask | None] = field(default_factory=dict)  # linked, read by id
    crm_fields: frozenset[str] | None = None  # the fields the CRM holds (None: all)


def latest_by_id(changes: Sequence[TaskChange]) -> list[TaskChange]:
    """Graph may repeat an item within a round; the last occurrence wins."""
    last: dict[str, TaskChange] = {}
    for change in changes:
        last.pop(change.id, None)
        last[change.id] = change
    return list(last.values())


def crm_id(change: CrmTask | CrmTaskRemoved) -> str:
    if isinstance(change, CrmTaskRemoved):
        return change.ref.id
    return change.ref.id if change.ref is not None else ""


# ---------------------------------------------------------------------------------------------
# The plan


def plan(inputs: Inputs) -> Plan:
    return _Planner(inputs).run()


class _Planner:
    def __init__(self, inputs: Inputs) -> None:
        self.i = inputs
        config = inputs.config
        self.rule = config.tasks_conflict_rule
        self.to_outlook = config.tasks_direction in ("two-way", "crm-to-outlook")
        self.to_crm = config.tasks_direction in ("two-way", "outlook-to-crm")
        self.names = inputs.crm_fields
        self.out = Plan()
        self.used_outlook: set[str] = set()  # new To Do tasks already taken (a completed occurrence)

    def run(self) -> Plan:
        i = self.i
        outlook: dict[str, TaskChange] = {c.id: c for c in i.outlook}
        crm: dict[str, CrmTask | CrmTaskRemoved] = {crm_id(c): c for c in i.crm}
        if i.outlook_complete:
            for oid in i.links:
                outlook.setdefault(oid, OutlookTaskRemoved(oid))
        removed_by_us = {
            oid
            for oid, link in i.links.items()
            if link.task.removing and isinstance(outlook.get(oid), OutlookTaskRemoved)
        }
        linked_crm = {
            link.crm_key for oid, link in i.links.items() if link.crm_key and oid not in removed_by_us
        }
        if i.crm_complete:
            for cid in linked_crm | set(i.dropped):
                crm.setdefault(cid, CrmTaskRemoved(CrmRef(cid), i.config.owner))
        new_outlook = [c for c in outlook.values() if isinstance(c, OutlookTask) and c.id not in i.links]
        for oid, link in sorted(i.links.items()):
            if oid in removed_by_us:
                self.out.actions.append(ForgetLink(oid))
            else:
                self._linked(oid, link, outlook.get(oid), crm, new_outlook)
        self._unlinked(
            [c for c in new_outlook if c.id not in self.used_outlook],
            [c for c in crm.values() if crm_id(c) not in linked_crm],
            linked_crm,
        )
        return self.out

    # -- linked tasks ------------------------------------------------------------------------------

    def _linked(
        self,
        oid: str,
        link: Link,
        o: TaskChange | None,
        crm: Mapping[str, CrmTask | CrmTaskRemoved],
        new_outlook: Sequence[OutlookTask],
    ) -> None:
        actions = self.out.actions
        if not link.crm_key:  # detached: the CRM task is gone and To Do is not written to
            if isinstance(o, OutlookTaskRemoved):
                actions.append(ForgetLink(oid))
            return
        c_change = crm.get(link.crm_key)
        if isinstance(o, OutlookTaskRemoved):
            if isinstance(c_change, CrmTaskRemoved):
                actions.append(ForgetLink(oid))
            else:
                delete = self.i.config.tasks_delete_in_crm and self.to_crm
                actions.append(Unlink(oid, CrmRef(link.crm_key), delete))
            return
        c = c_change if isinstance(c_change, CrmTask) else self.i.crm_current.get(link.crm_key)
        if isinstance(c_change, CrmTaskRemoved) or (link.crm_key in self.i.crm_current and c is None):
            actions.append(RemoveFromOutlook(oid, link.crm_key, delete=self.to_outlook))
            return
        if isinstance(o, OutlookTask) and self._occurrence_done(oid, link, o, c, new_outlook):
            return
        before = len(actions)
        self._pair(oid, link, o if isinstance(o, OutlookTask) else None, c)
        if link.task.removing and len(actions) == before:  # back in the CRM before we removed it
            actions.append(self._keep(oid, link, "kept: assigned again before it was removed from To Do"))

    def _keep(self, oid: str, link: Link, reason: str, c: CrmTask | None = None) -> SyncPair:
        """The link as it stands (rewritten without its marks), no write on either side."""
        return SyncPair(
            outlook_id=oid, crm_ref=CrmRef(link.crm_key), crm_key="", merged=link.task.base or TaskFields(),
            to_outlook=None, to_crm=None, etag=link.change_key, outlook_print=link.local_fingerprint,
            crm_print=link.crm_fingerprint, crm_task=c, reason=reason,
        )  # fmt: skip

    def _occurrence_done(
        self, oid: str, link: Link, o: OutlookTask, c: CrmTask | None, new_outlook: Sequence[OutlookTask]
    ) -> bool:
        """A recurring To Do task completed: the series moved on (same id, a later due date, open) and
        the completed occurrence is a new task. The occurrence takes over the link; the series becomes a
        new CRM task. False when this is not that."""
        base = link.task.base
        if base is None or not o.recurring or o.fields.due == base.due or not self.to_crm:
            return False
        done = next(
            (
                n
                for n in new_outlook
                if n.id not in self.used_outlook
                and not n.recurring
                and n.fields.status == TaskStatus.COMPLETED
                and _same_task(n.fields, base)
            ),
            None,
        )
        if done is None:
            return False
        self.used_outlook.add(done.id)
        # the occurrence: as if To Do had completed the linked task itself
        taken = dataclasses.replace(link, item_id=done.id, change_key="", local_fingerprint="")
        self._pair(done.id, taken, done, c, reason="a recurring To Do task's occurrence completed")
        nxt = project(o.fields)
        self.out.actions.append(
            SyncPair(
                outlook_id=oid, crm_ref=None, crm_key=outlook_key(self.i.config.upn, oid, str(nxt.due)),
                merged=nxt, to_outlook=None, to_crm=nxt, outlook_now=nxt, etag=o.etag,
                outlook_print=print_of(nxt), reason="the next occurrence of a recurring To Do task",
            )
        )  # fmt: skip
        return True

    def _pair(
        self, oid: str, link: Link, o: OutlookTask | None, c: CrmTask | None, reason: str = "changed"
    ) -> None:
        stored, link = link, self._confirmed(link, o, c)
        base = link.task.base
        o_fields = project(o.fields) if o is not None else None
        if base is None:
            base = o_fields or TaskFields()
        c_fields = held_by_crm(project(c.fields), self.names, o_fields or base) if c is not None else None
        o_print = print_of(o_fields) if o_fields is not None else link.local_fingerprint
        c_print = print_of(c_fields, self.names) if c_fields is not None else link.crm_fingerprint
        o_changed = o is not None and o.etag != link.change_key and o_print != link.local_fingerprint
        c_changed = c is not None and c_print != link.crm_fingerprint
        if not o_changed and not c_changed:
            if o is not None and o.etag != link.change_key:
                self.out.actions.append(
                    dataclasses.replace(
                        self._keep(oid, link, "To Do changed unmapped fields", c),
                        etag=o.etag,
                        outlook_print=o_print,
                    )
                )
            elif link is not stored:  # the lost answer's write, confirmed: the link as that write left it
                self.out.actions.append(self._keep(oid, link, "a write whose answer was lost is there", c))
            return
        o_now = o_fields if o_changed and o_fields is not None else base
        c_now = c_fields if c_changed and c_fields is not None else base
        conflicts: tuple[str, ...] = ()
        outlook_wins = _outlook_wins(self.rule, o, c)
        if self.to_outlook and self.to_crm:
            merged, conflicts = merge(base, o_now, c_now, outlook_wins=outlook_wins)
        elif self.to_outlook:  # the CRM is the source: its change wins whole, To Do edits wait
            merged = c_now if c_changed else base
        else:
            merged = o_now if o_changed else base
        if conflicts:
            winner = "outlook" if outlook_wins else "crm"
            self.out.conflicts.append(Conflict(link.crm_key, conflicts, self.rule, winner))
        self._emit(oid, link, merged, o, c, o_print, c_print, conflicts, reason)

    def _confirmed(self, link: Link, o: OutlookTask | None, c: CrmTask | None) -> Link:
        """A one-sided write whose answer was lost, which the written side now holds exactly: the link
        as if the write had been confirmed (as for contacts). Otherwise it is planned again."""
        pending = link.task.pending_write
        if pending is None:
            return link
        etag = pending.etag
        if pending.side == "crm":
            other = project(o.fields) if o is not None else pending.base
            if (
                c is None
                or print_of(held_by_crm(project(c.fields), self.names, other), self.names) != pending.crm
            ):
                return link
        elif pending.side == "outlook":
            if o is None or print_of(project(o.fields)) != pending.local:
                return link
            etag = o.etag
        else:
            return link
        return dataclasses.replace(
            link,
            change_key=etag,
            crm_fingerprint=pending.crm,
            local_fingerprint=pending.local,
            task=dataclasses.replace(link.task, pending_write=None, base=pending.base),
        )

    def _emit(
        self,
        oid: str,
        link: Link,
        merged: TaskFields,
        o: OutlookTask | None,
        c: CrmTask | None,
        o_print: str,
        c_print: str,
        conflicts: tuple[str, ...],
        reason: str,
    ) -> None:
        to_outlook = merged if self.to_outlook and print_of(merged) != o_print else None
        to_crm = merged if self.to_crm and print_of(merged, self.names) != c_print else None
        now = project(o.fields) if o is not None else link.task.base
        self.out.actions.append(
            SyncPair(
                outlook_id=oid, crm_ref=CrmRef(link.crm_key), crm_key="", merged=merged,
                to_outlook=to_outlook, to_crm=to_crm, outlook_now=now,
                etag=o.etag if o is not None else link.change_key,
                outlook_print=o_print, crm_print=c_print, crm_task=c, reason=reason, conflicts=conflicts,
                changes_existing=bool(link.task.base is not None and (to_outlook or to_crm)),
            )
        )  # fmt: skip

    # -- unlinked tasks: match, link, create -------------------------------------------------------

    def _unlinked(
        self,
        outlook_new: list[OutlookTask],
        crm_unlinked: list[CrmTask | CrmTaskRemoved],
        linked_crm: set[str],
    ) -> None:
        i = self.i
        pool: dict[str, CrmTask] = {}
        for change in crm_unlinked:
            cid = crm_id(change)
            if isinstance(change, CrmTaskRemoved):
                if cid in i.dropped:
                    self.out.actions.append(ForgetDropped(cid))
                continue
            if change.owner == i.config.owner:
                pool[cid] = change
        used: set[str] = set()
        by_key = {c.key: cid for cid, c in pool.items() if c.key}
        for item in sorted(outlook_new, key=lambda t: t.id):
            match = self._match(item, pool, by_key, used)
            if match is not None and match.ref is not None:
                used.add(match.ref.id)
                self._link(item, match)
            elif self.to_crm:
                fields = project(item.fields)
                self.out.actions.append(
                    SyncPair(
                        outlook_id=item.id, crm_ref=None, crm_key=outlook_key(i.config.upn, item.id),
                        merged=fields, to_outlook=None, to_crm=fields, outlook_now=fields, etag=item.etag,
                        outlook_print=print_of(fields), reason="new in To Do",
                    )
                )  # fmt: skip
        if not self.to_outlook:
            return
        for cid in sorted(set(pool) - used):
            task = pool[cid]
            if cid in i.dropped or task.key or task.fields.status == TaskStatus.COMPLETED:
                continue  # dropped by the user, one of ours from To Do (its task is gone), or done
            fields = project(task.fields)
            self.out.actions.append(
                SyncPair(
                    outlook_id="", crm_ref=task.ref, crm_key="", merged=fields, to_outlook=fields,
                    to_crm=None, crm_print=print_of(fields, self.names), crm_task=task,
                    reason="new in the CRM",
                )
            )  # fmt: skip

    def _match(
        self, item: OutlookTask, pool: Mapping[str, CrmTask], by_key: Mapping[str, str], used: set[str]
    ) -> CrmTask | None:
        ours = by_key.get(outlook_key(self.i.config.upn, item.id))
        if ours is not None and ours not in used:
            return pool[ours]
        if item.crm_id and item.crm_id in pool and item.crm_id not in used:
            return pool[item.crm_id]
        for cid in sorted(pool):
            if (
                cid not in used
                and not pool[cid].key
                and _same_task(project(pool[cid].fields), project(item.fields))
            ):
                return pool[cid]
        return None

    def _link(self, item: OutlookTask, task: CrmTask) -> None:
        """First link of two tasks that are the same: fill each side from the other (the rule decides
        the fields both hold, differently)."""
        assert task.ref is not None
        o_fields = project(item.fields)
        c_fields = held_by_crm(project(task.fields), self.names, o_fields)
        rule = self.rule
        if not (self.to_outlook and self.to_crm):
            rule = ConflictRule.CRM_WINS if self.to_outlook else ConflictRule.OUTLOOK_WINS
        empty = TaskFields()
        merged, _ = merge(empty, o_fields, c_fields, outlook_wins=_outlook_wins(rule, item, task))
        link = Link(self.i.config.upn, STREAM, item.id, crm_key=task.ref.id, change_key=item.etag)
        before = len(self.out.actions)
        self._emit(
            item.id, link, merged, item, task, print_of(o_fields), print_of(c_fields, self.names), (),
            reason="matched by title and due date, or our stamp: linked, not duplicated",
        )  # fmt: skip
        if task.ref.id in self.i.dropped and len(self.out.actions) > before:
            pair = self.out.actions[-1]
            assert isinstance(pair, SyncPair)
            self.out.actions[-1] = dataclasses.replace(pair, undrop=task.ref.id)


def _outlook_wins(rule: str, o: OutlookTask | None, c: CrmTask | None) -> bool:
    if rule == "outlook-wins":
        return True
    if rule != "newest":
        return False
    o_when: datetime | None = o.modified if o is not None else None
    c_when: datetime | None = c.updated_at if c is not None else None
    return o_when is not None and c_when is not None and o_when > c_when
