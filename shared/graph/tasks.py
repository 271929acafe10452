"""The Outlook side of the tasks stream: the owned To Do list, its tasks delta, and writes inside that
list only, with msgraph-sdk.

- The list is found by name among the user's lists (`$filter=displayName eq '…'`, the built-in lists
  never: they are told by `wellknownListName`, not by name) or created. Two lists of that name: the
  first one Graph lists is kept.
- Delta is per list. Every request re-sends the Prefer set (page size); links are used verbatim. The
  first request `$expand`s `linkedResources`, so a task we created before a crash is recognised on the
  re-run by the CRM id in its linkedResource (`externalId`). No `$select` (To Do ignores or refuses it).
- Dates: a due date is a date only. It is written as midnight of that date in the user's time zone
  (`TasksTimeZone`), as To Do's own apps write it, and read back by turning the instant Graph returns
  into that zone (the UTC date can be the day before). `completedDateTime` is midnight UTC of the day;
  a reminder keeps its time.
- Writes are partial PATCHes of the fields that differ from what the task holds (To Do's statuses
  `waitingOnOthers` and `deferred`, read as in progress, are not overwritten by an edit of another
  field; `recurrence` is never sent back), with `If-Match` on the task's `@odata.etag`, so a To Do
  edit made after our read is not overwritten (412: `OutlookChanged`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.headers_collection import HeadersCollection
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.importance import Importance
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.linked_resource import LinkedResource
from msgraph.generated.models.task_status import TaskStatus as GraphStatus
from msgraph.generated.models.todo_task import TodoTask
from msgraph.generated.models.todo_task_list import TodoTaskList
from msgraph.generated.models.wellknown_list_name import WellknownListName
from msgraph.generated.users.item.todo.lists.item.tasks.delta.delta_request_builder import (
    DeltaRequestBuilder,
)
from msgraph.generated.users.item.todo.lists.lists_request_builder import ListsRequestBuilder
from msgraph.graph_service_client import GraphServiceClient

from shared.errors import GraphError, GraphNotFound, OutlookChanged
from shared.graph.client import GraphCaller
from shared.model import (
    CrmTask,
    OutlookTask,
    OutlookTaskRemoved,
    Page,
    TaskChange,
    TaskFields,
    TaskImportance,
    TaskStatus,
)

APPLICATION = "CRM"  # the linkedResource's applicationName
OPEN_IN_CRM = "Open in the CRM"
_STATUS = {
    GraphStatus.NotStarted: TaskStatus.NOT_STARTED,
    GraphStatus.InProgress: TaskStatus.IN_PROGRESS,
    GraphStatus.Completed: TaskStatus.COMPLETED,
    GraphStatus.WaitingOnOthers: TaskStatus.IN_PROGRESS,
    GraphStatus.Deferred: TaskStatus.IN_PROGRESS,
}
_TO_GRAPH_STATUS = {
    TaskStatus.NOT_STARTED: GraphStatus.NotStarted,
    TaskStatus.IN_PROGRESS: GraphStatus.InProgress,
    TaskStatus.COMPLETED: GraphStatus.Completed,
}
_IMPORTANCE = {Importance.Low: TaskImportance.LOW, Importance.High: TaskImportance.HIGH}
_TO_GRAPH_IMPORTANCE = {
    TaskImportance.LOW: Importance.Low,
    TaskImportance.NORMAL: Importance.Normal,
    TaskImportance.HIGH: Importance.High,
}


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def instant(value: DateTimeTimeZone | None) -> datetime | None:
    """A dateTimeTimeZone as an aware UTC instant (Graph answers in UTC unless asked otherwise)."""
    if value is None or not value.date_time:
        return None
    raw = value.date_time.replace("Z", "")
    whole, _, fraction = raw.partition(".")
    try:
        naive = datetime.fromisoformat(whole)
    except ValueError:
        return None
    micros = int((fraction + "000000")[:6]) if fraction.isdigit() else 0
    return naive.replace(microsecond=micros, tzinfo=_zone(value.time_zone or "UTC")).astimezone(UTC)


def due_date(value: DateTimeTimeZone | None, zone: str) -> date | None:
    """The due date a user sees: the stored instant (local midnight of the writer) in their zone."""
    at = instant(value)
    return at.astimezone(_zone(zone)).date() if at is not None else None


def completed_date(value: DateTimeTimeZone | None) -> date | None:
    """To Do keeps midnight UTC of the completion day."""
    at = instant(value)
    return at.date() if at is not None else None


def to_fields(task: TodoTask, zone: str) -> TaskFields:
    status = _STATUS.get(task.status or GraphStatus.NotStarted, TaskStatus.NOT_STARTED)
    return TaskFields(
        title=(task.title or "").strip(),
        body=((task.body.content if task.body else "") or "").strip(),
        due=due_date(task.due_date_time, zone),
        reminder=instant(task.reminder_date_time) if task.is_reminder_on else None,
        importance=_IMPORTANCE.get(task.importance or Importance.Normal, TaskImportance.NORMAL),
        status=status,
        completed=completed_date(task.completed_date_time) if status == TaskStatus.COMPLETED else None,
        categories=tuple(c for c in task.categories or () if c),
    )


def _etag(task: TodoTask) -> str:
    raw = str((task.additional_data or {}).get("@odata.etag") or "")
    return raw.removeprefix("W/").strip('"')


def _crm_id(task: TodoTask) -> str:
    for link in task.linked_resources or []:
        if link.application_name == APPLICATION and link.external_id:
            return link.external_id
    return ""


def to_task(task: TodoTask, zone: str, *, crm_id: str = "") -> OutlookTask:
    return OutlookTask(
        id=task.id or "",
        etag=_etag(task),
        fields=to_fields(task, zone),
        modified=task.last_modified_date_time,
        recurring=task.recurrence is not None,
        crm_id=crm_id or _crm_id(task),
    )


def _when(day: date, zone: str) -> DateTimeTimeZone:
    return DateTimeTimeZone(date_time=f"{day.isoformat()}T00:00:00", time_zone=zone or "UTC")


def to_graph(fields: TaskFields, zone: str, since: TaskFields | None = None) -> TodoTask:
    """The Graph body: every mapped field (a create), or those that differ from `since` (an update).
    A field cleared is sent as null."""
    body = TodoTask()
    nulls: dict[str, Any] = {}
    changed = {
        name
        for name in ("title", "body", "due", "reminder", "importance", "status", "completed", "categories")
        if since is None or getattr(fields, name) != getattr(since, name)
    }
    if "title" in changed:
        body.title = fields.title
    if "body" in changed:
        body.body = ItemBody(content=fields.body, content_type=BodyType.Text)
    if "due" in changed:
        if fields.due is None:
            nulls["dueDateTime"] = None
        else:
            body.due_date_time = _when(fields.due, zone)
    if "reminder" in changed:
        body.is_reminder_on = fields.reminder is not None
        if fields.reminder is not None:
            at = fields.reminder.astimezone(UTC).replace(tzinfo=None)
            body.reminder_date_time = DateTimeTimeZone(date_time=at.isoformat(), time_zone="UTC")
        elif since is not None:
            nulls["reminderDateTime"] = None
    if "importance" in changed:
        body.importance = _TO_GRAPH_IMPORTANCE[fields.importance]
    if "status" in changed or ("completed" in changed and fields.status == TaskStatus.COMPLETED):
        body.status = _TO_GRAPH_STATUS[fields.status]
        if fields.status == TaskStatus.COMPLETED and fields.completed is not None:
            body.completed_date_time = DateTimeTimeZone(
                date_time=datetime.combine(fields.completed, time()).isoformat(), time_zone="UTC"
            )
    if "categories" in changed:
        body.categories = list(fields.categories)
    if nulls:
        body.additional_data = nulls
    return body


def prefer_headers(page_size: int) -> HeadersCollection:
    headers = HeadersCollection()
    headers.add("Prefer", f"odata.maxpagesize={page_size}")
    return headers


class GraphTasks:
    def __init__(self, client: GraphServiceClient, caller: GraphCaller, *, page_size: int = 100) -> None:
        self._client = client
        self._caller = caller
        self._page_size = page_size

    def _config(self, query: Any = None, if_match: str = "") -> RequestConfiguration[Any]:
        headers = prefer_headers(self._page_size)
        if if_match:
            headers.add("If-Match", f'W/"{if_match}"')
        return RequestConfiguration(headers=headers, query_parameters=query)

    def _lists(self, user: str) -> Any:
        return self._client.users.by_user_id(user).todo.lists

    def _tasks(self, user: str, list_id: str) -> Any:
        return self._lists(user).by_todo_task_list_id(list_id).tasks

    async def owned_list(self, user: str, name: str) -> str:
        """The id of the user's own To Do list called `name` (never a built-in one), created when
        missing."""
        found = await self._find_list(user, name)
        if found:
            return found
        lists = self._lists(user)
        created = await self._caller.call(
            user, lambda: lists.post(TodoTaskList(display_name=name), request_configuration=self._config())
        )
        if created is None or not created.id:
            raise GraphError("Graph created the To Do list but returned no id")
        return str(created.id)

    async def _find_list(self, user: str, name: str) -> str:
        builder: Any = self._lists(user)
        escaped = name.replace("'", "''")
        query = ListsRequestBuilder.ListsRequestBuilderGetQueryParameters(
            filter=f"displayName eq '{escaped}'"
        )
        page = await self._caller.call(user, lambda: builder.get(request_configuration=self._config(query)))
        while page is not None:
            for found in page.value or []:
                builtin = found.wellknown_list_name not in (None, WellknownListName.None_)
                if found.id and not builtin and (found.display_name or "").strip().lower() == name.lower():
                    return str(found.id)
            if not page.odata_next_link:
                return ""
            request = partial(
                builder.with_url(page.odata_next_link).get, request_configuration=self._config()
            )
            page = await self._caller.call(user, request)
        return ""

    async def read_page(self, user: str, list_id: str, link: str, zone: str) -> Page[TaskChange]:
        """One delta page of the list: from a saved link, or (link == "") a new initial round."""
        builder: DeltaRequestBuilder = self._tasks(user, list_id).delta
        if link:
            request = builder.with_url(link)
            config = self._config()
        else:
            request = builder
            config = self._config(
                DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(expand=["linkedResources"])
            )
        response = await self._caller.call(user, lambda: request.get(request_configuration=config))
        if response is None:
            return Page()
        changes: list[TaskChange] = []
        for task in response.value or []:
            if "@removed" in (task.additional_data or {}):
                changes.append(OutlookTaskRemoved(id=task.id or ""))
            else:
                changes.append(to_task(task, zone))
        return Page(changes, response.odata_next_link or "", response.odata_delta_link or "")

    async def get(self, user: str, list_id: str, task_id: str, zone: str) -> OutlookTask | None:
        builder = self._tasks(user, list_id).by_todo_task_id(task_id)
        try:
            task = await self._caller.call(user, lambda: builder.get(request_configuration=self._config()))
        except GraphNotFound:
            return None
        return None if task is None else to_task(task, zone)

    async def create(
        self, user: str, list_id: str, fields: TaskFields, *, crm: CrmTask, zone: str
    ) -> OutlookTask:
        """A task for a CRM task, with one linkedResource (To Do takes one per create) that carries the
        CRM's id and its web address back into Outlook."""
        assert crm.ref is not None
        body = to_graph(fields, zone)
        body.linked_resources = [
            LinkedResource(
                application_name=APPLICATION,
                display_name=OPEN_IN_CRM,
                external_id=crm.ref.id,
                web_url=crm.url or None,
            )
        ]
        tasks = self._tasks(user, list_id)
        created = await self._caller.call(
            user, lambda: tasks.post(body, request_configuration=self._config())
        )
        if created is None or not created.id:
            raise GraphError("Graph created the task but returned no id")
        return to_task(created, zone, crm_id=crm.ref.id)

    async def update(
        self,
        user: str,
        list_id: str,
        task_id: str,
        fields: TaskFields,
        *,
        since: TaskFields | None,
        etag: str,
        zone: str,
    ) -> OutlookTask:
        builder = self._tasks(user, list_id).by_todo_task_id(task_id)
        body = to_graph(fields, zone, since)
        config = self._config(if_match=etag)
        try:
            updated = await self._caller.call(user, lambda: builder.patch(body, request_configuration=config))
        except GraphError as error:
            if error.status == 412:
                raise OutlookChanged(str(error), status=412, code=error.code) from error
            raise
        if updated is None:
            raise GraphError("Graph updated the task but returned nothing")
        return to_task(updated, zone)

    async def delete(self, user: str, list_id: str, task_id: str) -> None:
        """Delete from the owned list (a task already gone is not an error)."""
        builder = self._tasks(user, list_id).by_todo_task_id(task_id)
        try:
            await self._caller.call(user, lambda: builder.delete(request_configuration=self._config()))
        except GraphNotFound:
            return
