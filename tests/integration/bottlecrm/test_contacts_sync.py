"""Contacts both ways with BottleCRM (a snapshot-only contact feed): msgraph-sdk → Graph emulator,
Azurite, BottleCRM over HTTP. Overlapping address books end with no duplicate on either side, and a
second run writes nothing."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest

from emulators.azurite import AzuriteStack
from emulators.bottlecrm import BottleCrm
from emulators.graph.launcher import GraphEmulator
from shared.crm.bottlecrm import BottleCrmConnector
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.contacts import GraphContacts
from shared.model import ContactFields, CrmContact, CrmContactRemoved, Job
from shared.state.memory import InMemoryJobQueue
from shared.sync.contacts import ContactsStream
from shared.sync.engine import Engine
from tests.integration.bottlecrm.world import BottleWorld, bottle_world, outlook

pytestmark = [pytest.mark.integration, pytest.mark.bottlecrm]


async def crm_contacts(crm: BottleCrmConnector, owner: str) -> dict[str, CrmContact]:
    page = await crm.contact_changes(owner, None)
    found = [c for c in page.changes if not isinstance(c, CrmContactRemoved)]
    return {c.fields.emails[0].lower(): c for c in found if c.fields.emails}


# a crash right after BottleCRM applied a write, and right after Outlook created a contact
CRASHES = [None, ("crm", "upsert_contact", 1, True), ("graph", "create", 1, True)]


@pytest.mark.parametrize(
    "crash", CRASHES, ids=["clean", "crm.upsert_contact#1-after", "outlook.create#1-after"]
)
async def test_overlapping_address_books_meet_without_duplicates_and_a_rerun_writes_nothing(
    crash: tuple[str, str, int, bool] | None,
    bottlecrm_server: BottleCrm,
    azurite_stack: AzuriteStack,
    graph: GraphEmulator,
) -> None:
    tag = secrets.token_hex(3)
    owner = f"ann-{tag}@contoso.com"
    alice, bert, carl = (f"{n}-{tag}@fabrikam.example" for n in ("alice", "bert", "carl"))
    graph.control.add_user(owner)
    seed = BottleCrmConnector(bottlecrm_server.base_url, bottlecrm_server.token, provision_owners=True)
    for address, name in ((alice, "Alice"), (bert, "Bert")):
        fields = ContactFields(given_name=name, surname="Crm", emails=(address,), job_title="Buyer")
        await seed.upsert_contact(CrmContact(ref=None, owner=owner, fields=fields, key=f"seed-{address}"))
    await seed.aclose()
    folder = outlook(graph, "POST", f"/users/{owner}/contactFolders", {"displayName": "CRM Contacts"})
    for address, name in ((alice, "Alice"), (carl, "Carl")):
        contact = {"givenName": name, "surname": "Outlook", "emailAddresses": [{"address": address.upper()}]}
        outlook(graph, "POST", f"/users/{owner}/contactFolders/{folder['id']}/contacts", contact)

    columns = {"Enabled": True, "Mail": False, "Contacts": True}
    async with bottle_world(bottlecrm_server, azurite_stack, graph, owner, columns, "/api/contacts") as world:
        crm, writes = world.crm, world.writes
        side = GraphContacts(build_graph_client(world.config), GraphCaller())

        def engine_of(crm: Any, graph: Any) -> Engine:
            return Engine(
                world.state, InMemoryJobQueue(), {"contacts": ContactsStream(world.state, crm, graph)}
            )

        engine = engine_of(crm, side)
        await world.die_once(crash, {"crm": crm, "graph": side}, engine_of, Job(owner, "contacts"))
        assert (await engine.run_job(Job(owner, "contacts"))).status == "done"
        in_crm = await crm_contacts(crm, owner)
        assert sorted(in_crm) == sorted([alice, bert, carl])  # Alice linked, not duplicated
        in_outlook = outlook(graph, "GET", f"/users/{owner}/contactFolders/{folder['id']}/contacts")["value"]
        addresses = sorted(a["address"].lower() for c in in_outlook for a in c["emailAddresses"])
        assert addresses == sorted([alice, bert, carl])

        assert writes.count > 0 or crash is not None  # Carl was created in BottleCRM: the counter sees writes
        writes.count = 0
        graph_before = graph.control.stats()["byRoute"]
        assert (await engine.run_job(Job(owner, "contacts"))).status == "done"
        assert writes.count == 0
        graph_writes = {
            route: n - graph_before.get(route, 0)
            for route, n in graph.control.stats()["byRoute"].items()
            if route.split()[0] in {"POST", "PATCH", "DELETE"} and "contact" in route.lower()
        }
        assert not any(graph_writes.values()), graph_writes


DELETE_IN_CRM = {"Enabled": True, "Mail": False, "Contacts": True, "ContactsDeleteInCrm": True}


def contacts_engine(world: BottleWorld) -> Engine:
    side = GraphContacts(build_graph_client(world.config), GraphCaller())
    return Engine(world.state, InMemoryJobQueue(), {"contacts": ContactsStream(world.state, world.crm, side)})


async def test_another_users_contact_holding_the_same_address_is_never_taken_over_or_deleted(
    bottlecrm_server: BottleCrm, azurite_stack: AzuriteStack, graph: GraphEmulator
) -> None:
    """The review's case: Carol's CRM contact, Ann's Outlook contact with the same address. BottleCRM
    keeps one contact per address, so Ann's sync may not link it (it is not hers): an issue says why,
    and neither Ann's edits nor her delete (ContactsDeleteInCrm) reach Carol's contact."""
    tag = secrets.token_hex(3)
    ann, carol, dora = f"ann-{tag}@contoso.com", f"carol-{tag}@contoso.com", f"dora-{tag}@fabrikam.example"
    graph.control.add_user(ann)
    seed = BottleCrmConnector(bottlecrm_server.base_url, bottlecrm_server.token, provision_owners=True)
    try:
        await seed.upsert_contact(  # Ann is a BottleCRM user with a contact of her own
            CrmContact(None, ann, ContactFields(given_name="Own", emails=(f"own-{tag}@fabrikam.example",)))
        )
        fields = ContactFields(given_name="Dora", surname="Carol's", emails=(dora,), job_title="Buyer")
        carols = await seed.upsert_contact(CrmContact(None, carol, fields, key=f"seed-{tag}"))
        before = await seed.get_contact(carols)
        folder = outlook(graph, "POST", f"/users/{ann}/contactFolders", {"displayName": "CRM Contacts"})
        contacts = f"/users/{ann}/contactFolders/{folder['id']}/contacts"
        dora_of_ann = {"givenName": "Dora", "surname": "Ann's", "emailAddresses": [{"address": dora}]}
        mine = outlook(graph, "POST", contacts, dora_of_ann)

        async with bottle_world(bottlecrm_server, azurite_stack, graph, ann, DELETE_IN_CRM, "/api") as world:
            engine = contacts_engine(world)
            assert (await engine.run_job(Job(ann, "contacts"))).status == "done"
            [issue] = await world.state.list_issues(ann)
            assert carols.id in issue.reason and "assigned to another user" in issue.reason
            assert await seed.get_contact(carols) == before

            outlook(graph, "PATCH", f"{contacts}/{mine['id']}", {"jobTitle": "Edited by Ann"})
            await engine.run_job(Job(ann, "contacts"))
            outlook(graph, "DELETE", f"{contacts}/{mine['id']}")
            await engine.run_job(Job(ann, "contacts"))
            assert await seed.get_contact(carols) == before
    finally:
        await seed.aclose()


async def test_a_contact_shared_with_another_user_is_not_deleted_by_one_users_outlook_delete(
    bottlecrm_server: BottleCrm, azurite_stack: AzuriteStack, graph: GraphEmulator
) -> None:
    """A CRM user assigned one contact to both Ann and Carol. Ann's sync links it (it is hers too), but
    her Outlook delete with ContactsDeleteInCrm does not delete what Carol shares."""
    tag = secrets.token_hex(3)
    ann, carol, erin = f"ann-{tag}@contoso.com", f"carol-{tag}@contoso.com", f"erin-{tag}@fabrikam.example"
    graph.control.add_user(ann)
    seed = BottleCrmConnector(bottlecrm_server.base_url, bottlecrm_server.token, provision_owners=True)
    try:
        await seed.upsert_contact(
            CrmContact(None, carol, ContactFields(given_name="Own", emails=(f"own-{tag}@fabrikam.example",)))
        )
        fields = ContactFields(given_name="Erin", surname="Shared", emails=(erin,))
        shared = await seed.upsert_contact(CrmContact(None, ann, fields, key=f"seed-{tag}"))
        async with httpx.AsyncClient(base_url=bottlecrm_server.base_url) as api:
            auth = {"Authorization": f"Bearer {bottlecrm_server.token}"}
            teams = (await api.get("/api/users/get-teams-and-users/", headers=auth)).json()["profiles"]
            profiles = {p["user_details"]["email"].lower(): p["id"] for p in teams}
            assignees = [profiles[ann], profiles[carol]]
            shared_row = f"/api/contacts/{shared.id}/"
            (await api.patch(shared_row, json={"assigned_to": assignees}, headers=auth)).raise_for_status()

        async with bottle_world(bottlecrm_server, azurite_stack, graph, ann, DELETE_IN_CRM, "/api") as world:
            engine = contacts_engine(world)
            assert (await engine.run_job(Job(ann, "contacts"))).status == "done"
            folder = (await world.state.get_cursor(ann, "contacts")).extra["folderId"]
            contacts = f"/users/{ann}/contactFolders/{folder}/contacts"
            [linked] = outlook(graph, "GET", contacts)["value"]

            outlook(graph, "DELETE", f"{contacts}/{linked['id']}")
            outcome = await engine.run_job(Job(ann, "contacts"))
            await engine.run_job(Job(ann, "contacts"))

            assert outcome.stats["failed"] == 1  # the connector refused the delete
            kept = await seed.get_contact(shared)
            assert kept is not None and kept.fields.surname == "Shared"
    finally:
        await seed.aclose()
