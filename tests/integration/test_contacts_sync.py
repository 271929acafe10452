"""Contacts both ways on the real stack: msgraph-sdk → Graph emulator, Azurite, reference CRM over HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from shared import admin
from shared.crm.memory import InMemoryCrm
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.contacts import GraphContacts
from shared.model import Job
from shared.ports.crm import Capabilities
from shared.state.memory import InMemoryJobQueue, InMemoryStateStore
from shared.sync.contacts import ContactsStream
from shared.sync.engine import Engine
from tests.integration.stack import Stack, settings_for

pytestmark = pytest.mark.integration
ANN = "ann@contoso.com"
FOLDER = "CRM Contacts"


# -- what the user sees in Outlook, and what the CRM holds -------------------------------------------

_HTTP = httpx.Client(headers={"Authorization": "Bearer outlook"}, timeout=30)  # one TLS setup, not one a call


def outlook(stack: Stack, method: str, path: str, body: Any = None) -> Any:
    """What the user's own Outlook does, through Graph."""
    response = _HTTP.request(method, f"{stack.graph.base_url}{path}", json=body)
    response.raise_for_status()
    return response.json() if response.content else None


def folder_id(stack: Stack, upn: str = ANN, name: str = FOLDER) -> str:
    folders = outlook(stack, "GET", f"/users/{upn}/contactFolders?$top=100")["value"]
    found = [f["id"] for f in folders if f["displayName"] == name]
    assert len(found) == 1, folders
    return str(found[0])


def make_folder(stack: Stack, upn: str = ANN, name: str = FOLDER) -> str:
    return str(outlook(stack, "POST", f"/users/{upn}/contactFolders", {"displayName": name})["id"])


def outlook_contacts(stack: Stack, upn: str = ANN) -> list[dict[str, Any]]:
    return list(
        outlook(stack, "GET", f"/users/{upn}/contactFolders/{folder_id(stack, upn)}/contacts?$top=500")[
            "value"
        ]
    )


def by_email(contacts: list[dict[str, Any]], key: str = "emailAddresses") -> dict[str, dict[str, Any]]:
    """Contacts by their first address, lower-cased; fails on a duplicate address."""
    found: dict[str, dict[str, Any]] = {}
    for contact in contacts:
        addresses = [a["address"] if isinstance(a, dict) else a for a in contact.get(key) or []]
        for address in addresses:
            assert address.lower() not in found, f"duplicate contact for an address: {contacts}"
            found[address.lower()] = contact
    return found


def crm_contacts(stack: Stack, owner: str = ANN) -> dict[str, dict[str, Any]]:
    return by_email(stack.crm.contacts(owner), key="emails")


def add_outlook_contact(stack: Stack, folder: str, email: str, **fields: Any) -> dict[str, Any]:
    body = {"emailAddresses": [{"address": email, "name": email}], **fields}
    return dict(outlook(stack, "POST", f"/users/{ANN}/contactFolders/{folder}/contacts", body))


def edit_outlook(stack: Stack, contact_id: str, **fields: Any) -> None:
    outlook(stack, "PATCH", f"/users/{ANN}/contacts/{contact_id}", fields)


def writes(stack: Stack) -> tuple[int, int]:
    """(CRM contact writes, Graph contact writes) so far."""
    crm = stack.crm.stats()["byRoute"]
    crm_writes = sum(n for route, n in crm.items() if "/contacts" in route and not route.startswith("GET"))
    graph = stack.graph.control.stats()["byRoute"]
    graph_writes = sum(
        n
        for route, n in graph.items()
        if "contact" in route.lower() and route.split()[0] in {"POST", "PATCH", "DELETE"}
    )
    return crm_writes, graph_writes


async def sync(stack: Stack, upn: str = ANN) -> str:
    outcomes = await stack.sync(upn)
    assert len(outcomes) == 1
    return outcomes[0].status


async def user_columns(stack: Stack, upn: str = ANN) -> dict[str, Any]:
    row = await stack.services.state.get_user(upn)
    assert row is not None
    return dict(row.columns)


async def add_user(stack: Stack, **columns: Any) -> None:
    await stack.add_user(ANN, Mail=False, Contacts=True, **columns)


# -- tests --------------------------------------------------------------------------------------------


