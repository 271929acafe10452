"""The kill-point matrix on the real stack: a worker *process* (`worker_main.py`) SIGKILLs itself at a
named checkpoint, a new process re-runs the job after the dead one's lease expired, and the CRM and the
cursor end as a fault-free run's. Every mailbox gets the same mail (keys made unique per mailbox), one
run per mailbox, so the killed runs go side by side."""

from __future__ import annotations

import base64
import secrets
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from emulators.azurite import AzuriteStack
from emulators.crm.launcher import ReferenceCrm
from emulators.graph.launcher import GraphEmulator
from shared.model import Job
from shared.state.tables import TableStateStore
from tests.faults.killing import Matrix, Outlook, env_for, spawn, untag
from tests.integration.stack import TENANT_DOMAIN, comparable, unique_prefix

pytestmark = pytest.mark.integration
MESSAGES = 12
PAGE_SIZE = 5  # three pages
KILL_POINTS = [
    "graph.read_page:1:after",  # after a Graph page
    "crm.upsert_journal:3:after",  # after a CRM write (applied, the answer never used)
    "state.put_key:3:after",  # after a key (link) write
    "state.save_cursor:2:before",  # before the cursor save of the second page
    "queue.delete:1:before",  # the job is done, its queue message not yet deleted
]


def normalised(journals: list[dict[str, Any]], user: str) -> dict[str, Any]:
    tag = user.split("@")[0]
    out = {}
    for key, value in comparable({j["key"]: j for j in journals}).items():
        value = {**value, "key": key.replace(tag, "USER"), "owner": "", "seenBy": [], "to": []}
        out[key.replace(tag, "USER")] = value
    return out


async def test_a_worker_killed_at_each_checkpoint_ends_as_a_clean_run(
    azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm
) -> None:
    graph.control.reset(empty=True)
    crm_server.reset()
    prefix, queue_base = unique_prefix(), "kill" + secrets.token_hex(4)
    users = [f"clean@{TENANT_DOMAIN}"] + [f"kill{n}@{TENANT_DOMAIN}" for n in range(len(KILL_POINTS))]
    state = TableStateStore.from_connection_string(azurite_stack.connection_string, table_prefix=prefix)
    await state.ensure_tables()
    queues: dict[str, QueueClient] = {}
    start = datetime.now(UTC).replace(microsecond=0)  # the same times in every mailbox
    crm_server.add_person("bob@fabrikam.example", name="Bob", owner=users[0])
    try:
        for n, user in enumerate(users):
            graph.control.add_user(user)
            await state.put_config(user, {"Enabled": True, "MailFolders": "inbox"})
            tag = user.split("@")[0]
            for m in range(MESSAGES):
                graph.control.deliver(
                    user,
                    {"from": {"address": "bob@fabrikam.example"}, "to": [{"address": user}],
                     "subject": f"Order {m}", "internetMessageId": f"<order-{m}-{tag}@fabrikam.example>",
                     "bodyHtml": f"<p>Order {m}</p>", "conversationId": f"conv-{m}",
                     "receivedDateTime": (start - timedelta(minutes=m)).isoformat(),
                     "sentDateTime": (start - timedelta(minutes=m, seconds=5)).isoformat()},
                )  # fmt: skip
            queue = QueueClient.from_connection_string(azurite_stack.connection_string, f"{queue_base}-{n}")
            queue.create_queue()
            queue.send_message(base64.b64encode(Job(user, "mail:inbox", "sweep").to_json().encode()).decode())
            queues[user] = queue

        base = env_for(azurite_stack, graph, crm_server, TABLE_PREFIX=prefix, PAGE_SIZE=str(PAGE_SIZE))
        first = {
            user: spawn({**base, "JOB_QUEUE": f"{queue_base}-{n}", "KILL_AT": ([""] + KILL_POINTS)[n]})
            for n, user in enumerate(users)
        }
        codes = {user: process.wait(timeout=240) for user, process in first.items()}
        assert codes[users[0]] == 0, first[users[0]].stderr.read() if first[users[0]].stderr else ""
        assert all(codes[u] == -signal.SIGKILL for u in users[1:]), codes  # every kill point was reached

        again = {
            user: spawn({**base, "JOB_QUEUE": f"{queue_base}-{n}", "CLOCK_OFFSET_SECONDS": "600"})
            for n, user in enumerate(users)
            if n > 0
        }
        for process in again.values():
            assert process.wait(timeout=240) == 0, process.stderr.read() if process.stderr else ""

        clean = normalised(crm_server.journals(owner=users[0]), users[0])
        assert len(clean) == MESSAGES
        clean_cursor = await state.get_cursor(users[0], "mail:inbox")
        for user, point in zip(users[1:], KILL_POINTS, strict=True):
            assert normalised(crm_server.journals(owner=user), user) == clean, point
            cursor = await state.get_cursor(user, "mail:inbox")
            assert (cursor.link_kind, bool(cursor.link)) == (clean_cursor.link_kind, True) == ("delta", True)
            assert queues[user].peek_messages(max_messages=5) == [], point  # the job is gone once done
    finally:
        for queue in queues.values():
            queue.delete_queue()
            queue.close()
        await state.aclose()


