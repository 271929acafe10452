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
from shared.state.tables import TableStateStore
from shared.sync.calendar import CalendarStream
from shared.sync.engine import Engine
from tests.integration.bottlecrm.test_mail_sync import Clock, Writes, settings
from tests.integration.crash import CrashAt, SimulatedCrash
from tests.integration.stack import unique_prefix

pytestmark = [pytest.mark.integration, pytest.mark.bottlecrm]


def outlook(graph: GraphEmulator, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": "Bearer outlook", "Prefer": 'IdType="ImmutableId"'}
    response = httpx.request(method, f"{graph.base_url}{path}", json=body, headers=headers, timeout=30)
    response.raise_for_status()
    return response.json() if response.content else None


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
    start = (datetime.now(UTC) + timedelta(days=3)).replace(hour=10, minute=0, second=0, microsecond=0)
    event = outlook(graph, "POST", f"/users/{owner}/events", {
        "subject": f"Kickoff {tag}",
        "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "end": {"dateTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "attendees": [{"emailAddress": {"address": guest, "name": "Dora"}, "type": "required"}],
    })  # fmt: skip
    key = outlook(graph, "GET", f"/users/{owner}/events/{event['id']}")["iCalUId"]

    config = settings(azurite_stack, graph, bottlecrm_server)
    clock = Clock()
    state = TableStateStore.from_connection_string(
        config.storage_connection_string, clock=clock, table_prefix=unique_prefix()
    )
    await state.ensure_tables()
    await state.put_config(owner, {"Enabled": True, "Mail": False, "Calendar": True})
    writes = Writes("/api/tasks")
    client = httpx.AsyncClient(timeout=30.0, event_hooks={"request": [writes]})
    crm = BottleCrmConnector(bottlecrm_server.base_url, bottlecrm_server.token, client=client)
    source = GraphCalendar(build_graph_client(config), GraphCaller())
    engine = Engine(state, InMemoryJobQueue(), {"calendar": CalendarStream(state, crm, source)})
    try:
        if crash is not None:
            target, method, nth, after = crash
            parts: dict[str, Any] = {"crm": crm, "state": state}
            parts[target] = CrashAt(parts[target], method, nth, after=after)
            streams = {"calendar": CalendarStream(parts["state"], parts["crm"], source)}
            with pytest.raises(SimulatedCrash):
                await Engine(parts["state"], InMemoryJobQueue(), streams).run_job(Job(owner, "calendar"))
            clock.now += timedelta(minutes=10)  # the dead worker's lease expires
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
    finally:
        await client.aclose()
        await seed.aclose()
        await state.aclose()