async def test_first_sync_over_overlapping_address_books_links_instead_of_duplicating(stack: Stack) -> None:
    await add_user(stack)
    folder = make_folder(stack)
    add_outlook_contact(
        stack, folder, "Bob@Fabrikam.example", givenName="Bob", surname="Buyer", jobTitle="Buyer"
    )
    add_outlook_contact(stack, folder, "olga@outlook-only.example", givenName="Olga", surname="Only")
    stack.crm.add_person(
        "bob@fabrikam.example",
        name="Bob Buyer",
        owner=ANN,
        givenName="Bob",
        surname="Buyer",
        company="Fabrikam",
    )
    stack.crm.add_person("carl@crm-only.example", name="Carl Crm", owner=ANN, givenName="Carl", surname="Crm")
    stack.crm.add_person("dora@crm-only.example", name="Dora Crm", owner=ANN)
    stack.crm.add_person("olga@outlook-only.example", name="Olga (Dan's)", owner="dan@contoso.com")

    assert await sync(stack) == "done"

    outlook = by_email(outlook_contacts(stack))
    crm = crm_contacts(stack)
    everyone = {
        "bob@fabrikam.example",
        "olga@outlook-only.example",
        "carl@crm-only.example",
        "dora@crm-only.example",
    }
    assert set(outlook) == set(crm) == everyone
    assert len(outlook_contacts(stack)) == 4 and len(stack.crm.contacts(ANN)) == 4
    # the matched pair filled each side from the other
    assert outlook["bob@fabrikam.example"]["companyName"] == "Fabrikam"
    assert crm["bob@fabrikam.example"]["jobTitle"] == "Buyer"
    assert outlook["carl@crm-only.example"]["displayName"] == "Carl Crm"
    # Dan's contact with Olga's address was not taken over
    assert [p["displayName"] for p in stack.crm.contacts("dan@contoso.com")] == ["Olga (Dan's)"]

    before = writes(stack)
    assert await sync(stack) == "done"
    assert writes(stack) == before  # no echo: nothing written on either side


async def test_edits_on_each_side_arrive_on_the_other_and_do_not_echo(stack: Stack) -> None:
    await add_user(stack)
    bob = stack.crm.add_person(
        "bob@fabrikam.example", name="Bob Buyer", owner=ANN, givenName="Bob", surname="Buyer"
    )
    eve = stack.crm.add_person(
        "eve@northwind.example", name="Eve Early", owner=ANN, givenName="Eve", surname="Early"
    )
    await sync(stack)
    outlook = by_email(outlook_contacts(stack))

    edit_outlook(
        stack,
        outlook["bob@fabrikam.example"]["id"],
        jobTitle="Head of Buying",
        businessPhones=["+1 555 0100"],
    )
    stack.crm.update_person(
        eve, mobilePhone="+44 7700 900123", businessAddress={"city": "Leeds", "country": "UK"}
    )
    assert await sync(stack) == "done"

    crm = {p["id"]: p for p in stack.crm.contacts(ANN)}
    assert crm[bob]["jobTitle"] == "Head of Buying" and crm[bob]["businessPhones"] == ["+1 555 0100"]
    outlook = by_email(outlook_contacts(stack))
    assert outlook["eve@northwind.example"]["mobilePhone"] == "+44 7700 900123"
    assert outlook["eve@northwind.example"]["businessAddress"]["city"] == "Leeds"
    assert outlook["eve@northwind.example"]["displayName"] == "Eve Early"

    before = writes(stack)
    assert await sync(stack) == "done"
    assert writes(stack) == before


@pytest.mark.parametrize("rule", ["crm-wins", "outlook-wins"])
async def test_edits_on_both_sides_merge_by_field_and_the_conflict_is_recorded(
    stack: Stack, rule: str
) -> None:
    await add_user(stack, ContactsConflictRule=rule)
    bob = stack.crm.add_person(
        "bob@fabrikam.example",
        name="Bob Buyer",
        owner=ANN,
        givenName="Bob",
        surname="Buyer",
        jobTitle="Buyer",
    )
    await sync(stack)
    outlook_id = by_email(outlook_contacts(stack))["bob@fabrikam.example"]["id"]

    edit_outlook(stack, outlook_id, jobTitle="Outlook Title", department="Purchasing")
    stack.crm.update_person(bob, jobTitle="CRM Title", mobilePhone="+1 555 0199")
    assert await sync(stack) == "done"

    title = "CRM Title" if rule == "crm-wins" else "Outlook Title"
    crm = {p["id"]: p for p in stack.crm.contacts(ANN)}[bob]
    outlook = by_email(outlook_contacts(stack))["bob@fabrikam.example"]
    for side in (
        {"title": crm["jobTitle"], "dept": crm["department"], "mobile": crm["mobilePhone"]},
        {"title": outlook["jobTitle"], "dept": outlook["department"], "mobile": outlook["mobilePhone"]},
    ):
        assert side == {"title": title, "dept": "Purchasing", "mobile": "+1 555 0199"}  # fmt: skip
    columns = await user_columns(stack)
    assert columns["ContactsConflicts"] == 1
    assert "jobTitle" in columns["LastContactsConflict"] and rule in columns["LastContactsConflict"]

    before = writes(stack)
    assert await sync(stack) == "done"
    assert writes(stack) == before


