"""Tasks on both sides: the mapped fields, a To Do task, a CRM task, and their changes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from shared.model.people import CrmRef


class TaskStatus(StrEnum):
    """To Do's own statuses that the CRM holds too (`waitingOnOthers` and `deferred` read as in progress)."""

    NOT_STARTED = "notStarted"
    IN_PROGRESS = "inProgress"
    COMPLETED = "completed"


class TaskImportance(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


@dataclass(frozen=True)
class TaskFields:
    """The mapped fields of a task, the same on both sides (docs/streams/tasks.md §2).

    `due` is a date: To Do keeps no time of day on a due date. `reminder` is an instant (None: no
    reminder). `completed` is the day the task was completed (To Do keeps the day only)."""

    title: str = ""
    body: str = ""
    due: date | None = None
    reminder: datetime | None = None
    importance: TaskImportance = TaskImportance.NORMAL
    status: TaskStatus = TaskStatus.NOT_STARTED
    completed: date | None = None
    categories: tuple[str, ...] = ()


TASK_FIELD_NAMES = ("title", "body", "due", "reminder", "importance", "status", "completed", "categories")


@dataclass(frozen=True)
class OutlookTask:
    """A task as read from the owned To Do list. To Do has no changeKey: `etag` is its `@odata.etag`."""

    id: str
    etag: str
    fields: TaskFields
    modified: datetime | None = None
    recurring: bool = False  # a To Do series (completing it moves it to its next occurrence)
    crm_id: str = ""  # the CRM task id we put in its linkedResource when we created it


@dataclass(frozen=True)
class OutlookTaskRemoved:
    id: str


TaskChange = OutlookTask | OutlookTaskRemoved


def task_change_id(change: TaskChange) -> str:
    return change.id


@dataclass(frozen=True)
class CrmTask:
    """A task as the CRM holds it. `key` is our idempotency key for tasks we created; `regarding` is the
    CRM record the task is about ("" for none); `url` is where a person opens the task in the CRM."""

    ref: CrmRef | None
    owner: str
    fields: TaskFields
    key: str = ""
    regarding: str = ""
    url: str = ""
    updated_at: datetime | None = None


@dataclass(frozen=True)
class CrmTaskRemoved:
    """The task was deleted in the CRM, or is no longer assigned to this owner."""

    ref: CrmRef
    owner: str


@dataclass(frozen=True)
class TaskFeedPage:
    """One read of the CRM's task change feed for an owner."""

    changes: tuple[CrmTask | CrmTaskRemoved, ...]
    cursor: str
    snapshot: bool = False  # the connector has no feed and returned every current task instead
