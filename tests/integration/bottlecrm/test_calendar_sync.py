"""Meetings → BottleCRM tasks (it keeps dates only, times in custom fields): msgraph-sdk → Graph
emulator, Azurite, BottleCRM over HTTP. A meeting is one task linked to its CRM attendee; a re-run
writes nothing; a meeting deleted in Outlook is cancelled in the CRM."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from emulators.azurite import AzuriteStack
from emulators.bottlecrm import BottleCrm
from emulators.graph.launcher import GraphEmulator
from shared.crm.bottlecrm import BottleCrmConnector
from shared.graph.calendar import GraphCalendar
from shared.graph.client import GraphCaller, build_graph_client
from shared.model import ContactFields, CrmContact, Job
from shared.state.memory import InMemoryJobQueue
from shared.sync.calendar import CalendarStream
from shared.sync.engine import Engine
from tests.integration.bottlecrm.world import bottle_world, outlook

pytestmark = [pytest.mark.integration, pytest.mark.bottlecrm]


def tasks_with_key(server: BottleCrm, key: str) -> int:
    response = httpx.get(
        f"{server.base_url}/api/tasks/",
        params={"cf_outlook_event_key": key, "limit": 50},
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )
    response.raise_for_status()
    return len(response.json()["tasks"])


# a crash right after BottleCRM applied the task, and right before the first cursor save
CRASHES = [None, ("crm", "upsert_appointment", 1, True), ("state", "save_cursor", 1, False)]


@pytest.mark.parametrize(
    "crash", CRASHES, ids=["clean", "crm.upsert_appointment#1-after", "state.save_cursor#1"]
)
async def test_a_meeting_is_one_task_a_rerun_writes_nothing_and_a_delete_cancels_it(
    crash: tuple[str, str, int, bool] | None,
    bottlecrm_server: BottleCrm,
    azurite_stack: AzuriteStack,
    graph: GraphEmulator,
) -> None:
    tag = secrets.token_hex(3)
    owner, guest = f"ann-{tag}@contoso.com", f"dora-{tag}@fabrikam.example"
    graph.control.add_user(owner)
    seed = BottleCrmConnector(bottlecrm_server.base_url, bottlecrm_server.token, provision_owners=True)
    fields = ContactFields(given_name="Dora", surname="Guest", emails=(guest,))
    await seed.upsert_contact(CrmContact(ref=None, owner=owner, fields=fields, key=f"seed-{guest}"))
    await seed.aclose()
    start = (datetime.now(UTC) + timedelta(days=3)).replace(hour=10, minute=0, second=0, microsecond=0)
    event = outlook(graph, "POST", f"/users/{owner}/events", {
        "subject": f"Kickoff {tag}",
        "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "end": {"dateTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "attendees": [{"emailAddress": {"address": guest, "name": "Dora"}, "type": "required"}],
    })  # fmt: skip
    key = outlook(graph, "GET", f"/users/{owner}/events/{event['id']}")["iCalUId"]

    columns = {"Enabled": True, "Mail": False, "Calendar": True}
    async with bottle_world(bottlecrm_server, azurite_stack, graph, owner, columns, "/api/tasks") as world:
        crm, writes = world.crm, world.writes
        source = GraphCalendar(build_graph_client(world.config), GraphCaller())

        def engine_of(crm: Any, state: Any) -> Engine:
            return Engine(state, InMemoryJobQueue(), {"calendar": CalendarStream(state, crm, source)})

        engine = engine_of(crm, world.state)
        await world.die_once(crash, {"crm": crm, "state": world.state}, engine_of, Job(owner, "calendar"))
        assert (await engine.run_job(Job(owner, "calendar"))).status == "done"
        assert tasks_with_key(bottlecrm_server, key) == 1
        stored = await crm.get_appointment(key)
        assert stored is not None and not stored.cancelled
        assert stored.subject == f"Kickoff {tag}" and [p.email for p in stored.people] == [guest]
        assert writes.count > 0 or crash is not None

        writes.count = 0
        assert (await engine.run_job(Job(owner, "calendar"))).status == "done"
        assert writes.count == 0

        outlook(graph, "DELETE", f"/users/{owner}/events/{event['id']}")
        assert (await engine.run_job(Job(owner, "calendar"))).status == "done"
        cancelled = await crm.get_appointment(key)
        assert cancelled is not None and cancelled.cancelled