async def test_deleted_in_outlook_is_unlinked_and_kept_in_the_crm_and_not_pushed_back(stack: Stack) -> None:
    await add_user(stack)
    bob = stack.crm.add_person("bob@fabrikam.example", name="Bob Buyer", owner=ANN)
    await sync(stack)
    outlook(
        stack,
        "DELETE",
        f"/users/{ANN}/contacts/{by_email(outlook_contacts(stack))['bob@fabrikam.example']['id']}",
    )
    assert await sync(stack) == "done"
    assert [p["id"] for p in stack.crm.contacts(ANN)] == [bob]

    stack.crm.update_person(bob, jobTitle="Still a buyer")
    assert await sync(stack) == "done"
    assert outlook_contacts(stack) == []


async def test_deleted_in_outlook_deletes_in_the_crm_when_configured(stack: Stack) -> None:
    await add_user(stack, ContactsDeleteInCrm=True)
    stack.crm.add_person("bob@fabrikam.example", name="Bob Buyer", owner=ANN)
    await sync(stack)
    outlook(
        stack,
        "DELETE",
        f"/users/{ANN}/contacts/{by_email(outlook_contacts(stack))['bob@fabrikam.example']['id']}",
    )
    assert await sync(stack) == "done"
    assert stack.crm.contacts(ANN) == []


async def test_deleted_or_unassigned_in_the_crm_is_removed_from_the_owned_folder_only(stack: Stack) -> None:
    await add_user(stack)
    bob = stack.crm.add_person("bob@fabrikam.example", name="Bob Buyer", owner=ANN)
    eve = stack.crm.add_person("eve@northwind.example", name="Eve Early", owner=ANN)
    stack.crm.add_person("kim@keep.example", name="Kim Keep", owner=ANN)
    mine = outlook(stack, "POST", f"/users/{ANN}/contacts", {"displayName": "Private", "emailAddresses": []})
    await sync(stack)
    assert len(outlook_contacts(stack)) == 3

    stack.crm.delete_person(bob)
    stack.crm.update_person(eve, owner="dan@contoso.com")
    assert await sync(stack) == "done"
    assert set(by_email(outlook_contacts(stack))) == {"kim@keep.example"}
    assert outlook(stack, "GET", f"/users/{ANN}/contacts/{mine['id']}")["displayName"] == "Private"


async def test_the_brake_holds_a_mass_delete_until_approved(stack: Stack) -> None:
    await add_user(stack, ContactsChangeThreshold=3)
    people = [stack.crm.add_person(f"p{n}@fabrikam.example", name=f"Person {n}", owner=ANN) for n in range(6)]
    assert await sync(stack) == "done"  # six creations: not changes to existing contacts
    assert len(outlook_contacts(stack)) == 6

    for person in people[:4]:
        stack.crm.delete_person(person)
    before = writes(stack)
    assert await sync(stack) == "review"
    assert len(outlook_contacts(stack)) == 6 and writes(stack) == before  # nothing applied
    columns = await user_columns(stack)
    assert columns["State"] == "review" and "ContactsChangeThreshold" in columns["LastError"]
    assert await sync(stack) == "review"  # still held on the next sweep

    message = await admin.approve(stack.services.state, stack.services.queue, ANN)
    assert "approved 4" in message
    assert await sync(stack) == "done"
    assert set(by_email(outlook_contacts(stack))) == {"p4@fabrikam.example", "p5@fabrikam.example"}
    assert (await user_columns(stack))["State"] == "ok"


