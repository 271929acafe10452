"""Microsoft To Do (Microsoft's todoTask and todoTaskList pages, and what users report of them): task lists
and tasks, linkedResources and checklistItems, and delta over the lists and over each list's tasks.

To Do's own ways, kept: the built-in lists (`defaultList` "Tasks", `flaggedEmails` "Flagged emails")
cannot be renamed or deleted; `$filter` on `wellknownListName` fails; a task has an `@odata.etag` and no
`changeKey`; a due date keeps only its date (local midnight in the time zone it was written in, returned
in UTC or the `Prefer: outlook.timezone` zone, so its UTC date can be the day before); `completedDateTime`
is midnight UTC of the day it was completed; a body comes back as plain text; at most one linkedResource
in a create; completing a recurring task moves the same id to the next occurrence and leaves the completed
occurrence as a new task; and (a knob) changing a recurring task's due date leaves a second open task.
App-only reach: To Do ignores the mailbox scoping that denies mail, calendar and contacts, and answers 401
to an app without a Tasks role (the `tasks_permission` setting)."""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from emulators.graph import delta
from emulators.graph.mail import html_to_text
from emulators.graph.odata import compile_filter, context, list_page, parse_expand, parse_select
from emulators.graph.protocol import GraphError, Request, Response
from emulators.graph.recurrence import DAYS, occurrence_dates, parse_local, render_local, zone
from emulators.graph.routing import Ctx, Router
from emulators.graph.store import Tenant, TodoTask, TodoTaskList, User

IMPORTANCE = ("low", "normal", "high")
STATUS = ("notStarted", "inProgress", "completed", "waitingOnOthers", "deferred")
DATES = ("dueDateTime", "startDateTime", "reminderDateTime", "completedDateTime")
WRITABLE = frozenset(
    ["title", "body", "importance", "status", "isReminderOn", "categories", "recurrence", *DATES]
)
TASK_PROPS = frozenset(
    [
        *WRITABLE,
        "id",
        "createdDateTime",
        "lastModifiedDateTime",
        "bodyLastModifiedDateTime",
        "hasAttachments",
    ]
)
LIST_PROPS = frozenset(["id", "displayName", "isOwner", "isShared", "wellknownListName"])
LINK_PROPS = ("webUrl", "applicationName", "displayName", "externalId")
PATTERN_TYPES = ("daily", "weekly", "absoluteMonthly", "relativeMonthly", "absoluteYearly", "relativeYearly")
TASK_PAGE = 10  # not documented; Outlook's default page
LIST_PAGE = 50  # undocumented; one user reported seeing exactly 50 lists


def now() -> datetime:
    return datetime.now(UTC)