# -- contacts, both ways ---------------------------------------------------------------------------

CONTACT_KILLS = [  # (in the first sync, in the second); the first sync links, the second edits both sides
    ("graph.read_page:1:after", "graph.update:1:after"),  # after a Graph page / an Outlook update
    ("crm.upsert_contact:2:after", "crm.upsert_contact:1:after"),  # a CRM write applied, answer lost
    ("graph.create:2:after", "graph.delete:1:after"),  # Outlook written, the link row not
    ("state.put_links:3:after", "state.delete_link:1:before"),  # after a link write / before unlinking
    ("state.save_cursor:2:before", "state.save_cursor:1:before"),  # every effect applied, no cursor
    ("queue.delete:1:before", "graph.create:1:after"),  # the job done, its message not deleted
]


def contacts_seed(outlook: Outlook, crm: ReferenceCrm, user: str) -> None:
    """CRM contacts p0..p3 of the user, Outlook-only o0 and o1, and p0 on both sides already."""
    tag = user.split("@")[0]
    folder = outlook("POST", f"/users/{user}/contactFolders", {"displayName": "CRM Contacts"})["id"]
    crm.add_people(
        [{"kind": "contact", "owner": user, "displayName": f"Person {n}", "givenName": "Person",
          "surname": str(n), "emails": [f"p{n}-{tag}@fabrikam.example"]} for n in range(4)]
    )  # fmt: skip
    made = [(f"Outlook {n}", f"o{n}-{tag}@northwind.example", {}) for n in range(2)]
    made.append(("Person 0", f"P0-{tag}@fabrikam.example", {"jobTitle": "Buyer", "surname": "0"}))
    for name, address, more in made:
        contact = {"displayName": name, "emailAddresses": [{"address": address}], **more}
        outlook("POST", f"/users/{user}/contactFolders/{folder}/contacts", contact)


def contacts_folder(outlook: Outlook, user: str) -> list[dict[str, Any]]:
    folders = outlook("GET", f"/users/{user}/contactFolders?$top=100")["value"]
    folder = next(f["id"] for f in folders if f["displayName"] == "CRM Contacts")
    return list(outlook("GET", f"/users/{user}/contactFolders/{folder}/contacts?$top=500")["value"])


def contacts_edit(outlook: Outlook, crm: ReferenceCrm, user: str) -> None:
    """Both sides change between the syncs: an Outlook edit and delete, CRM edits, a delete, an add."""
    tag = user.split("@")[0]
    mine = {c["emailAddresses"][0]["address"].lower(): c["id"] for c in contacts_folder(outlook, user)}
    people = {p["emails"][0].lower(): p["id"] for p in crm.contacts(user)}
    outlook("PATCH", f"/users/{user}/contacts/{mine[f'p1-{tag}@fabrikam.example']}", {"department": "Sales"})
    outlook("DELETE", f"/users/{user}/contacts/{mine[f'o0-{tag}@northwind.example']}")
    crm.update_person(people[f"p2-{tag}@fabrikam.example"], jobTitle="Manager")
    crm.update_person(people[f"p1-{tag}@fabrikam.example"], mobilePhone="+1 555 0101")
    crm.delete_person(people[f"p3-{tag}@fabrikam.example"])
    crm.add_person(f"late-{tag}@fabrikam.example", name="Late Comer", owner=user)


