"""To Do tasks both ways on the real stack: msgraph-sdk → Graph emulator, Azurite, reference CRM over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared import admin, status_page
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration
ANN = "ann@contoso.com"
LIST = "CRM Tasks"


# -- what the user sees in To Do, and what the CRM holds -----------------------------------------------


def list_id(stack: Stack, name: str = LIST) -> str:
    lists = stack.outlook("GET", f"/users/{ANN}/todo/lists")["value"]
    found = [x["id"] for x in lists if x["displayName"] == name]
    assert len(found) == 1, lists
    return str(found[0])


def make_list(stack: Stack, name: str = LIST) -> str:
    return str(stack.outlook("POST", f"/users/{ANN}/todo/lists", {"displayName": name})["id"])


def todo(stack: Stack) -> dict[str, dict[str, Any]]:
    """The owned list's tasks by title (fails on a repeated title)."""
    tasks = stack.outlook("GET", f"/users/{ANN}/todo/lists/{list_id(stack)}/tasks?$top=500")["value"]
    found: dict[str, dict[str, Any]] = {}
    for task in tasks:
        assert task["title"] not in found, f"two To Do tasks called {task['title']!r}: {tasks}"
        found[task["title"]] = task
    return found


def add_todo(stack: Stack, title: str, **fields: Any) -> dict[str, Any]:
    return dict(
        stack.outlook("POST", f"/users/{ANN}/todo/lists/{list_id(stack)}/tasks", {"title": title, **fields})
    )


def edit_todo(stack: Stack, task_id: str, **fields: Any) -> dict[str, Any]:
    return dict(stack.outlook("PATCH", f"/users/{ANN}/todo/lists/{list_id(stack)}/tasks/{task_id}", fields))


def due(day: str, zone: str = "UTC") -> dict[str, str]:
    return {"dateTime": f"{day}T00:00:00", "timeZone": zone}


def crm_tasks(stack: Stack, owner: str = ANN) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for task in stack.crm.tasks(owner):
        assert task["title"] not in found, f"two CRM tasks called {task['title']!r}"
        found[task["title"]] = task
    return found


def writes(stack: Stack) -> tuple[int, int]:
    """(CRM task writes, Graph To Do writes) so far."""
    crm = stack.crm.stats()["byRoute"]
    crm_writes = sum(n for route, n in crm.items() if "/tasks" in route and not route.startswith("GET"))
    graph = stack.graph.control.stats()["byRoute"]
    graph_writes = sum(
        n
        for route, n in graph.items()
        if "todo" in route.lower() and route.split()[0] in {"POST", "PATCH", "DELETE"}
    )
    return crm_writes, graph_writes


async def sync(stack: Stack) -> str:
    outcomes = await stack.sync(ANN)
    assert len(outcomes) == 1
    return str(outcomes[0].status)


async def add_user(stack: Stack, **columns: Any) -> None:
    await stack.add_user(ANN, Mail=False, Tasks=True, **columns)


async def quiet(stack: Stack) -> None:
    """A run after which another writes nothing on either side."""
    before = writes(stack)
    assert await sync(stack) == "done"
    assert writes(stack) == before


# -- tests --------------------------------------------------------------------------------------------


async def test_first_sync_over_overlapping_tasks_links_instead_of_duplicating(stack: Stack) -> None:
    await add_user(stack)
    make_list(stack)
    add_todo(stack, "Call Bob", dueDateTime=due("2024-06-03"), importance="high")
    add_todo(stack, "Outlook only")
    stack.outlook("POST", f"/users/{ANN}/todo/lists", {"displayName": "Groceries"})
    stack.crm.add_task(owner=ANN, title="Call Bob", due="2024-06-03", body="About the renewal")
    stack.crm.add_task(owner=ANN, title="CRM only", due="2024-07-01")
    stack.crm.add_task(owner=ANN, title="Long done", status="completed", completed="2023-01-02")
    stack.crm.add_task(owner="dan@contoso.com", title="Dan's")

    assert await sync(stack) == "done"

    outlook, crm = todo(stack), crm_tasks(stack)
    assert set(outlook) == {"Call Bob", "Outlook only", "CRM only"}  # a task done long ago stays in the CRM
    assert set(crm) == {"Call Bob", "Outlook only", "CRM only", "Long done"}
    assert outlook["Call Bob"]["body"]["content"] == "About the renewal"  # each side filled from the other
    assert crm["Call Bob"]["importance"] == "high"
    assert outlook["CRM only"]["dueDateTime"]["dateTime"].startswith("2024-07-01")
    links = outlook["CRM only"]["linkedResources"]  # the way back to the CRM task, in Outlook
    assert [(x["externalId"], x["applicationName"]) for x in links] == [(crm["CRM only"]["id"], "CRM")]
    assert links[0]["webUrl"].endswith(f"#task-{crm['CRM only']['id']}")
    assert [t["title"] for t in stack.crm.tasks("dan@contoso.com")] == ["Dan's"]
    await quiet(stack)


