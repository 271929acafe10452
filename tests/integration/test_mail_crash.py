"""Kill a mail sync at each checkpoint, re-run it, and compare the CRM with a clean run's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from emulators.azurite import AzuriteStack
from emulators.crm.launcher import ReferenceCrm
from emulators.graph.launcher import GraphEmulator
from shared.crm.reference import ReferenceCrmConnector
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.mail import GraphMailReader
from shared.model import Job
from shared.state.memory import InMemoryJobQueue
from shared.state.tables import TableStateStore
from shared.sync.engine import Engine
from shared.sync.mail import MailStream
from tests.integration.crash import CrashAt, SimulatedCrash
from tests.integration.stack import comparable, settings_for, unique_prefix

pytestmark = pytest.mark.integration
ANN = "ann@contoso.com"
MESSAGES = 130  # two pages of 100
START = datetime.now(UTC).replace(microsecond=0)

# (what crashes, which method, which call, after the real call?)
CHECKPOINTS = [
    ("graph", "read_page", 2, True),  # after a Graph page was read
    ("crm", "upsert_journals", 1, True),  # after a page's CRM write (applied, the answer was lost)
    ("crm", "upsert_journals", 2, False),  # before the second page's CRM write
    ("state", "put_keys", 1, True),  # after a page's key rows were written
    ("state", "record_decisions", 1, True),  # after the page's decisions, before its cursor save
    ("state", "save_cursor", 1, False),  # before the first cursor save
    ("state", "save_cursor", 2, False),  # before the deltaLink save
]


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _engine(state: Any, crm: Any, mail: Any) -> Engine:
    return Engine(
        state, InMemoryJobQueue(), {"mail": MailStream(state, crm, mail, org_domains=["contoso.com"])}
    )


def _seed(graph: GraphEmulator, crm: ReferenceCrm) -> None:
    graph.control.reset(empty=True)
    crm.reset()
    graph.control.add_user(ANN)
    crm.add_person("bob@fabrikam.example", name="Bob", owner=ANN)
    for n in range(MESSAGES):
        graph.control.deliver(
            ANN,
            {"from": {"address": "bob@fabrikam.example"}, "to": [{"address": ANN}], "subject": f"Order {n}",
             "internetMessageId": f"<order-{n}@fabrikam.example>", "bodyHtml": f"<p>Order number {n}</p>",
             "conversationId": f"conv-{n}", "receivedDateTime": (START - timedelta(minutes=n)).isoformat()},
        )  # fmt: skip


async def _run(
    azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm, crash: tuple | None
) -> dict:
    settings = settings_for(azurite_stack, graph, crm_server)
    clock = Clock()
    state = TableStateStore.from_connection_string(
        settings.storage_connection_string, clock=clock, table_prefix=unique_prefix()
    )
    await state.ensure_tables()
    await state.put_config(ANN, {"Enabled": True, "MailFolders": "inbox"})
    crm = ReferenceCrmConnector(crm_server.base_url, crm_server.token)
    mail = GraphMailReader(build_graph_client(settings), GraphCaller())
    try:
        if crash is not None:
            target, method, nth, after = crash
            parts: dict[str, Any] = {"state": state, "crm": crm, "graph": mail}
            parts[target] = CrashAt(parts[target], method, nth, after=after)
            with pytest.raises(SimulatedCrash):
                await _engine(parts["state"], parts["crm"], parts["graph"]).run_job(Job(ANN, "mail:inbox"))
            clock.now += timedelta(minutes=10)  # the dead worker's lease expires
        outcome = await _engine(state, crm, mail).run_job(Job(ANN, "mail:inbox"))
        assert outcome.status == "done", outcome
        cursor = await state.get_cursor(ANN, "mail:inbox")
        assert cursor.link_kind == "delta"
        return comparable({j["key"]: j for j in crm_server.journals()})
    finally:
        await crm.aclose()
        await state.aclose()


@pytest.fixture(scope="module")
async def clean_run(azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm) -> dict:
    _seed(graph, crm_server)
    return await _run(azurite_stack, graph, crm_server, None)


@pytest.mark.parametrize(
    "crash", CHECKPOINTS, ids=[f"{c[0]}.{c[1]}#{c[2]}{'-after' if c[3] else ''}" for c in CHECKPOINTS]
)
async def test_killed_at_a_checkpoint_and_rerun_equals_a_clean_run(
    crash: tuple, clean_run: dict, azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm
) -> None:
    assert len(clean_run) == MESSAGES
    _seed(graph, crm_server)
    assert await _run(azurite_stack, graph, crm_server, crash) == clean_run
