"""Kill a calendar sync (with the CRM push on) at each checkpoint, re-run it, and compare the CRM and the
pushed Outlook events with a clean run's."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx
import pytest

from emulators.azurite import AzuriteStack
from emulators.crm.launcher import ReferenceCrm
from emulators.graph.launcher import GraphEmulator
from shared.crm.reference import ReferenceCrmConnector
from shared.graph.calendar import GraphCalendar
from shared.graph.client import GraphCaller, build_graph_client
from shared.model import Job
from shared.state.memory import InMemoryJobQueue
from shared.state.tables import TableStateStore
from shared.sync.calendar import CalendarStream
from shared.sync.engine import Engine
from shared.sync.push import PushStream
from tests.integration.crash import CrashAt, SimulatedCrash
from tests.integration.stack import settings_for, unique_prefix

pytestmark = pytest.mark.integration
ANN = "ann@contoso.com"
BOB = "bob@fabrikam.example"
TODAY = datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)
SINGLES = 9  # with a series of 4 and a page size of 4: several pages

# (what crashes, which method, which call, after the real call?)
CHECKPOINTS = [
    ("graph", "read_page", 2, True),  # after a Graph page was read
    ("crm", "upsert_appointment", 3, True),  # the CRM applied it, the answer was lost
    ("state", "put_key", 4, True),  # after a key write
    ("state", "put_links", 1, True),  # after the page's links, before its decisions
    ("state", "save_cursor", 1, False),  # before the first cursor save
    ("graph", "instances", 1, True),  # during the check of series against their instances
    ("crm", "appointment_changes", 1, True),  # the push read the CRM's feed, then the worker died
    ("graph", "create_event", 1, True),  # the push made the Outlook event, then the worker died
    ("state", "save_cursor", 5, False),  # before a later cursor save (the series check or the push feed)
]


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _at(days: int, hour: int) -> dict[str, str]:
    return {
        "dateTime": (TODAY + timedelta(days=days, hours=hour)).strftime("%Y-%m-%dT%H:%M:%S"),
        "timeZone": "UTC",
    }


def _outlook(graph: GraphEmulator, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(method, f"{graph.base_url}{path}", json=body, timeout=30,
                             headers={"Authorization": "Bearer outlook"})  # fmt: skip
    response.raise_for_status()
    return response.json() if response.content else None


def _seed(graph: GraphEmulator, crm: ReferenceCrm) -> None:
    graph.control.reset(empty=True)
    crm.reset()
    graph.control.add_user(ANN)
    crm.add_person(BOB, name="Bob", owner=ANN)
    attendees = [{"emailAddress": {"address": BOB}, "type": "required"}]
    for n in range(SINGLES):
        meeting = {
            "subject": f"Meeting {n}",
            "start": _at(n + 1, 9),
            "end": _at(n + 1, 10),
            "attendees": attendees,
        }
        _outlook(graph, "POST", f"/users/{ANN}/events", meeting)
    _outlook(graph, "POST", f"/users/{ANN}/events",
             {"subject": "Weekly", "start": _at(1, 14), "end": _at(1, 15), "attendees": attendees,
              "recurrence": {"pattern": {"type": "daily", "interval": 7},
                             "range": {"type": "numbered", "numberOfOccurrences": 4}}})  # fmt: skip
    crm.create_appointment(owner=ANN, subject="Visit", start=TODAY + timedelta(days=2, hours=8),
                           end=TODAY + timedelta(days=2, hours=9))  # fmt: skip


def _engine(state: Any, crm: Any, source: Any, clock: Clock) -> Engine:
    stream = CalendarStream(state, crm, source, series_check_every=timedelta(0), clock=clock)
    push = PushStream(state, crm, source)
    return Engine(state, InMemoryJobQueue(), {"calendar": stream, "push": push}, clock=clock)


async def _sync(engine: Engine) -> None:
    """The calendar's job, then the push's (what the sweep queues for a user with the push on)."""
    for stream in ("calendar", "push"):
        outcome = await engine.run_job(Job(ANN, stream))
        assert outcome.status == "done", outcome


def _outcome(graph: GraphEmulator, crm: ReferenceCrm) -> dict[str, Any]:
    """The CRM's appointments by (subject, start) without server-assigned fields, and the Outlook events."""
    drop = {"id", "seq", "createdAt", "updatedAt", "version", "key", "seriesKey"}  # ids differ per reset
    appointments: dict[str, list[dict[str, Any]]] = {}  # a list: a duplicate must show
    for a in crm.appointments():
        kept = {f: v for f, v in a.items() if f not in drop}
        kept["people"] = sorted(p.get("email", "") for p in a.get("people", []))
        appointments.setdefault(f"{a['subject']}@{a['start']}", []).append(kept)
    events = sorted(
        (e["subject"], e["start"]["dateTime"], len(e["attendees"]))
        for e in _outlook(graph, "GET", f"/users/{ANN}/events?$top=100")["value"]
    )
    return {"appointments": appointments, "events": events}


async def _run(
    azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm, crash: tuple | None
) -> dict[str, Any]:
    settings = settings_for(azurite_stack, graph, crm_server)
    clock = Clock()
    state = TableStateStore.from_connection_string(
        settings.storage_connection_string, clock=clock, table_prefix=unique_prefix()
    )
    await state.ensure_tables()
    await state.put_config(
        ANN, {"Enabled": True, "Mail": False, "Calendar": True, "CalendarPushFromCrm": True}
    )
    crm = ReferenceCrmConnector(crm_server.base_url, crm_server.token)
    source = GraphCalendar(build_graph_client(settings), GraphCaller(), page_size=4)
    try:
        if crash is not None:
            target, method, nth, after = crash
            parts: dict[str, Any] = {"state": state, "crm": crm, "graph": source}
            parts[target] = CrashAt(parts[target], method, nth, after=after)
            with pytest.raises(SimulatedCrash):
                await _sync(_engine(parts["state"], parts["crm"], parts["graph"], clock))
            clock.now += timedelta(minutes=10)  # the dead worker's lease expires
        for _ in range(2):  # the second run sees the pushed event come back through delta
            await _sync(_engine(state, crm, source, clock))
        cursor = await state.get_cursor(ANN, "calendar")
        assert cursor.link_kind == "delta"
        return _outcome(graph, crm_server)
    finally:
        await crm.aclose()
        await state.aclose()


@pytest.fixture(scope="module")
async def clean_run(
    azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm
) -> dict[str, Any]:
    _seed(graph, crm_server)
    return await _run(azurite_stack, graph, crm_server, None)


@pytest.mark.parametrize(
    "crash", CHECKPOINTS, ids=[f"{c[0]}.{c[1]}#{c[2]}{'-after' if c[3] else ''}" for c in CHECKPOINTS]
)
async def test_killed_at_a_checkpoint_and_rerun_equals_a_clean_run(
    crash: tuple,
    clean_run: dict[str, Any],
    azurite_stack: AzuriteStack,
    graph: GraphEmulator,
    crm_server: ReferenceCrm,
) -> None:
    assert len(clean_run["appointments"]) == SINGLES + 4 + 1  # singles, occurrences, the CRM's own
    assert len(clean_run["events"]) == SINGLES + 1 + 1  # singles, the series, the pushed one
    _seed(graph, crm_server)
    assert await _run(azurite_stack, graph, crm_server, crash) == clean_run
