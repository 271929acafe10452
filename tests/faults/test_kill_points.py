"""The kill-point matrix on the real stack: a worker *process* (`worker_main.py`) SIGKILLs itself at a
named checkpoint, a new process re-runs the job after the dead one's lease expired, and the CRM, the
Outlook side, the link rows and the cursor end as a fault-free run's. Every mailbox gets the same data
(keys and addresses made unique per mailbox), one mailbox per kill point, so the killed runs go side by
side (`tests/faults/killing.py`). Mail; contacts both ways over two syncs; calendar with a series,
cancellations and the push from the CRM over two syncs."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from emulators.azurite import AzuriteStack
from emulators.crm.launcher import ReferenceCrm
from emulators.graph.launcher import GraphEmulator
from shared.model import Job
from shared.state.tables import TableStateStore
from tests.faults.killing import Matrix, Outlook, differences, untag
from tests.integration.stack import TENANT_DOMAIN, comparable

pytestmark = pytest.mark.integration
MESSAGES = 12
PAGE_SIZE = 5  # three pages
KILL_POINTS = [
    "graph.read_page:1:after",  # after a Graph page
    "crm.upsert_journals:2:after",  # after a page's CRM write (applied, the answer never used)
    "state.put_keys:2:after",  # after a page's key rows were written
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
    users = [f"clean@{TENANT_DOMAIN}"] + [f"kill{n}@{TENANT_DOMAIN}" for n in range(len(KILL_POINTS))]
    matrix = await Matrix.open(azurite_stack, graph, crm_server, users, page_size=PAGE_SIZE)
    start = datetime.now(UTC).replace(microsecond=0)  # the same times in every mailbox
    crm_server.add_person("bob@fabrikam.example", name="Bob", owner=users[0])
    try:
        for user in users:
            graph.control.add_user(user)
            await matrix.state.put_config(user, {"Enabled": True, "MailFolders": "inbox"})
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
        matrix.phase([Job("", "mail:inbox", "sweep")], KILL_POINTS)

        clean = normalised(crm_server.journals(owner=users[0]), users[0])
        assert len(clean) == MESSAGES
        clean_cursor = await matrix.state.get_cursor(users[0], "mail:inbox")
        for user, point in zip(users[1:], KILL_POINTS, strict=True):
            assert normalised(crm_server.journals(owner=user), user) == clean, point
            cursor = await matrix.state.get_cursor(user, "mail:inbox")
            assert (cursor.link_kind, bool(cursor.link)) == (clean_cursor.link_kind, True) == ("delta", True)
    finally:
        await matrix.close()


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
            person is not None and link.contact.crm_version == str(person["seq"]),
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
        "cursor": (cursor.link_kind, bool(cursor.link), bool(cursor.crm_cursor),
                   next(iter(folder.values()), {}).get("parentFolderId") == cursor.contacts.folder_id),
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
            wrong = [f"sync {phase + 1} killed at {point}:\n{differences(end, ends[0])}"
                     for point, end in zip(kills, ends[1:], strict=True) if end != ends[0]]  # fmt: skip
            assert not wrong, "\n".join(wrong)
        clean = ends[0]
        outlook_side = {c[0][0].split("-")[0]: c for c in clean["outlook"]}
        assert sorted(outlook_side) == ["late", "o1", "p0", "p1", "p2"]
        assert outlook_side["p1"][5:7] == ("Sales", "+1 555 0101")  # merged from both sides
        assert (outlook_side["p0"][4], outlook_side["p2"][4]) == ("Buyer", "Manager")
        # o0, deleted in Outlook, is unlinked and kept in the CRM; p3, deleted in the CRM, left Outlook
        assert sorted(c[0][0].split("-")[0] for c in clean["crm"]) == ["late", "o0", "o1", "p0", "p1", "p2"]
        assert len(clean["links"]) == 5 and all(all(link[2:]) for link in clean["links"])
        assert clean["dropped"] == ["o0-USER@northwind.example"]
        assert clean["cursor"] == ("delta", True, True, True)
    finally:
        outlook.close()
        await matrix.close()


# -- calendar, with a series, cancellations and the push from the CRM ------------------------------

BOB = "bob@fabrikam.example"
TODAY = datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)
CALENDAR_KILLS = [  # (in the first sync, in the second); the second cancels, deletes, moves and edits
    ("graph.read_page:2:after", "crm.cancel_appointment:1:after"),  # after a page / a cancellation
    ("crm.upsert_appointment:2:after", "crm.cancel_appointment:3:after"),  # a CRM write, answer lost
    ("state.put_links:1:after", "graph.get_event:2:after"),  # after a link write / a removal confirmed
    ("state.save_cursor:1:before", "state.delete_link:1:before"),  # before a cursor save / an unlink
    ("graph.instances:1:after", "state.save_cursor:1:before"),  # the series checked against its instances
    ("graph.create_event:1:after", "graph.update_event:1:after"),  # the push wrote Outlook, no link row
    ("queue.delete:1:before", "crm.upsert_appointment:1:after"),
]


def _at(days: int, hour: int) -> dict[str, str]:
    return {"dateTime": (TODAY + timedelta(days=days, hours=hour)).strftime("%Y-%m-%dT%H:%M:%S"),
            "timeZone": "UTC"}  # fmt: skip


def calendar_seed(outlook: Outlook, crm: ReferenceCrm, user: str) -> str:
    """Four meetings with Bob, a weekly series of three, and a CRM appointment to push; returns its id."""
    bob = [{"emailAddress": {"address": BOB}, "type": "required"}]
    for n in range(4):
        meeting = {"subject": f"Meeting {n}", "start": _at(n + 1, 9), "end": _at(n + 1, 10), "attendees": bob}
        outlook("POST", f"/users/{user}/events", meeting)
    outlook("POST", f"/users/{user}/events",
            {"subject": "Weekly", "start": _at(1, 14), "end": _at(1, 15), "attendees": bob,
             "recurrence": {"pattern": {"type": "daily", "interval": 7},
                            "range": {"type": "numbered", "numberOfOccurrences": 3}}})  # fmt: skip
    return crm.create_appointment(owner=user, subject="Visit", start=TODAY + timedelta(days=2, hours=8),
                                  end=TODAY + timedelta(days=2, hours=9))  # fmt: skip


def calendar_view(outlook: Outlook, user: str) -> list[dict[str, Any]]:
    start, end = (f"{TODAY + timedelta(days=d):%Y-%m-%dT%H:%M:%SZ}" for d in (-7, 60))
    path = f"/users/{user}/calendarView?startDateTime={start}&endDateTime={end}&$top=200"
    return list(outlook("GET", path)["value"])


def calendar_edit(outlook: Outlook, graph: GraphEmulator, crm: ReferenceCrm, user: str, visit: str) -> None:
    """Between the syncs: an organizer cancels a meeting, one is deleted, one moved, one occurrence of
    the series deleted (Graph's delta says nothing of it), and the pushed appointment edited in the CRM."""
    events = {e["subject"]: e for e in outlook("GET", f"/users/{user}/events?$top=100")["value"]}
    graph.control.organizer_cancel(user, events["Meeting 0"]["id"])
    outlook("DELETE", f"/users/{user}/events/{events['Meeting 1']['id']}")
    outlook("PATCH", f"/users/{user}/events/{events['Meeting 2']['id']}",
            {"subject": "Meeting 2 (moved)", "start": _at(6, 9), "end": _at(6, 10)})  # fmt: skip
    day = f"{TODAY + timedelta(days=8):%Y-%m-%d}"
    view = calendar_view(outlook, user)
    second = next(e for e in view if e["subject"] == "Weekly" and e["start"]["dateTime"].startswith(day))
    outlook("DELETE", f"/users/{user}/events/{second['id']}")
    crm.update_appointment(visit, location="HQ")


async def calendar_end(
    outlook: Outlook, crm: ReferenceCrm, state: TableStateStore, user: str
) -> dict[str, Any]:
    """The user's CRM appointments, calendar, link rows (both kinds), key records and cursor, compared by
    subject and start (ids and keys differ per mailbox)."""
    drop = {"id", "seq", "createdAt", "updatedAt", "version", "key", "seriesKey"}
    appointments = crm.appointments(owner=user)
    label = {a["key"] or a["id"]: f"{a['subject']}@{a['start']}" for a in appointments}
    label |= {a["id"]: f"{a['subject']}@{a['start']}" for a in appointments}
    masters = outlook("GET", f"/users/{user}/events?$top=100")["value"]
    events = {e["id"]: e for e in [*masters, *calendar_view(outlook, user)]}
    label |= {e["iCalUId"]: f"series {e['subject']}" for e in masters if e.get("type") == "seriesMaster"}
    links = [
        (link.event.master, label.get(link.crm_key or link.event.crm_id, "MISSING"),
         str(link.event.start or ""), str(link.event.end or ""), bool(link.event.series),
         link.event.from_crm,
         link.item_id in events and link.change_key == events[link.item_id]["changeKey"])
        for link in await state.list_links(user, "calendar")
    ]  # fmt: skip
    pushed = [
        (label.get(link.item_id, "MISSING"), link.crm_fingerprint, link.push.cancelled,
         link.push.event_id in events)
        for link in await state.list_links(user, "calendar:push")
    ]  # fmt: skip
    keys = []
    for a in appointments:
        record = await state.get_key(a["key"]) if a["key"] else None
        if record is not None:
            keys.append((label[a["key"]], record.mailboxes, record.cancelled,
                         record.crm_ref == a["id"]))  # fmt: skip
    crm_by_label: dict[str, list[dict[str, Any]]] = {}  # a list: a duplicate must show
    for a in appointments:
        kept = {f: v for f, v in a.items() if f not in drop}
        kept["people"] = sorted(p.get("email", "") for p in a.get("people", []))
        crm_by_label.setdefault(label[a["id"]], []).append(kept)
    cursor = await state.get_cursor(user, "calendar")
    push = await state.get_cursor(user, "push")
    return untag({
        "crm": crm_by_label,
        "outlook": sorted((e["subject"], e["start"]["dateTime"], bool(e.get("isCancelled")),
                           len(e.get("attendees", []))) for e in calendar_view(outlook, user)),
        "links": sorted(links), "pushed": sorted(pushed), "keys": sorted(keys),
        "cursor": (cursor.link_kind, bool(cursor.link), bool(push.crm_cursor),
                   cursor.calendar.reconciled_round == cursor.calendar.round_id),
    }, user)  # fmt: skip


async def test_a_calendar_worker_killed_at_each_checkpoint_ends_as_a_clean_run(
    azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm
) -> None:
    graph.control.reset(empty=True)
    crm_server.reset()
    users = [f"calendar-kill-{n}@{TENANT_DOMAIN}" for n in range(len(CALENDAR_KILLS) + 1)]
    matrix = await Matrix.open(azurite_stack, graph, crm_server, users, page_size=3)
    outlook = Outlook(graph)
    crm_server.add_person(BOB, name="Bob", owner=users[0])
    try:
        visits = {}
        for user in users:
            graph.control.add_user(user)
            config = {"Enabled": True, "Mail": False, "Calendar": True, "CalendarPushFromCrm": True}
            await matrix.state.put_config(user, config)
            visits[user] = calendar_seed(outlook, crm_server, user)
        ends: list[dict[str, Any]] = []
        for phase, kills in enumerate(zip(*CALENDAR_KILLS, strict=True)):
            if phase == 1:
                for user in users:
                    calendar_edit(outlook, graph, crm_server, user, visits[user])
            # the second sync runs two hours later: the series check (at most hourly) is due
            matrix.phase([Job("", "calendar"), Job("", "push")], kills, offset=7200.0 * phase)
            ends = [await calendar_end(outlook, crm_server, matrix.state, user) for user in users]
            wrong = [f"sync {phase + 1} killed at {point}:\n{differences(end, ends[0])}"
                     for point, end in zip(kills, ends[1:], strict=True) if end != ends[0]]  # fmt: skip
            assert not wrong, "\n".join(wrong)
        clean = ends[0]
        crm = {label: records[0] for label, records in clean["crm"].items() if len(records) == 1}
        assert len(crm) == len(clean["crm"]) == 4 + 3 + 1  # meetings, occurrences, the CRM's visit: once each
        cancelled = sorted(label.split("@")[0] for label, a in crm.items() if a["cancelled"])
        assert cancelled == ["Meeting 0", "Meeting 1", "Weekly"], crm
        assert [a["location"] for label, a in crm.items() if label.startswith("Visit@")] == ["HQ"]
        assert len(clean["pushed"]) == 1 and clean["pushed"][0][3]  # the visit's event is in the calendar
        assert all(link[6] for link in clean["links"]), clean["links"]  # every row knows the current event
        assert clean["cursor"] == ("delta", True, True, True)
    finally:
        outlook.close()
        await matrix.close()