async def test_edits_and_completions_on_each_side_arrive_on_the_other_and_do_not_echo(stack: Stack) -> None:
    await add_user(stack)
    bob = stack.crm.add_task(owner=ANN, title="Call Bob", due="2024-06-03")
    eve = stack.crm.add_task(owner=ANN, title="Mail Eve")
    await sync(stack)
    add_todo(stack, "Book venue")
    await sync(stack)
    outlook = todo(stack)

    edit_todo(
        stack,
        outlook["Call Bob"]["id"],
        body={"content": "Ask about Q3", "contentType": "text"},
        categories=["Renewals"],
    )
    edit_todo(stack, outlook["Book venue"]["id"], status="completed")
    stack.crm.update_task(eve, due="2024-08-09", importance="low")
    assert await sync(stack) == "done"

    crm = crm_tasks(stack)
    assert (crm["Call Bob"]["body"], crm["Call Bob"]["categories"]) == ("Ask about Q3", ["Renewals"])
    assert crm["Book venue"]["status"] == "completed" and crm["Book venue"]["completed"]
    outlook = todo(stack)
    assert outlook["Mail Eve"]["dueDateTime"]["dateTime"].startswith("2024-08-09")
    assert outlook["Mail Eve"]["importance"] == "low"
    await quiet(stack)

    stack.crm.update_task(bob, status="completed", completed="2024-06-02")
    assert await sync(stack) == "done"
    done = todo(stack)["Call Bob"]
    assert done["status"] == "completed"
    assert done["completedDateTime"]["dateTime"].startswith("2024-06-02")
    await quiet(stack)


@pytest.mark.parametrize("rule", ["crm-wins", "outlook-wins"])
async def test_edits_on_both_sides_merge_by_field_and_the_conflict_is_recorded(
    stack: Stack, rule: str
) -> None:
    await add_user(stack, TasksConflictRule=rule)
    bob = stack.crm.add_task(owner=ANN, title="Call Bob", due="2024-06-03")
    await sync(stack)
    task = todo(stack)["Call Bob"]

    edit_todo(stack, task["id"], dueDateTime=due("2024-06-10"), importance="high")
    stack.crm.update_task(bob, due="2024-06-20", body="From the CRM")
    assert await sync(stack) == "done"

    want = "2024-06-20" if rule == "crm-wins" else "2024-06-10"
    crm, outlook = crm_tasks(stack)["Call Bob"], todo(stack)["Call Bob"]
    assert crm["due"] == want and outlook["dueDateTime"]["dateTime"].startswith(want)
    assert (crm["importance"], outlook["body"]["content"]) == ("high", "From the CRM")  # one side each
    row = await stack.services.state.get_user(ANN)
    assert row is not None and row.columns["TasksConflicts"] == 1
    assert "dueDateTime" in row.columns["LastTasksConflict"]
    await quiet(stack)


async def test_the_brake_holds_a_mass_delete_until_an_admin_approves(stack: Stack) -> None:
    await add_user(stack, TasksChangeThreshold=2)
    ids = [stack.crm.add_task(owner=ANN, title=f"Task {n}") for n in range(5)]
    await sync(stack)
    for task_id in ids[:4]:
        stack.crm.delete_task(task_id)

    assert await sync(stack) == "review"
    assert len(todo(stack)) == 5  # nothing applied
    row = await stack.services.state.get_user(ANN)
    assert row is not None and row.columns["State"] == "review"
    assert "would delete or change 4 tasks" in row.columns["ReviewPending"]

    said = await admin.approve(stack.services.state, stack.services.queue, ANN)
    assert "approved 4 held task" in said
    assert await sync(stack) == "done"
    assert set(todo(stack)) == {"Task 4"}


async def test_deletes_unlink_unless_asked_and_crm_deletes_leave_to_do(stack: Stack) -> None:
    await add_user(stack)
    kept = stack.crm.add_task(owner=ANN, title="Kept in the CRM")
    gone = stack.crm.add_task(owner=ANN, title="Deleted in the CRM")
    await sync(stack)
    outlook = todo(stack)

    stack.outlook(
        "DELETE", f"/users/{ANN}/todo/lists/{list_id(stack)}/tasks/{outlook['Kept in the CRM']['id']}"
    )
    stack.crm.delete_task(gone)
    assert await sync(stack) == "done"

    assert set(todo(stack)) == set()
    assert set(crm_tasks(stack)) == {"Kept in the CRM"}  # unlinked, not deleted, and not pushed back
    stack.crm.update_task(kept, body="edited later")
    await sync(stack)
    assert todo(stack) == {}
    await quiet(stack)

    await stack.services.state.put_config(ANN, {"TasksDeleteInCrm": True})
    add_todo(stack, "Short-lived")
    await sync(stack)
    assert "Short-lived" in crm_tasks(stack)
    stack.outlook(
        "DELETE", f"/users/{ANN}/todo/lists/{list_id(stack)}/tasks/{todo(stack)['Short-lived']['id']}"
    )
    await sync(stack)
    assert "Short-lived" not in crm_tasks(stack)


