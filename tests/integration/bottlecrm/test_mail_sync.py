"""Mail → BottleCRM interactions on the real stack: msgraph-sdk → Graph emulator, Azurite, and
BottleCRM over HTTP. A re-run writes nothing; a job killed at any checkpoint and re-run leaves BottleCRM
exactly as a clean run does."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from emulators.azurite import AzuriteStack
from emulators.bottlecrm import BottleCrm
from emulators.graph.launcher import GraphEmulator
from shared.crm.bottlecrm import BottleCrmConnector, journal_key
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.mail import GraphMailReader
from shared.model import ContactFields, CrmContact, Job
from shared.state.memory import InMemoryJobQueue
from shared.sync.engine import Engine
from shared.sync.mail import MailStream
from tests.integration.bottlecrm.world import bottle_world
from tests.integration.stack import unique_prefix

pytestmark = [pytest.mark.integration, pytest.mark.bottlecrm]
ANN = "ann@contoso.com"
MESSAGES = 30
PAGE_SIZE = 12  # three Graph pages
START = datetime.now(UTC).replace(microsecond=0)
PEOPLE = ("bob@fabrikam.example", "eve@northwind.example")

# (what crashes, which method, which call, after the real call?)
CHECKPOINTS = [
    ("crm", "upsert_journals", 1, True),  # BottleCRM applied a page, the worker died before recording it
    ("crm", "upsert_journals", 3, False),  # before the writes of the third page
    ("state", "save_cursor", 1, False),  # before the first page's cursor save
]


def interactions(crm: BottleCrm) -> dict[str, Any]:
    """Every interaction BottleCRM holds, by journal key, without what the CRM assigns."""
    rows = json.loads(
        crm.sql(
            "SELECT coalesce(json_agg(json_build_array(body, subject, direction, occurred_at, contact_id,"
            " account_id)), '[]') FROM interaction"
        )
    )
    out: dict[str, Any] = {}
    for body, *rest in rows:
        key = journal_key(body)
        assert key is not None and key not in out, "an interaction without a key, or a key twice"
        out[key] = [body, *rest]
    return out


async def seed(server: BottleCrm, graph: GraphEmulator) -> None:
    server.sql("TRUNCATE interaction CASCADE")
    graph.control.reset(empty=True)
    graph.control.add_user(ANN)
    crm = BottleCrmConnector(server.base_url, server.token, provision_owners=True)
    for address in PEOPLE:  # the same contacts every time: upserted by key
        fields = ContactFields(given_name=address.split("@")[0].title(), surname="Example", emails=(address,))
        await crm.upsert_contact(CrmContact(ref=None, owner=ANN, fields=fields, key=f"seed-{address}"))
    await crm.aclose()
    for n in range(MESSAGES):
        graph.control.deliver(
            ANN,
            {"from": {"address": PEOPLE[n % 2]}, "to": [{"address": ANN}], "subject": f"Order {n}",
             "cc": [{"address": PEOPLE[(n + 1) % 2]}] if n % 5 == 0 else [],
             "internetMessageId": f"<order-{n}@fabrikam.example>", "bodyHtml": f"<p>Order number {n}</p>",
             "conversationId": f"conv-{n}", "receivedDateTime": (START - timedelta(minutes=n)).isoformat()},
        )  # fmt: skip


@pytest.fixture(scope="module")
async def clean_run(bottlecrm_server: BottleCrm, azurite_stack: AzuriteStack, graph: GraphEmulator) -> dict:
    await seed(bottlecrm_server, graph)
    await run(azurite_stack, graph, bottlecrm_server)
    return interactions(bottlecrm_server)


async def run(
    azurite: AzuriteStack,
    graph: GraphEmulator,
    server: BottleCrm,
    crash: tuple | None = None,
    *,
    prefix: str = "",
) -> int:
    """One mail job (after a crashed one, if asked); returns the interaction writes of the last job."""
    columns = {"Enabled": True, "MailFolders": "inbox"}
    async with bottle_world(
        server, azurite, graph, ANN, columns, "/api/interactions/", prefix=prefix
    ) as world:
        mail = GraphMailReader(build_graph_client(world.config), GraphCaller(), page_size=PAGE_SIZE)

        def engine(state: Any, crm: Any, graph: Any) -> Engine:
            streams = {"mail": MailStream(state, crm, graph, org_domains=["contoso.com"])}
            return Engine(state, InMemoryJobQueue(), streams)

        parts = {"state": world.state, "crm": world.crm, "graph": mail}
        await world.die_once(crash, parts, engine, Job(ANN, "mail:inbox"))
        world.writes.count = 0
        outcome = await engine(**parts).run_job(Job(ANN, "mail:inbox"))
        assert outcome.status == "done", outcome
        return world.writes.count


async def test_mail_becomes_one_interaction_per_person_and_a_rerun_writes_nothing(
    bottlecrm_server: BottleCrm, azurite_stack: AzuriteStack, graph: GraphEmulator
) -> None:
    await seed(bottlecrm_server, graph)
    prefix = unique_prefix()
    first = await run(azurite_stack, graph, bottlecrm_server, prefix=prefix)
    stored = interactions(bottlecrm_server)

    with_cc = len(range(0, MESSAGES, 5))
    assert first == len(stored) == MESSAGES + with_cc
    assert {k.partition("|")[0] for k in stored} == {f"<order-{n}@fabrikam.example>" for n in range(MESSAGES)}
    assert all(row[4] for row in stored.values()), "every interaction is homed on a contact"

    assert await run(azurite_stack, graph, bottlecrm_server, prefix=prefix) == 0
    assert interactions(bottlecrm_server) == stored


@pytest.mark.parametrize(
    "crash", CHECKPOINTS, ids=[f"{c[0]}.{c[1]}#{c[2]}{'-after' if c[3] else ''}" for c in CHECKPOINTS]
)
async def test_killed_at_a_checkpoint_and_rerun_equals_a_clean_run(
    crash: tuple,
    clean_run: dict,
    bottlecrm_server: BottleCrm,
    azurite_stack: AzuriteStack,
    graph: GraphEmulator,
) -> None:
    assert len(clean_run) > MESSAGES
    await seed(bottlecrm_server, graph)

    await run(azurite_stack, graph, bottlecrm_server, crash)

    assert interactions(bottlecrm_server) == clean_run