async def contacts_end(
    outlook: Outlook, crm: ReferenceCrm, state: TableStateStore, user: str
) -> dict[str, Any]:
    """Both sides, the link rows (which contact is linked to which, and whether the row knows each
    side's current version) and the cursor, with the user's own name taken out."""
    fields = ("displayName", "givenName", "surname", "jobTitle", "department", "mobilePhone")
    folder = {c["id"]: c for c in contacts_folder(outlook, user)}
    people = {p["id"]: p for p in crm.contacts(user)}

    def address(record: dict[str, Any] | None, emails: list[str]) -> str:
        return emails[0].lower() if record is not None and emails else "MISSING"

    links = []
    for link in await state.list_links(user, "contacts"):
        contact, person = folder.get(link.item_id), people.get(link.crm_key)
        links.append((
            address(contact, [a["address"] for a in (contact or {}).get("emailAddresses", [])]),
            address(person, (person or {}).get("emails", [])),
            contact is not None and link.change_key == contact["changeKey"],
            person is not None and link.extra.get("crmVersion") == str(person["seq"]),
        ))  # fmt: skip
    dropped = [address(people.get(d.item_id), people.get(d.item_id, {}).get("emails", []))
               for d in await state.list_links(user, "contacts-dropped")]  # fmt: skip
    cursor = await state.get_cursor(user, "contacts")
    return untag({
        "outlook": sorted((sorted(a["address"].lower() for a in c["emailAddresses"]),
                           *(c.get(f) or "" for f in fields)) for c in folder.values()),
        "crm": sorted((sorted(e.lower() for e in p["emails"]), *(p.get(f) or "" for f in fields))
                      for p in people.values()),
        "links": sorted(links), "dropped": sorted(dropped),
        "cursor": (cursor.link_kind, bool(cursor.link), bool(cursor.extra.get("crmCursor")),
                   next(iter(folder.values()), {}).get("parentFolderId") == cursor.extra.get("folderId")),
    }, user)  # fmt: skip


async def test_a_contacts_worker_killed_at_each_checkpoint_ends_as_a_clean_run(
    azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm
) -> None:
    graph.control.reset(empty=True)
    crm_server.reset()
    users = [f"contacts-kill-{n}@{TENANT_DOMAIN}" for n in range(len(CONTACT_KILLS) + 1)]
    matrix = await Matrix.open(azurite_stack, graph, crm_server, users, page_size=3)
    outlook = Outlook(graph)
    try:
        for user in users:
            graph.control.add_user(user)
            await matrix.state.put_config(user, {"Enabled": True, "Mail": False, "Contacts": True})
            contacts_seed(outlook, crm_server, user)
        ends: list[dict[str, Any]] = []
        for phase, kills in enumerate(zip(*CONTACT_KILLS, strict=True)):
            if phase == 1:
                for user in users:
                    contacts_edit(outlook, crm_server, user)
            matrix.phase([Job("", "contacts")], kills, offset=7200.0 * phase)
            ends = [await contacts_end(outlook, crm_server, matrix.state, user) for user in users]
            for point, end in zip(kills, ends[1:], strict=True):
                assert end == ends[0], f"sync {phase + 1} killed at {point}"
        clean = ends[0]
        assert (
            len(clean["outlook"]) == 5 and len(clean["crm"]) == 6
        )  # o0 unlinked in Outlook, kept in the CRM
        assert len(clean["links"]) == 5 and all(all(link[2:]) for link in clean["links"])
        assert clean["dropped"] == ["o0-USER@northwind.example"]
        assert clean["cursor"] == ("delta", True, True, True)
    finally:
        outlook.close()
        await matrix.close()
