"""Kill a tasks sync at each checkpoint, re-run it, and compare both sides with a clean run's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from emulators.azurite import AzuriteStack
from emulators.crm.launcher import ReferenceCrm
from emulators.graph.launcher import GraphEmulator
from shared.crm.reference import ReferenceCrmConnector
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.tasks import GraphTasks
from shared.model import Job
from shared.state.memory import InMemoryJobQueue
from shared.state.tables import TableStateStore
from shared.sync.engine import Engine
from shared.sync.tasks import TasksStream
from tests.integration.crash import CrashAt, SimulatedCrash
from tests.integration.stack import settings_for, unique_prefix

pytestmark = pytest.mark.integration
ANN = "ann@contoso.com"

# (which sync, what crashes, which method, which call, after the real call?)
CHECKPOINTS = [
    (1, "graph", "read_page", 1, True),  # after the delta was read, before anything was written
    (1, "crm", "upsert_task", 2, True),  # the CRM created a task, the answer was lost
    (1, "graph", "create", 1, True),  # To Do created a task, the link was never written
    (1, "graph", "create", 3, False),  # before a To Do create
    (1, "state", "put_links", 4, True),  # after a link write
    (1, "state", "save_cursor", 2, False),  # every effect applied, the cursor not saved
    (2, "graph", "update", 1, True),  # a To Do update applied, the link not updated
    (2, "crm", "upsert_task", 1, True),  # a CRM update applied, the link not updated
    (2, "graph", "delete", 1, True),  # removed from To Do, the link not forgotten
    (2, "state", "delete_link", 1, False),
]


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


_HTTP = httpx.Client(headers={"Authorization": "Bearer outlook"}, timeout=30)


def _todo(graph: GraphEmulator, method: str, path: str, body: Any = None) -> Any:
    response = _HTTP.request(method, f"{graph.base_url}/users/{ANN}/todo/lists{path}", json=body)
    response.raise_for_status()
    return response.json() if response.content else None


def _list(graph: GraphEmulator) -> str:
    return str(next(x["id"] for x in _todo(graph, "GET", "")["value"] if x["displayName"] == "CRM Tasks"))


def _tasks(graph: GraphEmulator) -> dict[str, dict[str, Any]]:
    return {t["title"]: t for t in _todo(graph, "GET", f"/{_list(graph)}/tasks?$top=500")["value"]}


def _seed(graph: GraphEmulator, crm: ReferenceCrm) -> None:
    graph.control.reset(empty=True)
    crm.reset()
    graph.control.add_user(ANN)
    lst = _todo(graph, "POST", "", {"displayName": "CRM Tasks"})["id"]
    for n in range(4):
        crm.add_task(owner=ANN, title=f"CRM {n}", due=f"2024-06-0{n + 1}")
    for n in range(3):
        _todo(graph, "POST", f"/{lst}/tasks", {"title": f"To Do {n}"})
    _todo(graph, "POST", f"/{lst}/tasks", {"title": "CRM 0", "importance": "high",
          "dueDateTime": {"dateTime": "2024-06-01T00:00:00", "timeZone": "UTC"}})  # fmt: skip


def _mutate(graph: GraphEmulator, crm: ReferenceCrm) -> None:
    """Changes on both sides between the first and the second sync."""
    lst, outlook = _list(graph), _tasks(graph)
    crm_ids = {t["title"]: t["id"] for t in crm.tasks(ANN)}
    _todo(
        graph,
        "PATCH",
        f"/{lst}/tasks/{outlook['To Do 1']['id']}",
        {"body": {"content": "more", "contentType": "text"}},
    )
    _todo(graph, "PATCH", f"/{lst}/tasks/{outlook['CRM 0']['id']}", {"status": "completed"})
    _todo(graph, "DELETE", f"/{lst}/tasks/{outlook['To Do 0']['id']}")
    crm.update_task(crm_ids["CRM 1"], body="from the CRM")
    crm.update_task(crm_ids["To Do 2"], status="completed", completed="2024-06-05")
    crm.delete_task(crm_ids["CRM 3"])
    crm.add_task(owner=ANN, title="Late")


def _state(graph: GraphEmulator, crm: ReferenceCrm) -> dict[str, Any]:
    outlook = sorted(
        (
            t["title"],
            t["status"],
            t["importance"],
            t["body"]["content"],
            (t.get("dueDateTime") or {}).get("dateTime", ""),
        )
        for t in _tasks(graph).values()
    )
    tasks = sorted(
        (t["title"], t["status"], t["importance"], t["body"], t["due"] or "") for t in crm.tasks(ANN)
    )
    return {"outlook": outlook, "crm": tasks}


async def _scenario(
    azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm, crash: tuple | None
) -> dict[str, Any]:
    _seed(graph, crm_server)
    settings = settings_for(azurite_stack, graph, crm_server)
    clock = Clock()
    state = TableStateStore.from_connection_string(
        settings.storage_connection_string, clock=clock, table_prefix=unique_prefix()
    )
    await state.ensure_tables()
    await state.put_config(ANN, {"Enabled": True, "Mail": False, "Tasks": True})
    crm = ReferenceCrmConnector(crm_server.base_url, crm_server.token)
    outlook = GraphTasks(build_graph_client(settings), GraphCaller())

    def engine(parts: dict[str, Any]) -> Engine:
        stream = TasksStream(parts["state"], parts["crm"], parts["graph"])
        return Engine(parts["state"], InMemoryJobQueue(), {"tasks": stream}, clock=clock)

    clean = {"state": state, "crm": crm, "graph": outlook}
    try:
        for phase in (1, 2):
            if phase == 2:
                _mutate(graph, crm_server)
            if crash is not None and crash[0] == phase:
                _, target, method, nth, after = crash
                parts = dict(clean)
                parts[target] = CrashAt(parts[target], method, nth, after=after)
                with pytest.raises(SimulatedCrash):
                    await engine(parts).run_job(Job(ANN, "tasks"))
                clock.now += timedelta(minutes=10)  # the dead worker's lease expires
            outcome = await engine(clean).run_job(Job(ANN, "tasks"))
            assert outcome.status == "done", outcome
        again = await engine(clean).run_job(Job(ANN, "tasks"))  # and a re-run writes nothing
        assert again.status == "done" and not any(
            again.stats.get(k) for k in ("created", "updated", "removed", "completed", "linked")
        ), again
        return _state(graph, crm_server)
    finally:
        await crm.aclose()
        await state.aclose()


@pytest.fixture(scope="module")
async def clean_run(
    azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm
) -> dict[str, Any]:
    return await _scenario(azurite_stack, graph, crm_server, None)


def test_the_clean_run_is_what_the_user_expects(clean_run: dict[str, Any]) -> None:
    outlook = {t[0]: t for t in clean_run["outlook"]}
    assert set(outlook) == {"CRM 0", "CRM 1", "CRM 2", "To Do 1", "To Do 2", "Late"}
    crm = {t[0]: t for t in clean_run["crm"]}  # To Do 0 was deleted in To Do: unlinked, kept in the CRM
    assert set(crm) == set(outlook) | {"To Do 0"}
    assert outlook["CRM 0"][1:3] == ("completed", "high") == crm["CRM 0"][1:3]  # matched, merged, completed
    assert outlook["CRM 1"][3] == "from the CRM" and crm["To Do 1"][3] == "more"
    assert outlook["To Do 2"][1] == "completed"


@pytest.mark.parametrize(
    "crash",
    CHECKPOINTS,
    ids=[f"sync{c[0]}.{c[1]}.{c[2]}#{c[3]}{'-after' if c[4] else ''}" for c in CHECKPOINTS],
)
async def test_killed_at_a_checkpoint_and_rerun_equals_a_clean_run(
    crash: tuple, clean_run: dict[str, Any], azurite_stack: AzuriteStack, graph: GraphEmulator,
    crm_server: ReferenceCrm,
) -> None:  # fmt: skip
    assert await _scenario(azurite_stack, graph, crm_server, crash) == clean_run