async def test_the_brake_trips_at_the_threshold_not_below(stack: Stack) -> None:
    await add_user(stack, ContactsChangeThreshold=3)
    people = [stack.crm.add_person(f"p{n}@fabrikam.example", name=f"Person {n}", owner=ANN) for n in range(4)]
    await sync(stack)
    for person in people[:3]:
        stack.crm.update_person(person, jobTitle="Changed")
    assert await sync(stack) == "done"  # exactly the threshold: applied
    for person in people:
        stack.crm.update_person(person, jobTitle="Changed again")
    assert await sync(stack) == "review"  # one more than the threshold: held


async def test_a_contact_reused_for_another_person_becomes_a_new_crm_contact(stack: Stack) -> None:
    await add_user(stack)
    joe = stack.crm.add_person(
        "joe.smith@xyz.example", name="Joe Smith", owner=ANN, givenName="Joe", surname="Smith", company="XYZ"
    )
    await sync(stack)
    outlook_id = by_email(outlook_contacts(stack))["joe.smith@xyz.example"]["id"]

    edit_outlook(
        stack,
        outlook_id,
        givenName="Jane",
        surname="Rogers",
        displayName="Jane Rogers",
        emailAddresses=[{"address": "jane.rogers@xyz.example", "name": "Jane Rogers"}],
    )
    assert await sync(stack) == "done"

    crm = crm_contacts(stack)
    assert set(crm) == {"joe.smith@xyz.example", "jane.rogers@xyz.example"}
    assert (
        crm["joe.smith@xyz.example"]["id"] == joe
        and crm["joe.smith@xyz.example"]["displayName"] == "Joe Smith"
    )
    assert crm["jane.rogers@xyz.example"]["company"] == "XYZ"
    assert [c["id"] for c in outlook_contacts(stack)] == [outlook_id]

    edit_outlook(stack, outlook_id, jobTitle="CFO")  # the Outlook contact now follows Jane
    stack.crm.update_person(joe, jobTitle="Retired")  # and Joe is not pushed back into Outlook
    assert await sync(stack) == "done"
    crm = crm_contacts(stack)
    assert (
        crm["jane.rogers@xyz.example"]["jobTitle"] == "CFO"
        and crm["joe.smith@xyz.example"]["jobTitle"] == "Retired"
    )
    assert len(outlook_contacts(stack)) == 1


async def test_a_crm_contact_with_more_than_three_addresses_syncs_three_and_records_the_rest(
    stack: Stack,
) -> None:
    await add_user(stack)
    emails = [f"max{n}@many.example" for n in range(5)]
    phones = ["+1 555 0001", "+1 555 0002", "+1 555 0003"]
    person = stack.crm.add_person(emails, name="Max Many", owner=ANN, businessPhones=phones)
    assert await sync(stack) == "done"

    [contact] = outlook_contacts(stack)
    assert [a["address"] for a in contact["emailAddresses"]] == emails[:3]
    assert contact["businessPhones"] == phones[:2]
    issues = await stack.services.state.list_issues(ANN, "contacts")
    assert [i.item_key for i in issues] == [f"contact:{person}"]
    assert "5 e-mail addresses" in issues[0].reason and "3 business phones" in issues[0].reason

    edit_outlook(stack, contact["id"], jobTitle="Collector")  # a write back keeps what Outlook cannot hold
    assert await sync(stack) == "done"
    [stored] = stack.crm.contacts(ANN)
    assert (
        stored["emails"] == emails
        and stored["businessPhones"] == phones
        and stored["jobTitle"] == "Collector"
    )


async def test_directions_and_notes(stack: Stack) -> None:
    await add_user(stack, ContactsDirection="crm-to-outlook", ContactsNotes=True)
    bob = stack.crm.add_person("bob@fabrikam.example", name="Bob Buyer", owner=ANN, notes="Met at the fair")
    await sync(stack)
    contact = by_email(outlook_contacts(stack))["bob@fabrikam.example"]
    assert contact["personalNotes"] == "Met at the fair"
    edit_outlook(stack, contact["id"], jobTitle="Outlook only")
    folder = folder_id(stack)
    add_outlook_contact(stack, folder, "new@outlook.example", displayName="New In Outlook")
    assert await sync(stack) == "done"
    assert [p["id"] for p in stack.crm.contacts(ANN)] == [bob]
    assert stack.crm.contacts(ANN)[0]["jobTitle"] == ""