async def test_a_due_date_is_the_users_date_whatever_the_utc_date_reads(stack: Stack) -> None:
    await add_user(stack, TasksTimeZone="Pacific/Auckland")
    stack.crm.add_task(owner=ANN, title="From the CRM", due="2024-10-24")
    make_list(stack)
    add_todo(stack, "From To Do", dueDateTime=due("2024-11-05", "Pacific/Auckland"))  # as the app writes it

    assert await sync(stack) == "done"

    outlook = todo(stack)
    # To Do keeps local midnight of the user's zone: in UTC that is the day before
    assert outlook["From the CRM"]["dueDateTime"] == {
        "dateTime": "2024-10-23T11:00:00.0000000",
        "timeZone": "UTC",
    }
    assert crm_tasks(stack)["From To Do"]["due"] == "2024-11-05"
    assert crm_tasks(stack)["From the CRM"]["due"] == "2024-10-24"
    await quiet(stack)


async def test_completing_a_recurring_task_completes_its_crm_task_and_the_next_occurrence_is_a_new_one(
    stack: Stack,
) -> None:
    await add_user(stack)
    make_list(stack)
    weekly = {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]}}
    series = add_todo(stack, "Weekly report", dueDateTime=due("2024-06-03"), recurrence=weekly)
    await sync(stack)
    assert crm_tasks(stack)["Weekly report"]["due"] == "2024-06-03"

    edit_todo(stack, series["id"], status="completed")  # To Do moves the series to 10 June
    assert await sync(stack) == "done"

    crm = sorted((t["due"], t["status"]) for t in stack.crm.tasks(ANN))
    assert crm == [("2024-06-03", "completed"), ("2024-06-10", "notStarted")]
    await quiet(stack)

    # completed in the CRM: the same, the other way round
    current = next(t for t in stack.crm.tasks(ANN) if t["due"] == "2024-06-10")
    stack.crm.update_task(current["id"], status="completed", completed="2024-06-09")
    assert await sync(stack) == "done"
    assert await sync(stack) == "done"
    crm = sorted((t["due"], t["status"]) for t in stack.crm.tasks(ANN))
    assert crm == [("2024-06-03", "completed"), ("2024-06-10", "completed"), ("2024-06-17", "notStarted")]
    every = stack.outlook("GET", f"/users/{ANN}/todo/lists/{list_id(stack)}/tasks")["value"]
    open_in_todo = [t for t in every if t["status"] != "completed"]
    assert [t["dueDateTime"]["dateTime"][:10] for t in open_in_todo] == ["2024-06-17"]
    await quiet(stack)


async def test_no_subscription_the_sweep_probes_the_list_and_peeks_at_the_crm(stack: Stack) -> None:
    await add_user(stack)
    stack.crm.add_task(owner=ANN, title="First")
    await sync(stack)
    await quiet(stack)  # reads our own writes of the first run back, and writes nothing
    engine = stack.services.engine

    jobs = await engine.sweep()
    assert [j.stream for j in jobs if j.user == ANN] == []  # idle: one probe in a $batch, one CRM peek

    stack.crm.add_task(owner=ANN, title="Second")
    assert [j.stream for j in await engine.sweep() if j.user == ANN] == ["tasks"]
    await sync(stack)
    add_todo(stack, "Third")
    assert [j.stream for j in await engine.sweep() if j.user == ANN] == ["tasks"]
    await sync(stack)
    assert set(crm_tasks(stack)) == {"First", "Second", "Third"}


async def test_the_status_page_and_crmsync_status_show_the_stream_and_its_totals(stack: Stack) -> None:
    await add_user(stack)
    stack.crm.add_task(owner=ANN, title="Call Bob")
    make_list(stack)
    add_todo(stack, "Book venue")
    await sync(stack)

    [status] = await admin.user_statuses(stack.services.state, ANN)
    tasks = [s for s in status.streams if s.stream == "tasks"]
    assert len(tasks) == 1 and tasks[0].phase == "up to date"
    assert status.totals()["created"] == 2
    page = status_page.render([status], datetime.now(UTC))
    assert "tasks: <span class='phase up'>up to date</span>" in page
