"""Meetings → Dataverse appointments on the real stack: msgraph-sdk → Graph emulator, Azurite, the
Dataverse connector over HTTPS. A meeting is one appointment keyed by its iCalUId (`globalobjectid`,
plus the original start of an occurrence), its organizer and attendees as activity parties; a re-run
writes nothing; a meeting deleted in Outlook is cancelled (state Canceled); an appointment made in
Dynamics 365 is pushed to Outlook through change tracking; killed at a checkpoint and re-run, the
result equals a clean run's."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from emulators.azurite import AzuriteStack
from emulators.dataverse.launcher import DataverseStandIn
from emulators.graph.launcher import GraphEmulator
from shared.graph.calendar import GraphCalendar
from shared.graph.client import GraphCaller, build_graph_client
from shared.model import Job
from shared.state.memory import InMemoryJobQueue
from shared.sync.calendar import CalendarStream
from shared.sync.engine import Engine
from shared.sync.push import PushStream
from tests.integration.crash import CrashAt, SimulatedCrash, crash_id
from tests.integration.dataverse.world import Crash, DataverseWorld, dataverse_world, outlook

pytestmark = pytest.mark.integration
ANN = "ann@contoso.com"
DORA = "dora@fabrikam.example"
TODAY = datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)
COLUMNS = {"Enabled": True, "Mail": False, "Calendar": True, "CalendarPushFromCrm": True}

CHECKPOINTS: list[Crash] = [
    ("crm", "upsert_appointment", 2, True),  # Dataverse applied it, the answer was lost
    ("crm", "appointment_changes", 1, True),  # the push read the change feed, then the worker died
    ("source", "create_event", 1, True),  # the push made the Outlook event, then the worker died
    ("state", "save_cursor", 1, False),  # before the first cursor save
]


def _at(days: int, hour: int) -> dict[str, str]:
    return {
        "dateTime": (TODAY + timedelta(days=days, hours=hour)).strftime("%Y-%m-%dT%H:%M:%S"),
        "timeZone": "UTC",
    }


def seed(dv: DataverseStandIn, graph: GraphEmulator) -> dict[str, Any]:
    dv.reset()
    graph.control.reset(empty=True)
    graph.control.add_user(ANN)
    dv.add_user(ANN)
    dv.add_contact(DORA, name="Dora Guest", owner=ANN)
    attendees = [{"emailAddress": {"address": DORA, "name": "Dora"}, "type": "required"}]
    single = outlook(
        graph,
        "POST",
        f"/users/{ANN}/events",
        {"subject": "Kickoff", "start": _at(2, 10), "end": _at(2, 11), "attendees": attendees},
    )
    outlook(
        graph,
        "POST",
        f"/users/{ANN}/events",
        {
            "subject": "Weekly",
            "start": _at(1, 14),
            "end": _at(1, 15),
            "attendees": attendees,
            "recurrence": {
                "pattern": {"type": "daily", "interval": 7},
                "range": {"type": "numbered", "numberOfOccurrences": 3},
            },
        },
    )
    dv.add_appointment(
        owner=ANN,
        subject="Site visit",
        start=TODAY + timedelta(days=3, hours=8),
        end=TODAY + timedelta(days=3, hours=9),
        location="Plant 2",
    )
    return dict(outlook(graph, "GET", f"/users/{ANN}/events/{single['id']}"))


def appointments(dv: DataverseStandIn) -> dict[str, Any]:
    contacts = {c["contactid"]: c["emailaddress1"] for c in dv.rows("contacts", select="emailaddress1")}
    out: dict[str, Any] = {}
    expand = "appointment_activity_parties($select=participationtypemask,addressused,_partyid_value)"
    for row in dv.rows("appointments", expand=expand):
        key = f"{row['subject']}@{row['scheduledstart']}"  # iCalUIds differ between two seeded tenants
        assert key not in out, f"{key} twice"
        out[key] = {
            "keyed": (bool(row["globalobjectid"]), bool(row["crmsync_occurrencestart"])),
            "state": (row["statecode"], row["statuscode"]),
            "regarding": contacts.get(row["_regardingobjectid_value"]),
            "parties": sorted(
                (
                    p["participationtypemask"],
                    p["addressused"],
                    contacts.get(p["_partyid_value"], bool(p["_partyid_value"])),
                )
                for p in row["appointment_activity_parties"]
            ),
        }
    return out


def events(graph: GraphEmulator) -> list[tuple[str, str]]:
    return sorted(
        (e["subject"], e["start"]["dateTime"][:16])
        for e in outlook(graph, "GET", f"/users/{ANN}/events?$top=100")["value"]
    )


def engine_of(state: Any, crm: Any, source: Any, clock: Any) -> Engine:
    stream = CalendarStream(state, crm, source, series_check_every=timedelta(0), clock=clock)
    push = PushStream(state, crm, source)
    return Engine(state, InMemoryJobQueue(), {"calendar": stream, "push": push}, clock=clock)


async def sync(engine: Engine) -> None:
    """The calendar's job, then the push's (what the sweep queues for a user with the push on)."""
    for stream in ("calendar", "push"):
        outcome = await engine.run_job(Job(ANN, stream))
        assert outcome.status == "done", outcome


async def run(world: DataverseWorld, crash: Crash | None = None) -> None:
    source = GraphCalendar(build_graph_client(world.config), GraphCaller(), page_size=4)
    if crash is not None:  # a first worker dies at the named call, then its lease expires
        parts = {"state": world.state, "crm": world.crm, "source": source}
        target, method, nth, after = crash
        parts[target] = CrashAt(parts[target], method, nth, after=after)
        with pytest.raises(SimulatedCrash):
            await sync(engine_of(**parts, clock=world.clock))
        world.clock.now += timedelta(minutes=10)
    for _ in range(2):  # the second round sees the pushed event come back through delta
        await sync(engine_of(world.state, world.crm, source, world.clock))


@pytest.fixture(scope="module")
async def clean_run(
    dataverse_server: DataverseStandIn, azurite_stack: AzuriteStack, graph: GraphEmulator
) -> dict[str, Any]:
    seed(dataverse_server, graph)
    async with dataverse_world(dataverse_server, azurite_stack, graph, ANN, COLUMNS) as world:
        await run(world)
    return {"appointments": appointments(dataverse_server), "events": events(graph)}


async def test_a_meeting_is_one_appointment_a_rerun_writes_nothing_and_a_delete_cancels_it(
    dataverse_server: DataverseStandIn, azurite_stack: AzuriteStack, graph: GraphEmulator
) -> None:
    dv = dataverse_server
    kickoff = seed(dv, graph)
    async with dataverse_world(dv, azurite_stack, graph, ANN, COLUMNS) as world:
        await run(world)
        stored = appointments(dv)
        assert len(stored) == 1 + 3 + 1  # the meeting, three occurrences, the one made in Dynamics 365
        mine = dv.rows("appointments", filter=f"globalobjectid eq '{kickoff['iCalUId']}'", select="subject")
        assert [m["subject"] for m in mine] == ["Kickoff"]  # keyed by the meeting's iCalUId
        assert stored[f"Kickoff@{kickoff['start']['dateTime'][:19]}Z"] == {
            "keyed": (True, False),
            "state": (3, 5),
            "regarding": DORA,
            "parties": [(5, DORA, DORA), (7, ANN, True)],
        }
        weekly = [v for k, v in stored.items() if k.startswith("Weekly@")]
        assert len(weekly) == 3 and {v["keyed"] for v in weekly} == {(True, True)}  # + each original start
        assert [v["keyed"] for k, v in stored.items() if k.startswith("Site visit@")] == [(False, False)]
        assert ("Site visit", _at(3, 8)["dateTime"][:16]) in events(graph)  # pushed from Dynamics 365

        world.requests.writes = 0
        await run(world)
        assert world.requests.writes == 0
        assert appointments(dv) == stored

        outlook(graph, "DELETE", f"/users/{ANN}/events/{kickoff['id']}")
        await run(world)
        assert appointments(dv)[f"Kickoff@{kickoff['start']['dateTime'][:19]}Z"]["state"] == (
            2,
            4,
        )  # Canceled


@pytest.mark.parametrize("crash", CHECKPOINTS, ids=crash_id)
async def test_killed_at_a_checkpoint_and_rerun_equals_a_clean_run(
    crash: Crash,
    clean_run: dict[str, Any],
    dataverse_server: DataverseStandIn,
    azurite_stack: AzuriteStack,
    graph: GraphEmulator,
) -> None:
    assert len(clean_run["appointments"]) == 5 and len(clean_run["events"]) == 1 + 1 + 1
    seed(dataverse_server, graph)
    async with dataverse_world(dataverse_server, azurite_stack, graph, ANN, COLUMNS) as world:
        await run(world, crash)
    assert {"appointments": appointments(dataverse_server), "events": events(graph)} == clean_run
