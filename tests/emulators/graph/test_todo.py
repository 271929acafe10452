"""Microsoft To Do: lists, tasks, linkedResources, checklistItems, delta, and To Do's quirks, driven
through msgraph-sdk (raw httpx where the SDK cannot express the case)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.checklist_item import ChecklistItem
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.day_of_week import DayOfWeek
from msgraph.generated.models.importance import Importance
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.linked_resource import LinkedResource
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.patterned_recurrence import PatternedRecurrence
from msgraph.generated.models.recurrence_pattern import RecurrencePattern
from msgraph.generated.models.recurrence_pattern_type import RecurrencePatternType
from msgraph.generated.models.subscription import Subscription
from msgraph.generated.models.task_status import TaskStatus
from msgraph.generated.models.todo_task import TodoTask
from msgraph.generated.models.todo_task_list import TodoTaskList
from msgraph.generated.models.wellknown_list_name import WellknownListName
from msgraph.generated.users.item.todo.lists.lists_request_builder import ListsRequestBuilder

from tests.emulators.graph.conftest import cfg
from tests.emulators.graph.test_mailboxes import fresh


def lists(graph, upn):
    return graph.users.by_user_id(upn).todo.lists


def tasks(graph, upn, list_id):
    return lists(graph, upn).by_todo_task_list_id(list_id).tasks


async def new_list(graph, upn, name="CRM Tasks") -> str:
    made = await lists(graph, upn).post(TodoTaskList(display_name=name))
    return made.id


def due(day_time: str, zone: str) -> DateTimeTimeZone:
    return DateTimeTimeZone(date_time=day_time, time_zone=zone)


async def delta_round(builder, link=None, *prefer):
    """One task (or list) delta round by hand, re-sending the Prefer set on every page: (items, pages,
    deltaLink); removed items as ("removed", id)."""
    prefer = prefer or ("odata.maxpagesize=10",)
    page = await (builder.with_url(link) if link else builder).get(request_configuration=cfg(*prefer))
    items, pages = [], 0
    while True:
        pages += 1
        for x in page.value or []:
            gone = (x.additional_data or {}).get("@removed")
            items.append(("removed", x.id) if gone else x)
        if page.odata_next_link:
            assert not page.odata_delta_link
            page = await builder.with_url(page.odata_next_link).get(request_configuration=cfg(*prefer))
            continue
        return items, pages, page.odata_delta_link


# lists ----------------------------------------------------------------------------------------------------
async def test_built_in_lists_cannot_be_renamed_or_deleted_and_lists_are_found_by_name(graph, raw, emulator):
    upn = fresh(emulator, "ann")
    got = await lists(graph, upn).get()
    assert [(x.display_name, x.wellknown_list_name) for x in got.value] == [
        ("Tasks", WellknownListName.DefaultList),
        ("Flagged emails", WellknownListName.FlaggedEmails),
    ]
    made = await lists(graph, upn).post(TodoTaskList(display_name="O'Brien deals"))
    assert (made.wellknown_list_name, made.is_owner, made.is_shared) == (WellknownListName.None_, True, False)
    again = await lists(graph, upn).post(TodoTaskList(display_name="O'Brien deals"))  # no uniqueness rule
    q = ListsRequestBuilder.ListsRequestBuilderGetQueryParameters(filter="displayName eq 'O''Brien deals'")
    found = await lists(graph, upn).get(request_configuration=cfg(query=q))
    assert sorted(x.id for x in found.value) == sorted([made.id, again.id])
    default = got.value[0].id
    with pytest.raises(ODataError) as e:
        await lists(graph, upn).by_todo_task_list_id(default).patch(TodoTaskList(display_name="Mine"))
    assert e.value.response_status_code == 400
    with pytest.raises(ODataError) as e:
        await lists(graph, upn).by_todo_task_list_id(got.value[1].id).delete()
    assert e.value.response_status_code == 400
    r = raw.get(f"/users/{upn}/todo/lists", params={"$filter": "wellknownListName eq 'defaultList'"})
    assert r.status_code == 400 and "is not a valid enumeration type constant" in r.json()["error"]["message"]
    renamed = await lists(graph, upn).by_todo_task_list_id(made.id).patch(TodoTaskList(display_name="Deals"))
    assert renamed.display_name == "Deals"
    await lists(graph, upn).by_todo_task_list_id(again.id).delete()
    assert len((await lists(graph, upn).get()).value) == 3


async def test_lists_delta_reports_new_renamed_and_removed_lists(graph, emulator):
    upn = fresh(emulator, "ann")
    builder = lists(graph, upn).delta
    first, _, link = await delta_round(builder)
    assert {x.wellknown_list_name for x in first} == {
        WellknownListName.DefaultList,
        WellknownListName.FlaggedEmails,
    }
    a = await new_list(graph, upn, "A")
    b = await new_list(graph, upn, "B")
    await lists(graph, upn).by_todo_task_list_id(a).patch(TodoTaskList(display_name="A2"))
    await lists(graph, upn).by_todo_task_list_id(b).delete()
    items, _, _ = await delta_round(builder, link)
    assert [x.display_name for x in items if not isinstance(x, tuple)] == ["A2"]
    assert ("removed", b) in items


# tasks ----------------------------------------------------------------------------------------------------
async def test_a_task_has_an_etag_and_no_change_key_and_round_trips_its_fields(graph, raw, emulator):
    upn = fresh(emulator, "ann")
    lid = await new_list(graph, upn)
    body = TodoTask(
        title="Call Fabrikam",
        body=ItemBody(content_type=BodyType.Html, content="<p>About the <b>renewal</b></p>"),
        importance=Importance.High,
        categories=["Customer"],
        is_reminder_on=True,
        reminder_date_time=due("2026-05-04T08:30:00", "UTC"),
    )
    made = await tasks(graph, upn, lid).post(body)
    assert "=" in made.id and made.status == TaskStatus.NotStarted
    assert made.body.content == "About the renewal" and made.body.content_type == BodyType.Text
    assert made.reminder_date_time.date_time.startswith("2026-05-04T08:30:00")  # a reminder keeps its time
    assert (made.importance, made.categories, made.is_reminder_on) == (Importance.High, ["Customer"], True)
    as_json = raw.get(f"/users/{upn}/todo/lists/{lid}/tasks/{made.id}").json()
    assert "changeKey" not in as_json and as_json["@odata.etag"].startswith('W/"')
    patched = (
        await tasks(graph, upn, lid).by_todo_task_id(made.id).patch(TodoTask(title="Call Fabrikam today"))
    )
    assert patched.title == "Call Fabrikam today" and patched.categories == ["Customer"]  # PATCH is partial
    etag = raw.get(f"/users/{upn}/todo/lists/{lid}/tasks/{made.id}").json()["@odata.etag"]
    assert etag != as_json["@odata.etag"]
    stale = raw.patch(
        f"/users/{upn}/todo/lists/{lid}/tasks/{made.id}",
        json={"title": "x"},
        headers={"If-Match": as_json["@odata.etag"]},
    )
    assert stale.status_code == 412
    await tasks(graph, upn, lid).by_todo_task_id(made.id).delete()
    with pytest.raises(ODataError) as e:
        await tasks(graph, upn, lid).by_todo_task_id(made.id).get()
    assert e.value.response_status_code == 404


async def test_a_due_date_keeps_its_date_at_local_midnight_and_reads_back_in_utc(graph, emulator):
    upn = fresh(emulator, "ann")
    lid = await new_list(graph, upn)
    tokyo = await tasks(graph, upn, lid).post(
        TodoTask(title="T", due_date_time=due("2024-10-24T15:00:00", "Tokyo Standard Time"))
    )
    assert (tokyo.due_date_time.date_time, tokyo.due_date_time.time_zone) == (
        "2024-10-23T15:00:00.0000000",
        "UTC",
    )
    local = (
        await tasks(graph, upn, lid)
        .by_todo_task_id(tokyo.id)
        .get(request_configuration=cfg('outlook.timezone="Tokyo Standard Time"'))
    )
    assert local.due_date_time.date_time.startswith("2024-10-24T00:00:00")  # the date, in the writer's zone
    eastern = await tasks(graph, upn, lid).post(
        TodoTask(title="E", due_date_time=due("2020-07-25T16:00:00", "Eastern Standard Time"))
    )
    assert eastern.due_date_time.date_time == "2020-07-25T04:00:00.0000000"  # midnight Eastern (TUPD)


async def test_completion_date_is_midnight_utc_and_goes_when_reopened(graph, emulator):
    upn = fresh(emulator, "ann")
    lid = await new_list(graph, upn)
    made = await tasks(graph, upn, lid).post(TodoTask(title="Send quote"))
    done = await tasks(graph, upn, lid).by_todo_task_id(made.id).patch(TodoTask(status=TaskStatus.Completed))
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert done.completed_date_time.date_time == f"{today}T00:00:00.0000000"
    reopened = (
        await tasks(graph, upn, lid).by_todo_task_id(made.id).patch(TodoTask(status=TaskStatus.InProgress))
    )
    assert reopened.completed_date_time is None


def weekly(*days: DayOfWeek) -> PatternedRecurrence:
    return PatternedRecurrence(
        pattern=RecurrencePattern(type=RecurrencePatternType.Weekly, interval=1, days_of_week=list(days))
    )


async def mondays(graph, upn: str, lid: str, title: str, **kw) -> TodoTask:
    """A weekly task due on Mondays, from Monday 2 March 2026."""
    first = due("2026-03-02T00:00:00", "UTC")
    body = TodoTask(title=title, due_date_time=first, recurrence=weekly(DayOfWeek.Monday), **kw)
    return await tasks(graph, upn, lid).post(body)


async def test_completing_a_recurring_task_moves_it_on_and_leaves_a_completed_copy(graph, emulator):
    upn = fresh(emulator, "ann")
    lid = await new_list(graph, upn)
    series = await mondays(
        graph, upn, lid, "Weekly report", reminder_date_time=due("2026-03-02T09:00:00", "UTC")
    )
    assert series.recurrence.range.start_date.isoformat() == "2026-03-02"
    _, _, link = await delta_round(tasks(graph, upn, lid).delta)
    item = tasks(graph, upn, lid).by_todo_task_id(series.id)
    moved = await item.patch(TodoTask(status=TaskStatus.Completed))
    assert moved.id == series.id and moved.status == TaskStatus.NotStarted
    assert moved.due_date_time.date_time.startswith("2026-03-09")
    assert moved.reminder_date_time.date_time.startswith("2026-03-09T09:00")
    items, _, _ = await delta_round(tasks(graph, upn, lid).delta, link)
    (done,) = [x for x in items if x.id != series.id]
    assert (done.title, done.status, done.recurrence) == ("Weekly report", TaskStatus.Completed, None)
    assert done.due_date_time.date_time.startswith("2026-03-02") and done.completed_date_time is not None
    assert {x.id for x in items} == {series.id, done.id}  # two entries: the series moved on, a new one


async def test_a_new_due_date_on_a_recurring_task_can_leave_a_duplicate(graph, emulator):
    upn = fresh(emulator, "ann")
    lid = await new_list(graph, upn)
    series = await mondays(graph, upn, lid, "Standup")
    emulator.control.settings(todo_due_change_duplicates=True)
    try:
        await (
            tasks(graph, upn, lid)
            .by_todo_task_id(series.id)
            .patch(TodoTask(due_date_time=due("2026-03-04T00:00:00", "UTC")))
        )
    finally:
        emulator.control.settings(todo_due_change_duplicates=False)
    now = (await tasks(graph, upn, lid).get()).value
    assert sorted((x.title, x.due_date_time.date_time[:10], x.status.value) for x in now) == [
        ("Standup", "2026-03-02", "notStarted"),
        ("Standup", "2026-03-04", "notStarted"),
    ]


async def test_one_linked_resource_on_create_more_through_its_collection(graph, raw, emulator):
    upn = fresh(emulator, "ann")
    lid = await new_list(graph, upn)
    link = {
        "webUrl": "https://crm.example/deal/42",
        "applicationName": "CRM",
        "displayName": "Deal 42",
        "externalId": "42",
    }
    two = raw.post(
        f"/users/{upn}/todo/lists/{lid}/tasks", json={"title": "x", "linkedResources": [link, link]}
    )
    assert two.status_code == 400
    assert two.json()["error"]["message"] == "Only one item in linkedResources is allowed."
    made = await tasks(graph, upn, lid).post(
        TodoTask(
            title="Follow up",
            linked_resources=[
                LinkedResource(
                    web_url=link["webUrl"], application_name="CRM", display_name="Deal 42", external_id="42"
                )
            ],
        )
    )
    assert [(x.external_id, x.web_url) for x in made.linked_resources] == [
        ("42", "https://crm.example/deal/42")
    ]
    item = tasks(graph, upn, lid).by_todo_task_id(made.id)
    before = raw.get(f"/users/{upn}/todo/lists/{lid}/tasks/{made.id}").json()["@odata.etag"]
    await item.linked_resources.post(LinkedResource(display_name="Contact", external_id="c-7"))
    got = await item.linked_resources.get()
    assert [x.external_id for x in got.value] == ["42", "c-7"]
    assert raw.get(f"/users/{upn}/todo/lists/{lid}/tasks/{made.id}").json()["@odata.etag"] != before
    await item.checklist_items.post(ChecklistItem(display_name="Prepare figures"))
    (step,) = (await item.checklist_items.get()).value
    checked = await item.checklist_items.by_checklist_item_id(step.id).patch(ChecklistItem(is_checked=True))
    assert checked.is_checked is True and checked.checked_date_time is not None


# delta ----------------------------------------------------------------------------------------------------
async def test_task_delta_pages_by_the_prefer_header_and_reports_removals(graph, raw, emulator):
    upn = fresh(emulator, "ann")
    lid = await new_list(graph, upn)
    made = [await tasks(graph, upn, lid).post(TodoTask(title=f"t{i}")) for i in range(5)]
    items, pages, link = await delta_round(tasks(graph, upn, lid).delta, None, "odata.maxpagesize=2")
    assert sorted(x.title for x in items) == [f"t{i}" for i in range(5)] and pages == 3
    await tasks(graph, upn, lid).by_todo_task_id(made[0].id).patch(TodoTask(title="t0!"))
    await tasks(graph, upn, lid).by_todo_task_id(made[1].id).delete()
    items, _, link = await delta_round(tasks(graph, upn, lid).delta, link)
    assert [x.title for x in items if not isinstance(x, tuple)] == ["t0!"]
    assert ("removed", made[1].id) in items
    raw_removed = raw.get(link.removeprefix(emulator.base_url)).json()
    assert raw_removed["value"] == []  # nothing since
    r = raw.get(f"/users/{upn}/todo/lists/{lid}/tasks/delta", params={"$filter": "status eq 'completed'"})
    assert r.status_code == 400


async def test_task_delta_tokens_expire_and_old_generations_are_gone(graph, raw, emulator):
    upn = fresh(emulator, "ann")
    lid = await new_list(graph, upn)
    for i in range(8):
        await tasks(graph, upn, lid).post(TodoTask(title=f"t{i}"))
    builder = tasks(graph, upn, lid).delta
    first = await builder.get(request_configuration=cfg("odata.maxpagesize=1"))
    page = first
    for _ in range(4):
        page = await builder.with_url(page.odata_next_link).get(
            request_configuration=cfg("odata.maxpagesize=1")
        )
    old = raw.get(
        first.odata_next_link.removeprefix(emulator.base_url), headers={"Prefer": "odata.maxpagesize=1"}
    )
    assert old.status_code == 410 and old.json()["error"]["code"] == "SyncStateNotFound"
    assert emulator.control.expire_delta_tokens(upn) >= 1
    with pytest.raises(ODataError) as e:
        await builder.with_url(page.odata_next_link).get(request_configuration=cfg("odata.maxpagesize=1"))
    assert e.value.response_status_code == 410


async def test_the_sweep_probe_reaches_task_delta_through_batch(raw, graph, emulator):
    upn = fresh(emulator, "ann")
    lid = await new_list(graph, upn)
    _, _, link = await delta_round(tasks(graph, upn, lid).delta)
    emulator.control.todo_task(upn, lid, {"title": "Made in the app"})
    body = {
        "requests": [{"id": "1", "method": "GET", "url": link, "headers": {"Prefer": "odata.maxpagesize=50"}}]
    }
    (answer,) = raw.post("/$batch", json=body).json()["responses"]
    assert answer["status"] == 200 and [x["title"] for x in answer["body"]["value"]] == ["Made in the app"]
    assert "@odata.deltaLink" in answer["body"]


async def test_a_deleted_lists_task_delta_is_not_found(graph, emulator):
    upn = fresh(emulator, "ann")
    lid = await new_list(graph, upn)
    _, _, link = await delta_round(tasks(graph, upn, lid).delta)
    await lists(graph, upn).by_todo_task_list_id(lid).delete()
    with pytest.raises(ODataError) as e:
        await tasks(graph, upn, lid).delta.with_url(link).get()
    assert e.value.response_status_code == 404


# reach and permissions ------------------------------------------------------------------------------------
async def test_an_app_only_subscription_on_tasks_is_refused_while_mail_ones_work(graph, emulator, receiver):
    upn = fresh(emulator, "ann")
    lid = await new_list(graph, upn)
    expires = datetime.now(UTC) + timedelta(hours=1)
    todo = Subscription(
        change_type="created,updated,deleted",
        notification_url=receiver.url,
        resource=f"users/{upn}/todo/lists/{lid}/tasks",
        expiration_date_time=expires,
    )
    with pytest.raises(ODataError) as e:
        await graph.subscriptions.post(todo)
    assert e.value.response_status_code == 403 and e.value.error.code == "ExtensionError"
    mail = Subscription(
        change_type="created",
        notification_url=receiver.url,
        resource=f"users/{upn}/messages",
        expiration_date_time=expires,
    )
    assert (await graph.subscriptions.post(mail)).id


async def test_to_do_ignores_mailbox_scoping_but_needs_a_tasks_role(graph, emulator):
    upn = fresh(emulator, "ann")
    emulator.control.deny(upn)  # the mail-enabled security group scoping leaves To Do out
    with pytest.raises(ODataError):
        await graph.users.by_user_id(upn).mail_folders.get()
    assert len((await lists(graph, upn).get()).value) == 2
    assert (await graph.users.by_user_id(upn).todo.get()).id
    emulator.control.settings(tasks_permission="read")
    try:
        with pytest.raises(ODataError) as e:
            await lists(graph, upn).post(TodoTaskList(display_name="No"))
        assert e.value.response_status_code == 403
        emulator.control.settings(tasks_permission="none")
        with pytest.raises(ODataError) as e:
            await lists(graph, upn).get()
        assert e.value.response_status_code == 401 and e.value.error.code == "UnknownError"
    finally:
        emulator.control.settings(tasks_permission="readwrite")


async def test_the_control_api_changes_tasks_as_a_user_would(graph, emulator):
    upn = fresh(emulator, "ann")
    crm = await new_list(graph, upn)
    made = emulator.control.todo_task(
        upn,
        "defaultList",
        {"title": "Mine", "dueDateTime": {"dateTime": "2026-06-01", "timeZone": "Pacific Standard Time"}},
    )
    assert made["dueDateTime"]["dateTime"] == "2026-06-01T07:00:00.0000000"  # midnight in Seattle, in UTC
    _, _, link = await delta_round(tasks(graph, upn, crm).delta)
    moved = emulator.control.todo_move(upn, made["id"], crm)
    assert moved["id"] != made["id"]  # a task moved between lists gets a new id
    items, _, _ = await delta_round(tasks(graph, upn, crm).delta, link)
    assert [x.title for x in items] == ["Mine"]
    emulator.control.todo_update(upn, moved["id"], {"status": "completed"})
    got = await tasks(graph, upn, crm).by_todo_task_id(moved["id"]).get()
    assert got.status == TaskStatus.Completed