def stamp(dt: datetime) -> str:
    """To Do's DateTimeOffset: UTC with seven fractional digits (2020-08-18T09:03:05.8339192Z)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def invalid(message: str) -> GraphError:
    return GraphError(400, "invalidRequest", message)


# rendering ------------------------------------------------------------------------------------------------
def render_list(lst: TodoTaskList, select: frozenset[str] | None = None) -> dict[str, Any]:
    full = {
        "displayName": lst.display_name,
        "isOwner": lst.is_owner,
        "isShared": lst.is_shared,
        "wellknownListName": lst.wellknown,
    }
    out: dict[str, Any] = {"@odata.etag": f'W/"{lst.etag}"', "id": lst.id}
    out.update({k: v for k, v in full.items() if select is None or k in select})
    return out


def render_link(link: dict[str, Any]) -> dict[str, Any]:
    return {"id": link["id"], **{k: link.get(k) for k in LINK_PROPS}}


def render_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: item[k] for k in ("id", "displayName", "isChecked", "checkedDateTime", "createdDateTime")}


def render_task(
    t: TodoTask, tz: str, select: frozenset[str] | None = None, expand: frozenset[str] = frozenset()
) -> dict[str, Any]:
    full: dict[str, Any] = {
        "importance": t.data["importance"],
        "isReminderOn": t.data["isReminderOn"],
        "status": t.data["status"],
        "title": t.data["title"],
        "createdDateTime": stamp(t.created),
        "lastModifiedDateTime": stamp(t.modified),
        "hasAttachments": False,
        "categories": list(t.data["categories"]),
        "bodyLastModifiedDateTime": stamp(t.body_modified),
        "body": {"content": t.data["body"], "contentType": "text"},
    }
    for name in DATES:
        if name in t.dates:
            full[name] = render_local(t.dates[name], tz)
    if t.data.get("recurrence"):
        full["recurrence"] = t.data["recurrence"]
    out: dict[str, Any] = {"@odata.etag": f'W/"{t.etag}"', "id": t.id}
    out.update({k: v for k, v in full.items() if select is None or k in select})
    if "linkedresources" in expand:
        out["linkedResources"] = [render_link(x) for x in t.linked]
    if "checklistitems" in expand:
        out["checklistItems"] = [render_item(x) for x in t.checklist]
    return out


# values ---------------------------------------------------------------------------------------------------
def _date_time_zone(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not value.get("dateTime"):
        raise invalid(f"The {name} must be a dateTimeTimeZone with a dateTime.")
    return value


def due_instant(value: dict[str, Any]) -> tuple[datetime, str]:
    """A due date keeps its date only: local midnight of that date in the zone it was written in."""
    tz_name = str(value.get("timeZone") or "UTC")
    day = _day(str(value["dateTime"]))
    return datetime.combine(day, time(), tzinfo=zone(tz_name)).astimezone(UTC), tz_name


def completed_instant(value: dict[str, Any] | None) -> datetime:
    """Midnight UTC of the day (in UTC) the task was completed."""
    at = parse_local(value) if value else now()
    return datetime.combine(at.astimezone(UTC).date(), time(), tzinfo=UTC)


def _day(raw: str) -> date:
    try:
        return date.fromisoformat(raw[:10])
    except ValueError as exc:
        raise invalid(f"Invalid dateTime '{raw}'.") from exc


def recurrence_value(value: Any, due: datetime | None, due_zone: str) -> dict[str, Any]:
    """A patternedRecurrence with every member filled in, its range starting at the due date."""
    if not isinstance(value, dict) or not isinstance(value.get("pattern"), dict):
        raise invalid("The recurrence must have a pattern.")
    pattern = {
        "type": "daily",
        "interval": 1,
        "month": 0,
        "dayOfMonth": 0,
        "daysOfWeek": [],
        "firstDayOfWeek": "sunday",
        "index": "first",
        **value["pattern"],
    }
    if pattern["type"] not in PATTERN_TYPES:
        raise invalid(f"Unknown recurrence pattern type '{pattern['type']}'.")
    if any(str(d).lower() not in DAYS for d in pattern["daysOfWeek"]):
        raise invalid("Invalid daysOfWeek.")
    given = value.get("range") or {}
    start = given.get("startDate") or (due.astimezone(zone(due_zone)).date().isoformat() if due else "")
    if not start:
        raise invalid("A recurring task needs a dueDateTime or a range startDate.")
    rng = {
        "type": "noEnd",
        "startDate": str(start),
        "endDate": "0001-01-01",
        "recurrenceTimeZone": "",
        "numberOfOccurrences": 0,
        **{k: v for k, v in given.items() if v is not None},
    }
    _day(rng["startDate"])
    return {"pattern": pattern, "range": rng}


def _clean(body: Any, creating: bool) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("The request body must be a todoTask.")
    out: dict[str, Any] = {}
    for k, v in body.items():
        if k.startswith("@odata.") or (creating and k in ("linkedResources", "checklistItems")):
            continue
        if k not in WRITABLE:
            raise GraphError(
                400,
                "invalidRequest",
                f"The property '{k}' does not exist on type 'microsoft.toDo.todoTask' or cannot be written.",
            )
        if k == "importance" and v not in IMPORTANCE:
            raise invalid(f"Invalid importance '{v}'.")
        if k == "status" and v not in STATUS:
            raise invalid(f"Invalid status '{v}'.")
        if k in DATES and v is not None:
            _date_time_zone(v, k)
        out[k] = v
    return out


def _body_text(value: Any) -> str:
    """Both kinds are accepted; the task keeps (and returns) plain text."""
    if not value:
        return ""
    content = str(value.get("content") or "")
    return html_to_text(content) if str(value.get("contentType", "text")).lower() == "html" else content


# store operations -----------------------------------------------------------------------------------------
def _record(tenant: Tenant, lst: TodoTaskList, t: TodoTask, created: bool = False) -> None:
    if not created:
        t.etag = tenant.new_etag()
        t.modified = now()
    lst.log.record(tenant.next_seq(), t.id, "upsert")


def create_task(tenant: Tenant, user: User, lst: TodoTaskList, body: dict[str, Any]) -> TodoTask:
    if lst.wellknown == "flaggedEmails":
        raise invalid("Tasks can't be created in the flagged email list.")
    links = body.get("linkedResources") or []
    if len(links) > 1:
        raise invalid("Only one item in linkedResources is allowed.")
    data = _clean(body, creating=True)
    at = now()
    t = TodoTask(
        id=tenant.new_padded_id("AAMkAD"),
        list_id=lst.id,
        data={
            "title": str(data.get("title") or ""),
            "body": _body_text(data.get("body")),
            "importance": data.get("importance") or "normal",
            "status": data.get("status") or "notStarted",
            "isReminderOn": bool(data.get("isReminderOn", False)),
            "categories": list(data.get("categories") or []),
            "recurrence": None,
        },
        dates={},
        due_zone="UTC",
        created=at,
        modified=at,
        body_modified=at,
        etag=tenant.new_etag(),
    )
    _set_dates(t, data)
    if data.get("recurrence"):
        t.data["recurrence"] = recurrence_value(data["recurrence"], t.dates.get("dueDateTime"), t.due_zone)
        _due_from_range(t)
    if t.data["status"] == "completed":
        t.dates["completedDateTime"] = completed_instant(data.get("completedDateTime"))
    t.linked = [_link(x) for x in links]
    t.checklist = [_item(x) for x in body.get("checklistItems") or []]
    lst.tasks[t.id] = t
    _record(tenant, lst, t, created=True)
    return t


def _set_dates(t: TodoTask, data: dict[str, Any]) -> None:
    for name in ("dueDateTime", "startDateTime", "reminderDateTime"):
        if name not in data:
            continue
        if data[name] is None:
            t.dates.pop(name, None)
        elif name == "dueDateTime":
            t.dates[name], t.due_zone = due_instant(data[name])
        else:
            t.dates[name] = parse_local(data[name])


def _due_from_range(t: TodoTask) -> None:
    if "dueDateTime" not in t.dates:  # a series starts on its range's start date
        start = date.fromisoformat(t.data["recurrence"]["range"]["startDate"])
        t.dates["dueDateTime"] = datetime.combine(start, time(), tzinfo=UTC)


def _link(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("A linkedResource must be an object.")
    unknown = set(body) - {*LINK_PROPS, "id"} - {k for k in body if k.startswith("@odata.")}
    if unknown:
        raise invalid(f"The property '{sorted(unknown)[0]}' does not exist on type 'linkedResource'.")
    return {"id": str(uuid.uuid4()), **{k: body.get(k) for k in LINK_PROPS}}


def _item(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not body.get("displayName"):
        raise invalid("A checklistItem needs a displayName.")
    checked = bool(body.get("isChecked", False))
    return {
        "id": str(uuid.uuid4()),
        "displayName": str(body["displayName"]),
        "isChecked": checked,
        "checkedDateTime": stamp(now()) if checked else None,
        "createdDateTime": stamp(now()),
    }


def update_task(
    tenant: Tenant,
    user: User,
    lst: TodoTaskList,
    t: TodoTask,
    body: dict[str, Any],
    *,
    due_change_duplicates: bool = False,
) -> TodoTask:
    """PATCH: partial. Completing a recurring task advances it (and leaves the completed occurrence as a
    new task); with `due_change_duplicates`, a new due date on a recurring task leaves a second task."""
    data = _clean(body, creating=False)
    recurring = bool(t.data.get("recurrence"))
    if due_change_duplicates and recurring and data.get("dueDateTime"):
        copy = create_task(tenant, user, lst, {**_as_body(t), "dueDateTime": data["dueDateTime"]})
        rest = {k: v for k, v in data.items() if k != "dueDateTime"}
        if rest:
            update_task(tenant, user, lst, copy, rest)
        return t  # the original keeps its due date (and comes back unchanged)
    for k in ("title", "importance", "isReminderOn"):
        if k in data:
            t.data[k] = data[k] if k != "isReminderOn" else bool(data[k])
    if "categories" in data:
        t.data["categories"] = list(data["categories"] or [])
    if "body" in data:
        t.data["body"] = _body_text(data["body"])
        t.body_modified = now()
    _set_dates(t, data)
    if "recurrence" in data:
        value = data["recurrence"]
        t.data["recurrence"] = (
            recurrence_value(value, t.dates.get("dueDateTime"), t.due_zone) if value else None
        )
        if value:
            _due_from_range(t)
    status = data.get("status")
    if status == "completed" and t.data["status"] != "completed" and t.data.get("recurrence"):
        _complete_occurrence(tenant, user, lst, t, data.get("completedDateTime"))
        return t
    if status is not None:
        t.data["status"] = status
    if t.data["status"] == "completed":
        if "completedDateTime" in data or "completedDateTime" not in t.dates:
            t.dates["completedDateTime"] = completed_instant(data.get("completedDateTime"))
    else:
        t.dates.pop("completedDateTime", None)
    _record(tenant, lst, t)
    return t


def _as_body(t: TodoTask) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": t.data["title"],
        "body": {"content": t.data["body"], "contentType": "text"},
        "importance": t.data["importance"],
        "isReminderOn": t.data["isReminderOn"],
        "categories": list(t.data["categories"]),
    }
    if "reminderDateTime" in t.dates:
        body["reminderDateTime"] = render_local(t.dates["reminderDateTime"], "UTC")
    if t.data.get("recurrence"):
        body["recurrence"] = t.data["recurrence"]
    return body


def _complete_occurrence(
    tenant: Tenant, user: User, lst: TodoTaskList, t: TodoTask, completed: dict[str, Any] | None
) -> None:
    """The completed occurrence becomes a task of its own (completed, no recurrence, the same due date,
    categories and linkedResources); the series keeps its id and moves to its next due date, its reminder
    as far, not started again. A series with no occurrence left simply completes."""
    due = t.dates["dueDateTime"]
    local = zone(t.due_zone)
    today = due.astimezone(local).date()
    following = next(
        (d for d in occurrence_dates(t.data["recurrence"], today + timedelta(days=3700)) if d > today), None
    )
    if following is None:
        t.data["status"] = "completed"
        t.dates["completedDateTime"] = completed_instant(completed)
        _record(tenant, lst, t)
        return
    done_body = {k: v for k, v in _as_body(t).items() if k != "recurrence"}
    done_body.update(status="completed", dueDateTime=render_local(due, t.due_zone))
    if completed:
        done_body["completedDateTime"] = completed
    done = create_task(tenant, user, lst, done_body)
    done.linked = [{**x, "id": str(uuid.uuid4())} for x in t.linked]
    next_due = datetime.combine(following, time(), tzinfo=local).astimezone(UTC)
    shift = next_due - due
    t.dates["dueDateTime"] = next_due
    if "reminderDateTime" in t.dates:
        t.dates["reminderDateTime"] += shift
    t.data["status"] = "notStarted"
    t.dates.pop("completedDateTime", None)
    _record(tenant, lst, t)


def delete_task(tenant: Tenant, lst: TodoTaskList, t: TodoTask) -> None:
    del lst.tasks[t.id]
    lst.log.record(tenant.next_seq(), t.id, "removed")


def move_task(tenant: Tenant, user: User, t: TodoTask, target: TodoTaskList) -> TodoTask:
    """A client moves a task to another list: deleted in one list, a new task (new id) in the other."""
    source = user.todo_lists[t.list_id]
    if source is target:
        return t
    delete_task(tenant, source, t)
    t.id = tenant.new_padded_id("AAMkAD")
    t.list_id = target.id
    target.tasks[t.id] = t
    _record(tenant, target, t)
    return t


def touch_task(tenant: Tenant, user: User, t: TodoTask) -> None:
    """A linkedResource or checklistItem changed: the task changes with it (a new etag, in delta), an
    assumption, since the docs leave it open."""
    _record(tenant, user.todo_lists[t.list_id], t)


def rename_list(tenant: Tenant, user: User, lst: TodoTaskList, name: str) -> None:
    if lst.wellknown != "none":
        raise invalid("A built-in list can't be renamed.")
    if not name:
        raise invalid("The displayName is required.")
    lst.display_name = name
    lst.etag = tenant.new_etag()
    user.todo_log.record(tenant.next_seq(), lst.id, "upsert")


def delete_list(tenant: Tenant, user: User, lst: TodoTaskList) -> None:
    if lst.wellknown != "none":
        raise invalid("A built-in list can't be deleted.")
    del user.todo_lists[lst.id]
    user.todo_log.record(tenant.next_seq(), lst.id, "removed")


def find_list(user: User, ref: str) -> TodoTaskList:
    lst = user.todo_lists.get(ref)
    if lst is None:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return lst


def named_list(user: User, ref: str) -> TodoTaskList:
    """For the control API and seeds: a list by id, by wellknownListName, or by displayName."""
    for lst in user.todo_lists.values():
        if ref in (lst.id, lst.wellknown) or lst.display_name.lower() == ref.lower():
            return lst
    raise GraphError(404, "ErrorItemNotFound", f"No To Do list '{ref}'.")


def find_task(user: User, ref: str) -> TodoTask:
    for lst in user.todo_lists.values():
        t = lst.tasks.get(ref)
        if t is not None:
            return t
    raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


# handlers -------------------------------------------------------------------------------------------------
def _access(ctx: Ctx, write: bool = False) -> None:
    """Application permissions: Tasks.ReadWrite.All (default), Tasks.Read.All, or none (401 UnknownError
    for every To Do request, while mail works)."""
    granted = ctx.emu.config.tasks_permission
    if granted == "none":
        raise GraphError(401, "UnknownError", "")
    if write and granted == "read":
        raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")


def _tz(req: Request) -> str:
    tz = req.prefer.get("outlook.timezone", "") or "UTC"
    zone(tz)
    return tz


def _list(ctx: Ctx) -> TodoTaskList:
    return find_list(ctx.u, ctx.params["list"])


def _task(ctx: Ctx) -> tuple[TodoTaskList, TodoTask]:
    lst = _list(ctx)
    t = lst.tasks.get(ctx.params["task"])
    if t is None:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return lst, t


def _check_if_match(req: Request, etag: str) -> None:
    want = req.headers.get("if-match", "")
    if want and want != "*" and want.removeprefix("W/").strip('"') != etag:
        raise GraphError(412, "PreconditionFailed", "The ETag value in the If-Match header does not match.")


def _expand(req: Request) -> frozenset[str]:
    return frozenset(parse_expand(req))


def _with_tz(resp: Response, req: Request, tz: str) -> Response:
    if "outlook.timezone" in req.prefer:
        resp.headers["Preference-Applied"] = f'outlook.timezone="{tz}"'
    return resp


def list_lists(ctx: Ctx) -> Response:
    _access(ctx)
    req = ctx.req
    select = parse_select(req, LIST_PROPS, "microsoft.toDo.todoTaskList")
    rows = [render_list(x) for x in ctx.u.todo_lists.values()]
    raw = req.query.get("$filter", "")
    if raw:
        if "wellknownlistname" in raw.lower():
            value = raw.split("eq", 1)[-1].strip()
            raise GraphError(
                400,
                "BadRequest",
                f"The string 'microsoft.toDo.wellknownListName{value}' is not a valid enumeration type "
                "constant.",
            )
        test = compile_filter(raw)
        rows = [r for r in rows if test(r.get)]
    if select is not None:
        rows = [{k: v for k, v in r.items() if k in select or k in ("id", "@odata.etag")} for r in rows]
    page = list_page(req, rows, context(req, f"users('{ctx.u.id}')/todo/lists"), default_top=LIST_PAGE)
    return Response(200, page)


def get_list(ctx: Ctx) -> Response:
    _access(ctx)
    select = parse_select(ctx.req, LIST_PROPS, "microsoft.toDo.todoTaskList")
    body = render_list(_list(ctx), select)
    return Response(200, {"@odata.context": context(ctx.req, "todo/lists/$entity"), **body})


def post_list(ctx: Ctx) -> Response:
    _access(ctx, write=True)
    name = str((ctx.req.json() or {}).get("displayName") or "")
    if not name:
        raise invalid("The displayName is required.")
    lst = ctx.emu.tenant.add_todo_list(ctx.u, name)  # no uniqueness rule: two lists may share a name
    return Response(201, {"@odata.context": context(ctx.req, "todo/lists/$entity"), **render_list(lst)})


def patch_list(ctx: Ctx) -> Response:
    _access(ctx, write=True)
    lst = _list(ctx)
    body = ctx.req.json() or {}
    unknown = {k for k in body if not k.startswith("@odata.")} - {"displayName"}
    if unknown:
        raise invalid(f"The property '{sorted(unknown)[0]}' cannot be updated.")
    rename_list(ctx.emu.tenant, ctx.u, lst, str(body.get("displayName") or ""))
    return Response(200, render_list(lst))


def remove_list(ctx: Ctx) -> Response:
    _access(ctx, write=True)
    delete_list(ctx.emu.tenant, ctx.u, _list(ctx))
    return Response(204)


def list_tasks(ctx: Ctx) -> Response:
    _access(ctx)
    req, tz = ctx.req, _tz(ctx.req)
    select = parse_select(req, TASK_PROPS, "microsoft.toDo.todoTask")
    expand = _expand(req) | {"linkedresources"}  # inline in the list-tasks example (TLIST)
    tasks = list(_list(ctx).tasks.values())
    if req.query.get("$filter"):
        test = compile_filter(req.query["$filter"])
        tasks = [t for t in tasks if test(functools.partial(_task_value, t))]
    page = list_page(
        req,
        tasks,
        context(req, f"users('{ctx.u.id}')/todo/lists('{ctx.params['list']}')/tasks"),
        default_top=TASK_PAGE,
        render=lambda t: render_task(t, tz, select, expand),
    )
    return _with_tz(Response(200, page), req, tz)


def _task_value(t: TodoTask, prop: str) -> Any:
    if prop in DATES:
        return render_local(t.dates[prop], "UTC") if prop in t.dates else None
    if prop in ("createdDateTime", "lastModifiedDateTime"):
        return t.created if prop == "createdDateTime" else t.modified
    return t.data.get(prop)


def get_task(ctx: Ctx) -> Response:
    _access(ctx)
    req, tz = ctx.req, _tz(ctx.req)
    _, t = _task(ctx)
    select = parse_select(req, TASK_PROPS, "microsoft.toDo.todoTask")
    body = render_task(t, tz, select, _expand(req) | {"linkedresources"})
    return _with_tz(Response(200, {"@odata.context": context(req, "todo/tasks/$entity"), **body}), req, tz)


def post_task(ctx: Ctx) -> Response:
    _access(ctx, write=True)
    req, tz = ctx.req, _tz(ctx.req)
    t = create_task(ctx.emu.tenant, ctx.u, _list(ctx), req.json())
    body = render_task(t, tz, None, frozenset({"linkedresources"}))
    return _with_tz(Response(201, {"@odata.context": context(req, "todo/tasks/$entity"), **body}), req, tz)


def patch_task(ctx: Ctx) -> Response:
    _access(ctx, write=True)
    req, tz = ctx.req, _tz(ctx.req)
    lst, t = _task(ctx)
    _check_if_match(req, t.etag)
    dup = ctx.emu.config.todo_due_change_duplicates
    update_task(ctx.emu.tenant, ctx.u, lst, t, req.json(), due_change_duplicates=dup)
    body = render_task(t, tz, None, frozenset({"linkedresources"}))
    return _with_tz(Response(200, {"@odata.context": context(req, "todo/tasks/$entity"), **body}), req, tz)


def remove_task(ctx: Ctx) -> Response:
    _access(ctx, write=True)
    lst, t = _task(ctx)
    _check_if_match(ctx.req, t.etag)
    delete_task(ctx.emu.tenant, lst, t)
    return Response(204)


# linkedResources and checklistItems: small collections on the task ----------------------------------------
CHILD_KEY = {"linkedResources": "linked", "checklistItems": "item"}


def _children(ctx: Ctx, kind: str) -> tuple[TodoTask, list[dict[str, Any]]]:
    _, t = _task(ctx)
    return t, (t.linked if kind == "linkedResources" else t.checklist)


def _child(ctx: Ctx, kind: str) -> tuple[TodoTask, list[dict[str, Any]], dict[str, Any]]:
    t, items = _children(ctx, kind)
    found = next((x for x in items if x["id"] == ctx.params[CHILD_KEY[kind]]), None)
    if found is None:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return t, items, found


def _render_child(kind: str, item: dict[str, Any]) -> dict[str, Any]:
    return render_link(item) if kind == "linkedResources" else render_item(item)


def list_children(ctx: Ctx, kind: str) -> Response:
    _access(ctx)
    _, items = _children(ctx, kind)
    value = [_render_child(kind, x) for x in items]
    return Response(200, {"@odata.context": context(ctx.req, kind), "value": value})


def post_child(ctx: Ctx, kind: str) -> Response:
    """A linkedResource or checklistItem is added; the task changes with it (a new etag, in delta)."""
    _access(ctx, write=True)
    t, items = _children(ctx, kind)
    made = _link(ctx.req.json()) if kind == "linkedResources" else _item(ctx.req.json())
    items.append(made)
    touch_task(ctx.emu.tenant, ctx.u, t)
    return Response(201, _render_child(kind, made))


def get_child(ctx: Ctx, kind: str) -> Response:
    _access(ctx)
    return Response(200, _render_child(kind, _child(ctx, kind)[2]))


def patch_child(ctx: Ctx, kind: str) -> Response:
    _access(ctx, write=True)
    t, _, found = _child(ctx, kind)
    body = {k: v for k, v in (ctx.req.json() or {}).items() if not k.startswith("@odata.")}
    if kind == "linkedResources":
        found.update({**_link({**{k: found.get(k) for k in LINK_PROPS}, **body}), "id": found["id"]})
    else:
        if "displayName" in body:
            found["displayName"] = str(body["displayName"])
        if "isChecked" in body:
            found["isChecked"] = bool(body["isChecked"])
            found["checkedDateTime"] = stamp(now()) if found["isChecked"] else None
    touch_task(ctx.emu.tenant, ctx.u, t)
    return Response(200, _render_child(kind, found))


def delete_child(ctx: Ctx, kind: str) -> Response:
    _access(ctx, write=True)
    t, items, found = _child(ctx, kind)
    items.remove(found)
    touch_task(ctx.emu.tenant, ctx.u, t)
    return Response(204)


# delta ----------------------------------------------------------------------------------------------------
def lists_delta(ctx: Ctx) -> Response:
    _access(ctx)
    u, req, emu = ctx.u, ctx.req, ctx.emu
    cursor = delta.resume(emu.states, req, u.id, emu.tenant.seq)
    if cursor is None:
        select = parse_select(req, LIST_PROPS, "microsoft.toDo.todoTaskList")
        opts = {"select": sorted(select) if select is not None else None}
        cursor = delta.begin(emu.states, u.id, "todoLists", emu.tenant.seq, opts)
    sel = cursor.options.get("select")
    select = frozenset(sel) if sel is not None else None

    def emit(seq: int, key: str, kind: str, c: delta.Cursor) -> list[dict[str, Any]] | None:
        lst = u.todo_lists.get(key)
        if kind == "removed" or lst is None:
            return None if c.initial(seq) else [{"id": key, "@removed": {"reason": "deleted"}}]
        return [render_list(lst, select)]

    link = f"{req.base_url}/users/{u.id}/todo/lists/delta"
    page = delta.run_page(emu.states, u.todo_log, cursor, limit=delta.page_size(req), link=link, emit=emit)
    return Response(200, page.body(context(req, "Collection(todoTaskList)")))


def tasks_delta(ctx: Ctx) -> Response:
    """Per list. `$select`, `$expand` and `$top` (a cap on the round, as for messages) go into the token;
    `$filter` and `$orderby` (which the page copies from message delta) answer 400. The Prefer set
    (page size, time zone) is read from each request."""
    _access(ctx)
    u, req, emu = ctx.u, ctx.req, ctx.emu
    tz = _tz(req)
    lst = _list(ctx)
    cursor = delta.resume(emu.states, req, u.id, emu.tenant.seq)
    if cursor is None:
        for bad in ("$filter", "$orderby", "$search", "$skip"):
            if bad in req.query:
                raise GraphError(
                    400,
                    "ErrorInvalidUrlQuery",
                    f"The query parameter '{bad}' is not supported with change tracking over the 'Tasks' "
                    "resource.",
                )
        select = parse_select(req, TASK_PROPS, "microsoft.toDo.todoTask")
        opts: dict[str, Any] = {
            "select": sorted(select) if select is not None else None,
            "expand": sorted(_expand(req)),
            "top": int(req.query["$top"]) if req.query.get("$top", "").isdigit() else 0,
        }
        cursor = delta.begin(emu.states, u.id, lst.id, emu.tenant.seq, opts)
    elif cursor.collection != lst.id:
        raise GraphError(400, "ErrorInvalidUrlQuery", "The delta token belongs to another list.")
    o = cursor.options
    sel = o.get("select")
    select = frozenset(sel) if sel is not None else None
    expand = frozenset(o.get("expand") or [])

    def emit(seq: int, key: str, kind: str, c: delta.Cursor) -> list[dict[str, Any]] | None:
        t = lst.tasks.get(key)
        if kind == "removed" or t is None:
            return None if c.initial(seq) else [{"id": key, "@removed": {"reason": "deleted"}}]
        return [render_task(t, tz, select, expand)]

    link = f"{req.base_url}/users/{u.id}/todo/lists/{lst.id}/tasks/delta"
    page = delta.run_page(
        emu.states, lst.log, cursor, limit=delta.page_size(req), link=link, emit=emit, cap=o.get("top") or 0
    )
    return _with_tz(Response(200, page.body(context(req, "Collection(todoTask)"))), req, tz)


def get_todo(ctx: Ctx) -> Response:
    """GET /users/{id}/todo: the container of the lists (a cheap probe of To Do access)."""
    _access(ctx)
    body = {"@odata.context": context(ctx.req, f"users('{ctx.u.id}')/todo/$entity"), "id": "todo" + ctx.u.id}
    return Response(200, body)


def routes(r: Router) -> None:
    r.add("GET", "/users/{user}/todo", get_todo)
    base = "/users/{user}/todo/lists"
    r.add("GET", base + "/delta", lists_delta)
    r.add("GET", base, list_lists)
    r.add("POST", base, post_list)
    r.add("GET", base + "/{list}", get_list)
    r.add("PATCH", base + "/{list}", patch_list)
    r.add("DELETE", base + "/{list}", remove_list)
    tasks = base + "/{list}/tasks"
    r.add("GET", tasks + "/delta", tasks_delta)
    r.add("GET", tasks, list_tasks)
    r.add("POST", tasks, post_task)
    r.add("GET", tasks + "/{task}", get_task)
    r.add("PATCH", tasks + "/{task}", patch_task)
    r.add("DELETE", tasks + "/{task}", remove_task)
    for kind, key in CHILD_KEY.items():
        coll, one = f"{tasks}/{{task}}/{kind}", f"{tasks}/{{task}}/{kind}/{{{key}}}"
        r.add("GET", coll, functools.partial(list_children, kind=kind))
        r.add("POST", coll, functools.partial(post_child, kind=kind))
        r.add("GET", one, functools.partial(get_child, kind=kind))
        r.add("PATCH", one, functools.partial(patch_child, kind=kind))
        r.add("DELETE", one, functools.partial(delete_child, kind=kind))
