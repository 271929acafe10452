"""Contacts both ways with Dataverse (change tracking as the CRM's change feed): msgraph-sdk → Graph
emulator, Azurite, the Dataverse connector over HTTPS. Overlapping address books meet by e-mail
address with no duplicate on either side (killed after a write and re-run, too); a re-run writes
nothing; an edit made in Dynamics 365 reaches Outlook; an expired change-tracking token costs a full
read and changes nothing."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from emulators.azurite import AzuriteStack
from emulators.dataverse.launcher import DataverseStandIn
from emulators.graph.launcher import GraphEmulator
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.contacts import GraphContacts
from shared.model import Job
from shared.state.memory import InMemoryJobQueue
from shared.sync.contacts import ContactsStream
from shared.sync.engine import Engine
from tests.integration.dataverse.world import Crash, dataverse_world, outlook

pytestmark = pytest.mark.integration

# a crash right after Dataverse applied a write, and right after Outlook created a contact
CRASHES: list[Crash | None] = [None, ("crm", "upsert_contact", 1, True), ("graph", "create", 1, True)]


def in_dataverse(dv: DataverseStandIn, owner: str) -> dict[str, dict[str, Any]]:
    user = dv.rows("systemusers", filter=f"internalemailaddress eq '{owner}'")[0]["systemuserid"]
    rows = dv.rows("contacts", filter=f"_ownerid_value eq {user} and statecode eq 0")
    return {str(r["emailaddress1"]).lower(): r for r in rows}


def in_outlook(graph: GraphEmulator, owner: str, folder: str) -> dict[str, dict[str, Any]]:
    found = outlook(graph, "GET", f"/users/{owner}/contactFolders/{folder}/contacts")["value"]
    return {c["emailAddresses"][0]["address"].lower(): c for c in found}


@pytest.mark.parametrize(
    "crash", CRASHES, ids=["clean", "crm.upsert_contact#1-after", "outlook.create#1-after"]
)
async def test_address_books_meet_without_duplicates_follow_dynamics_edits_and_survive_an_expired_token(
    crash: Crash | None, dataverse_server: DataverseStandIn, azurite_stack: AzuriteStack, graph: GraphEmulator
) -> None:
    dv = dataverse_server
    tag = secrets.token_hex(3)
    owner = f"ann-{tag}@contoso.com"
    alice, bert, carl = (f"{n}-{tag}@fabrikam.example" for n in ("alice", "bert", "carl"))
    graph.control.add_user(owner)
    dv.add_user(owner)
    dv.add_contact(alice, name="Alice Crm", owner=owner, jobtitle="Buyer")
    bert_id = dv.add_contact(bert, name="Bert Crm", owner=owner, jobtitle="Buyer")
    dv.add_contact(f"theirs-{tag}@fabrikam.example", name="Not Ann's", owner=f"zed-{tag}@contoso.com")
    folder = outlook(graph, "POST", f"/users/{owner}/contactFolders", {"displayName": "CRM Contacts"})["id"]
    for address, name in ((alice, "Alice"), (carl, "Carl")):
        contact = {"givenName": name, "surname": "Outlook", "emailAddresses": [{"address": address.upper()}]}
        outlook(graph, "POST", f"/users/{owner}/contactFolders/{folder}/contacts", contact)

    columns = {"Enabled": True, "Mail": False, "Contacts": True}
    async with dataverse_world(dv, azurite_stack, graph, owner, columns) as world:
        side = GraphContacts(build_graph_client(world.config), GraphCaller())

        def engine_of(crm: Any, graph: Any) -> Engine:
            return Engine(
                world.state, InMemoryJobQueue(), {"contacts": ContactsStream(world.state, crm, graph)}
            )

        job = Job(owner, "contacts")
        await world.die_once(crash, {"crm": world.crm, "graph": side}, engine_of, job)
        assert (await engine_of(world.crm, side).run_job(job)).status == "done"
        assert sorted(in_dataverse(dv, owner)) == sorted([alice, bert, carl])  # Alice linked, not duplicated
        assert sorted(in_outlook(graph, owner, folder)) == sorted([alice, bert, carl])
        made = in_dataverse(dv, owner)[carl]
        assert (made["firstname"], made["lastname"]) == ("Carl", "Outlook")
        assert made["crmsync_outlookkey"].startswith("outlook:")  # our key: a re-run finds it

        world.requests.writes = 0
        graph_before = graph.control.stats()["byRoute"]
        assert (await engine_of(world.crm, side).run_job(job)).status == "done"
        assert world.requests.writes == 0
        graph_writes = {
            route: n - graph_before.get(route, 0)
            for route, n in graph.control.stats()["byRoute"].items()
            if route.split()[0] in {"POST", "PATCH", "DELETE"} and "contact" in route.lower()
        }
        assert not any(graph_writes.values()), graph_writes

        dv.update("contacts", bert_id, {"jobtitle": "Head of Buying"})  # a Dynamics 365 user's edit
        assert (await engine_of(world.crm, side).run_job(job)).status == "done"
        assert in_outlook(graph, owner, folder)[bert]["jobTitle"] == "Head of Buying"

        dv.expire_tokens()  # past the organisation's change-tracking retention
        world.requests.writes = 0
        assert (await engine_of(world.crm, side).run_job(job)).status == "done"
        assert world.requests.writes == 0
        assert (
            sorted(in_dataverse(dv, owner))
            == sorted(in_outlook(graph, owner, folder))
            == sorted([alice, bert, carl])
        )