async def test_a_deleted_owned_folder_is_recreated_and_filled_again(stack: Stack) -> None:
    await add_user(stack)
    people = [stack.crm.add_person(f"p{n}@fabrikam.example", name=f"Person {n}", owner=ANN) for n in range(3)]
    await sync(stack)
    outlook(stack, "DELETE", f"/users/{ANN}/contactFolders/{folder_id(stack)}")
    assert await sync(stack) == "done"
    assert set(by_email(outlook_contacts(stack))) == {f"p{n}@fabrikam.example" for n in range(3)}
    assert sorted(p["id"] for p in stack.crm.contacts(ANN)) == sorted(people)
    cursor = await stack.services.state.get_cursor(ANN, "contacts")
    assert cursor.contacts.folder_id == folder_id(stack)  # what the subscription timer subscribes to


async def test_a_crm_without_a_change_feed_is_diffed_against_the_links(stack: Stack) -> None:
    """A connector that can only list every contact (snapshot): changes by fingerprint, deletes by absence."""
    crm = InMemoryCrm(Capabilities(contact_change_feed=False))
    state = InMemoryStateStore()
    settings = settings_for(stack.azurite, stack.graph, stack.crm)
    stream = ContactsStream(state, crm, GraphContacts(build_graph_client(settings), GraphCaller()))
    engine = Engine(state, InMemoryJobQueue(), {"contacts": stream})
    stack.graph.control.add_user(ANN)
    await state.put_config(ANN, {"Enabled": True, "Mail": False, "Contacts": True})
    bob = crm.add_person("bob@fabrikam.example", name="Bob Buyer", owner=ANN)
    eve = crm.add_person("eve@northwind.example", name="Eve Early", owner=ANN)
    assert (await engine.run_job(Job(ANN, "contacts"))).status == "done"
    assert set(by_email(outlook_contacts(stack))) == {"bob@fabrikam.example", "eve@northwind.example"}

    crm.update_person(bob, job_title="Buyer")
    crm.delete_person(eve)
    before = writes(stack)
    assert (await engine.run_job(Job(ANN, "contacts"))).status == "done"
    contacts = by_email(outlook_contacts(stack))
    assert (
        set(contacts) == {"bob@fabrikam.example"} and contacts["bob@fabrikam.example"]["jobTitle"] == "Buyer"
    )
    assert writes(stack)[1] == before[1] + 2  # one update, one delete

    before = writes(stack)
    assert (await engine.run_job(Job(ANN, "contacts"))).status == "done"
    assert writes(stack) == before and set(crm.contacts) == {bob}


async def test_after_a_lost_delta_token_a_whole_round_finds_the_gap_and_duplicates_nothing(
    stack: Stack,
) -> None:
    await add_user(stack)
    bob = stack.crm.add_person("bob@fabrikam.example", name="Bob Buyer", owner=ANN)
    eve = stack.crm.add_person("eve@northwind.example", name="Eve Early", owner=ANN)
    await sync(stack)
    contacts = by_email(outlook_contacts(stack))
    outlook(stack, "DELETE", f"/users/{ANN}/contacts/{contacts['bob@fabrikam.example']['id']}")
    edit_outlook(stack, contacts["eve@northwind.example"]["id"], jobTitle="Edited in the gap")
    assert stack.graph.control.expire_delta_tokens(ANN) >= 1

    [outcome] = await stack.sync(ANN)
    assert outcome.status == "done" and outcome.stats["fresh_rounds"] == 1  # 410, then a whole round
    crm = {p["id"]: p for p in stack.crm.contacts(ANN)}
    assert set(crm) == {bob, eve} and crm[eve]["jobTitle"] == "Edited in the gap"  # Bob unlinked, kept
    assert set(by_email(outlook_contacts(stack))) == {"eve@northwind.example"}
    stack.crm.update_person(bob, jobTitle="Not pushed back")
    before = writes(stack)
    assert await sync(stack) == "done"
    assert writes(stack) == before


async def test_another_contacts_folder_configured_is_filled_from_the_start(stack: Stack) -> None:
    await add_user(stack)
    stack.crm.add_person("bob@fabrikam.example", name="Bob Buyer", owner=ANN)
    await sync(stack)
    await stack.services.state.put_config(ANN, {"ContactsFolder": "Clients"})
    assert await sync(stack) == "done"
    assert set(by_email(outlook_contacts(stack))) == {"bob@fabrikam.example"}  # the old folder
    moved = outlook(stack, "GET", f"/users/{ANN}/contactFolders/{folder_id(stack, name='Clients')}/contacts")
    assert [c["displayName"] for c in moved["value"]] == ["Bob Buyer"]
    assert len(stack.crm.contacts(ANN)) == 1
