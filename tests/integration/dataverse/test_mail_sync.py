"""Mail → Dataverse email activities on the real stack: msgraph-sdk → Graph emulator, Azurite, and the
Dataverse connector over HTTPS to the stand-in. One email per message, linked to its contacts; a
message Dynamics 365 already tracked is linked, not duplicated; a re-run writes nothing; a job killed
at any checkpoint and re-run leaves Dataverse exactly as a clean run does; a message Dataverse
refuses is recorded with Dataverse's reason and written once it is accepted."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from emulators.azurite import AzuriteStack
from emulators.dataverse.launcher import DataverseStandIn
from emulators.graph.launcher import GraphEmulator
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.mail import GraphMailReader
from shared.model import Job
from shared.state.memory import InMemoryJobQueue
from shared.sync.engine import Engine
from shared.sync.mail import MailStream
from tests.integration.crash import crash_id
from tests.integration.dataverse.world import Crash, DataverseWorld, dataverse_world

pytestmark = pytest.mark.integration
ANN = "ann@contoso.com"
MESSAGES = 30
PAGE_SIZE = 12  # three Graph pages
START = datetime.now(UTC).replace(microsecond=0)
PEOPLE = ("bob@fabrikam.example", "eve@northwind.example")
TRACKED = "<order-7@fabrikam.example>"  # Dynamics 365's own tracking had it before the sync

CHECKPOINTS: list[Crash] = [
    ("crm", "upsert_journals", 1, True),  # Dataverse applied a page, the worker died before recording it
    ("crm", "upsert_journals", 3, False),  # before the writes of the third page
    ("state", "save_cursor", 1, False),  # before the first page's cursor save
]


def seed(dv: DataverseStandIn, graph: GraphEmulator, *, messages: int = MESSAGES) -> str:
    """Returns the id of the email Dynamics 365 had tracked already."""
    dv.reset()
    graph.control.reset(empty=True)
    graph.control.add_user(ANN)
    dv.add_user(ANN, "Ann Admin")
    for address in PEOPLE:
        dv.add_contact(address, name=address.split("@")[0].title() + " Example", owner=ANN)
    tracked = dv.add_email(TRACKED, owner=ANN)
    for n in range(messages):
        graph.control.deliver(
            ANN,
            {
                "from": {"address": PEOPLE[n % 2]},
                "to": [{"address": ANN}],
                "subject": f"Order {n}",
                "cc": [{"address": PEOPLE[(n + 1) % 2]}] if n % 5 == 0 else [],
                "internetMessageId": f"<order-{n}@fabrikam.example>",
                "bodyHtml": f"<p>Order number {n}</p>",
                "conversationId": f"conv-{n}",
                "receivedDateTime": (START - timedelta(minutes=n)).isoformat(),
            },
        )
    return tracked


def emails(dv: DataverseStandIn) -> dict[str, Any]:
    """Every email Dataverse holds, by Message-ID, without what Dataverse assigns (contacts by address)."""
    contacts = {c["contactid"]: c["emailaddress1"] for c in dv.rows("contacts", select="emailaddress1")}
    out: dict[str, Any] = {}
    for row in dv.rows(
        "emails", expand="email_activity_parties($select=participationtypemask,addressused,_partyid_value)"
    ):
        assert row["messageid"] not in out, f"{row['messageid']} twice"
        parties = sorted(
            (
                p["participationtypemask"],
                p["addressused"],
                contacts.get(p["_partyid_value"], bool(p["_partyid_value"])),
            )
            for p in row["email_activity_parties"]
        )
        details = json.loads(row["crmsync_outlookdetails"] or "{}")
        out[row["messageid"]] = {
            "id": row["activityid"],
            "subject": row["subject"],
            "state": (row["statecode"], row["statuscode"]),
            "incoming": row["directioncode"] is False,
            "regarding": contacts.get(row["_regardingobjectid_value"]),
            "owner": row["_ownerid_value"],
            "parties": parties,
            "seen": details.get("seen"),
            "adopted": details.get("adopted", False),
            "description": row["description"],
        }
    return out


def engine(state: Any, crm: Any, graph: Any) -> Engine:
    return Engine(
        state, InMemoryJobQueue(), {"mail": MailStream(state, crm, graph, org_domains=["contoso.com"])}
    )


async def run(world: DataverseWorld, crash: Crash | None = None) -> None:
    mail = GraphMailReader(build_graph_client(world.config), GraphCaller(), page_size=PAGE_SIZE)
    parts = {"state": world.state, "crm": world.crm, "graph": mail}
    await world.die_once(crash, parts, engine, Job(ANN, "mail:inbox"))
    world.requests.total = world.requests.writes = 0
    outcome = await engine(**parts).run_job(Job(ANN, "mail:inbox"))
    assert outcome.status == "done", outcome


COLUMNS = {"Enabled": True, "MailFolders": "inbox"}


@pytest.fixture(scope="module")
async def clean_run(
    dataverse_server: DataverseStandIn, azurite_stack: AzuriteStack, graph: GraphEmulator
) -> dict[str, Any]:
    seed(dataverse_server, graph)
    async with dataverse_world(dataverse_server, azurite_stack, graph, ANN, COLUMNS) as world:
        await run(world)
    return emails(dataverse_server)


async def test_each_message_is_one_email_linked_to_its_contacts_and_a_rerun_writes_nothing(
    dataverse_server: DataverseStandIn, azurite_stack: AzuriteStack, graph: GraphEmulator
) -> None:
    dv = dataverse_server
    tracked = seed(dv, graph)
    async with dataverse_world(dv, azurite_stack, graph, ANN, COLUMNS) as world:
        await run(world)
        pages = MESSAGES // PAGE_SIZE + 1
        # per page: the people lookup, the email lookup, the writes; plus the owner, once
        assert world.requests.total <= 3 * pages + 1, world.requests.total
        stored = emails(dv)

        assert sorted(stored) == sorted(f"<order-{n}@fabrikam.example>" for n in range(MESSAGES))
        ann = dv.rows("systemusers", filter=f"internalemailaddress eq '{ANN}'")[0]["systemuserid"]
        sent_by_bob = stored["<order-1@fabrikam.example>"]
        assert sent_by_bob | {"id": "", "description": ""} == {
            "id": "",
            "subject": "Order 1",
            "state": (1, 4),
            "incoming": True,
            "regarding": PEOPLE[1],
            "owner": ann,
            "parties": [(1, PEOPLE[1], PEOPLE[1]), (2, ANN, True)],
            "seen": [ANN],
            "adopted": False,
            "description": "",
        }
        with_cc = stored["<order-5@fabrikam.example>"]
        assert with_cc["regarding"] is None  # two people: regarding one alone would be wrong
        assert [p[2] for p in with_cc["parties"]] == [PEOPLE[1], True, PEOPLE[0]]

        linked = stored[TRACKED]  # Dynamics 365 had tracked it: the same row, now linked
        assert (linked["id"], linked["subject"], linked["adopted"]) == (tracked, "Tracked by Dynamics", True)
        assert (linked["regarding"], linked["state"], linked["seen"]) == (PEOPLE[1], (1, 4), [ANN])
        assert linked["parties"] == [(1, PEOPLE[1], PEOPLE[1])]

        await run(world)
        assert world.requests.writes == 0
        assert emails(dv) == stored


@pytest.mark.parametrize("crash", CHECKPOINTS, ids=crash_id)
async def test_killed_at_a_checkpoint_and_rerun_equals_a_clean_run(
    crash: Crash,
    clean_run: dict[str, Any],
    dataverse_server: DataverseStandIn,
    azurite_stack: AzuriteStack,
    graph: GraphEmulator,
) -> None:
    assert len(clean_run) == MESSAGES
    seed(dataverse_server, graph)
    async with dataverse_world(dataverse_server, azurite_stack, graph, ANN, COLUMNS) as world:
        await run(world, crash)
    after = emails(dataverse_server)
    assert {k: {**v, "owner": "", "id": "" if v["adopted"] else v["id"]} for k, v in after.items()} == {
        k: {**v, "owner": "", "id": "" if v["adopted"] else v["id"]} for k, v in clean_run.items()
    }


@pytest.mark.parametrize(
    "refuse", [False, True], ids=["second-messageid-accepted", "second-messageid-refused"]
)
async def test_a_tracked_message_is_linked_whether_dataverse_accepts_or_refuses_a_second_messageid(
    refuse: bool, dataverse_server: DataverseStandIn, azurite_stack: AzuriteStack, graph: GraphEmulator
) -> None:
    dv = dataverse_server
    tracked = seed(dv, graph, messages=8)
    dv.settings(reject_duplicate_message_id=refuse)
    async with dataverse_world(dv, azurite_stack, graph, ANN, COLUMNS) as world:
        await run(world)
    rows = dv.rows("emails", filter=f"messageid eq '{TRACKED}'", select="activityid,subject")
    assert [(r["activityid"], r["subject"]) for r in rows] == [(tracked, "Tracked by Dynamics")]
    assert len(emails(dv)) == 8


async def test_a_message_dataverse_refuses_is_recorded_with_its_reason_and_written_when_accepted(
    dataverse_server: DataverseStandIn, azurite_stack: AzuriteStack, graph: GraphEmulator
) -> None:
    dv = dataverse_server
    seed(dv, graph, messages=4)
    hostile = "Refused\r\nby a plug-in: <script>x</script> " + "z" * 500
    dv.fault(
        400,
        scope="operation",
        method="POST",
        path_contains="emails",
        error_code="0x80040265",
        message=hostile,
    )
    async with dataverse_world(dv, azurite_stack, graph, ANN, COLUMNS) as world:
        await run(world)
        issues = await world.state.list_issues(ANN, "mail:inbox")
        assert len(issues) == 1 and len(emails(dv)) == 4  # three written, and the tracked one
        reason = issues[0].reason
        assert "0x80040265" in reason and "Refused by a plug-in" in reason
        assert "\n" not in reason and "\r" not in reason and len(reason) < 600

        await run(world)  # the fault is used up: the retry writes it
        assert await world.state.list_issues(ANN, "mail:inbox") == []
        assert len(emails(dv)) == 5
