"""Seed files. `generate()` builds a realistic tenant deterministically from a seed: users, threads whose
replies quote earlier messages (HTML), internal and external correspondents, several recipients,
attachments, categories, private items, contacts, single and recurring meetings with exceptions and
cancellations, all-day events, To Do tasks. `load()` puts a seed into the store (also shared mailboxes,
their send rights and delegates, which `generate()` leaves out).

python -m emulators.graph.sample --users 3 --days 30 --per-day 10 --seed 1 --out tenant.json
"""

from __future__ import annotations

import argparse
import html
import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from emulators.graph import calendar, contacts, mail, mailbox, todo
from emulators.graph.store import Tenant

FIRST = [
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "Edsger",
    "Radia",
    "Tim",
    "Hedy",
    "Donald",
    "Sophie",
    "Niklaus",
]
LAST = [
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Lee",
    "Lamarr",
    "Knuth",
    "Wilson",
    "Wirth",
]
COMPANIES = [
    ("Fabrikam", "fabrikam.example"),
    ("Northwind Traders", "northwind.example"),
    ("Tailspin Toys", "tailspin.example"),
    ("Woodgrove Bank", "woodgrove.example"),
    ("Litware", "litware.example"),
    ("Adventure Works", "adventure-works.example"),
]
TOPICS = [
    "Quarterly review",
    "Contract renewal",
    "Invoice {n}",
    "Project Phoenix kickoff",
    "Pricing question",
    "Onboarding schedule",
    "Support ticket #{n}",
    "Partnership proposal",
    "Budget {n} draft",
    "Site visit",
]
SENTENCES = [
    "Thanks for the quick turnaround on this.",
    "Could you send me the latest figures before Friday?",
    "I have attached the document we discussed.",
    "Let's find a slot next week to go through the open points.",
    "The team agreed with the proposal, with two small changes.",
    "Please find the signed copy enclosed.",
    "We are still waiting for confirmation from finance.",
    "Happy to help, let me know if anything is unclear.",
]
CATEGORIES = ["Blue category", "Red category", "Customer", "Follow up"]
ATTACHMENTS = [
    ("proposal.pdf", 182_331),
    ("figures.xlsx", 48_102),
    ("photo.jpg", 1_203_441),
    ("notes.docx", 22_410),
]


def _person(rng: random.Random, domain: str) -> tuple[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return f"{first} {last}", f"{first}.{last}@{domain}".lower()


def _addr(pair: tuple[str, str]) -> dict[str, Any]:
    return {"emailAddress": {"name": pair[0], "address": pair[1]}}


def _body(rng: random.Random, greeting: str, signer: str) -> str:
    paras = "".join(f"<p>{html.escape(rng.choice(SENTENCES))}</p>" for _ in range(rng.randint(1, 3)))
    return f"<p>Hi {html.escape(greeting)},</p>{paras}<p>Best regards,<br>{html.escape(signer)}</p>"


def _quote(
    own: str, prev_from: tuple[str, str], prev_sent: datetime, prev_subject: str, prev_body: str
) -> str:
    """An Outlook-style reply: own text, separator, header of the quoted message, quoted body."""
    header = (
        f'<div id="divRplyFwdMsg"><b>From:</b> {html.escape(prev_from[0])} &lt;{prev_from[1]}&gt;<br>'
        f"<b>Sent:</b> {prev_sent:%A, %B %d, %Y %H:%M}<br><b>Subject:</b> {html.escape(prev_subject)}</div>"
    )
    separator = '<div id="appendonsend"></div><hr style="display:inline-block;width:98%">'
    return f"<html><body>{own}{separator}{header}{prev_body}</body></html>"


def generate(
    users: int = 3,
    days: int = 30,
    per_day: int = 10,
    seed: int = 1,
    domain: str = "contoso.test",
    start: date = date(2026, 1, 5),
    contacts_per_user: int = 20,
    events_per_user: int = 12,
    tasks_per_user: int = 6,
) -> dict[str, Any]:
    rng = random.Random(seed)
    people: list[tuple[str, str]] = []
    used: set[str] = set()
    while len(people) < users:
        name, addr = _person(rng, domain)
        if addr not in used:
            used.add(addr)
            people.append((name, addr))
    out_users: list[dict[str, Any]] = [
        {
            "userPrincipalName": a,
            "displayName": n,
            "folders": [{"displayName": "Projects", "parent": "inbox"}],
            "messages": [],
            "contactFolders": [{"displayName": "CRM"}],
            "contacts": [],
            "events": [],
        }
        for n, a in people
    ]
    by_addr = {u["userPrincipalName"]: u for u in out_users}
    externals = [(_person(rng, d), c) for c, d in COMPANIES for _ in range(3)]
    counter = 0
    for ui, owner in enumerate(people):
        total = days * per_day
        made = 0
        while made < total:
            counter += 1
            topic = rng.choice(TOPICS).format(n=rng.randint(100, 999))
            internal = users > 1 and rng.random() < 0.25
            if internal:
                other = people[rng.choice([i for i in range(users) if i != ui])]
                partner: tuple[str, str] = other
            else:
                partner = rng.choice(externals)[0]
            conv = f"AAQkAGconv{seed}x{ui}x{counter}"
            length = min(rng.randint(1, 5), total - made)
            when = datetime.combine(start, datetime.min.time(), UTC) + timedelta(
                days=rng.randrange(days), hours=rng.randint(7, 18), minutes=rng.randrange(60)
            )
            prev: tuple[tuple[str, str], datetime, str, str] | None = None
            for k in range(length):
                incoming = k % 2 == 0
                sender, to = (partner, owner) if incoming else (owner, partner)
                subject = topic if k == 0 else f"RE: {topic}"
                own = _body(rng, to[0].split()[0], sender[0])
                body = f"<html><body>{own}</body></html>" if prev is None else _quote(own, *prev)
                cc = [rng.choice(externals)[0]] if rng.random() < 0.2 else []
                msg: dict[str, Any] = {
                    "from": _addr(sender),
                    "to": [_addr(to)],
                    "cc": [_addr(c) for c in cc],
                    "subject": subject,
                    "bodyHtml": body,
                    "receivedDateTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "internetMessageId": f"<{seed}.{ui}.{counter}.{k}@{sender[1].split('@')[1]}>",
                    "conversationId": conv,
                    "isRead": rng.random() < 0.7,
                }
                if rng.random() < 0.15:
                    name, size = rng.choice(ATTACHMENTS)
                    msg["attachments"] = [{"name": name, "size": size}]
                if rng.random() < 0.1:
                    msg["categories"] = [rng.choice(CATEGORIES)]
                if rng.random() < 0.05:
                    msg["sensitivity"] = rng.choice(["personal", "private", "confidential"])
                folder = "inbox" if incoming else "sentitems"
                if incoming and rng.random() < 0.1:
                    folder = "Projects"
                by_addr[owner[1]]["messages"].append({**msg, "folder": folder})
                if internal and made < total:  # the other side of an internal conversation
                    by_addr[partner[1]]["messages"].append(
                        {**msg, "folder": "sentitems" if incoming else "inbox"}
                    )
                prev = (
                    sender,
                    when,
                    subject,
                    body.removeprefix("<html><body>").removesuffix("</body></html>"),
                )
                when += timedelta(minutes=rng.randint(5, 600))
                made += 1
    for owner in people:
        u = by_addr[owner[1]]
        for i in range(contacts_per_user):
            (name, addr), company = rng.choice(externals)
            first, last = name.split()
            c: dict[str, Any] = {
                "folder": "CRM" if i % 2 else "contacts",
                "givenName": first,
                "surname": last,
                "displayName": f"{first} {last}",
                "companyName": company,
                "jobTitle": rng.choice(["Buyer", "CFO", "Engineer", "Account Manager", None]),
                "emailAddresses": [{"name": name, "address": addr}],
                "businessPhones": [f"+1 555 01{rng.randint(10, 99)}"],
            }
            if rng.random() < 0.3:
                c["mobilePhone"] = f"+1 555 02{rng.randint(10, 99)}"
            u["contacts"].append(c)
        u["events"] = _events(rng, owner, people, externals, start, days, events_per_user)
    task_rng = random.Random(
        seed * 7919 + 1
    )  # its own stream: the mail, contacts and events stay as they were
    for owner in people:
        by_addr[owner[1]]["todoLists"] = _tasks(task_rng, externals, start, days, tasks_per_user)
    return {"users": out_users}


def _tasks(rng: random.Random, externals: list[Any], start: date, days: int, n: int) -> list[dict[str, Any]]:
    """To Do tasks in the default list and a list of the user's own: due dates written in the user's
    zone, one weekly series, some completed, one linked to a CRM-like record, categories."""
    own: list[dict[str, Any]] = []
    mine: list[dict[str, Any]] = []
    for i in range(n):
        (name, _), company = rng.choice(externals)
        day = (start + timedelta(days=rng.randrange(max(days, 1)))).isoformat()
        task: dict[str, Any] = {
            "title": rng.choice(["Call", "Send quote to", "Follow up with", "Prepare visit at"])
            + f" {company}",
            "body": {"contentType": "text", "content": rng.choice(SENTENCES)},
            "importance": rng.choice(["low", "normal", "normal", "high"]),
            "dueDateTime": {"dateTime": f"{day}T00:00:00", "timeZone": "W. Europe Standard Time"},
        }
        if rng.random() < 0.3:
            task["categories"] = [rng.choice(CATEGORIES)]
        if i % 5 == 1:
            task["status"] = "completed"
        if i % 5 == 2:
            task["recurrence"] = {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]}}
        if i % 5 == 3:
            url = f"https://crm.example/contact/{i}"
            link = {
                "webUrl": url,
                "applicationName": "CRM",
                "displayName": name,
                "externalId": f"contact-{i}",
            }
            task["linkedResources"] = [link]
        (own if i % 2 else mine).append(task)
    return [{"displayName": "Tasks", "tasks": mine}, {"displayName": "Customers", "tasks": own}]


def _events(
    rng: random.Random,
    owner: tuple[str, str],
    people: list[tuple[str, str]],
    externals: list[Any],
    start: date,
    days: int,
    n: int,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def at(day: int, hour: int) -> str:
        return (datetime.combine(start, datetime.min.time()) + timedelta(days=day, hours=hour)).strftime(
            "%Y-%m-%dT%H:%M:%S"
        )

    for i in range(n):
        day = rng.randrange(days)
        hour = rng.randint(8, 16)
        guests = [rng.choice(externals)[0]] + ([rng.choice(people)] if len(people) > 1 else [])
        ev: dict[str, Any] = {
            "subject": rng.choice(TOPICS).format(n=rng.randint(100, 999)),
            "body": {"contentType": "html", "content": f"<p>{html.escape(rng.choice(SENTENCES))}</p>"},
            "start": {"dateTime": at(day, hour), "timeZone": "UTC"},
            "end": {"dateTime": at(day, hour + 1), "timeZone": "UTC"},
            "organizer": _addr(owner),
            "attendees": [
                {
                    **_addr(g),
                    "type": "required",
                    "status": {
                        "response": rng.choice(["accepted", "tentativelyAccepted", "declined", "none"]),
                        "time": "0001-01-01T00:00:00Z",
                    },
                }
                for g in guests
                if g != owner
            ],
            "location": {"displayName": rng.choice(["Room 1", "Room 2", "Teams", "Client office"])},
            "sensitivity": "private" if rng.random() < 0.1 else "normal",
            "isOnlineMeeting": rng.random() < 0.5,
        }
        kind = i % 6
        if kind == 1:  # weekly series with an exception and a cancelled occurrence
            first = datetime.combine(start, datetime.min.time()) + timedelta(days=day)
            ev["recurrence"] = {
                "pattern": {
                    "type": "weekly",
                    "interval": 1,
                    "daysOfWeek": [first.strftime("%A").lower()],
                    "firstDayOfWeek": "sunday",
                },
                "range": {
                    "type": "numbered",
                    "startDate": first.strftime("%Y-%m-%d"),
                    "numberOfOccurrences": 8,
                },
            }
            second = (first + timedelta(weeks=1)).strftime("%Y-%m-%d")
            third = (first + timedelta(weeks=2)).strftime("%Y-%m-%d")
            ev["exceptions"] = {
                second: {
                    "subject": ev["subject"] + " (moved)",
                    "start": {"dateTime": f"{second}T{hour + 2:02d}:00:00", "timeZone": "UTC"},
                    "end": {"dateTime": f"{second}T{hour + 3:02d}:00:00", "timeZone": "UTC"},
                }
            }
            ev["cancelledDates"] = [third]
        elif kind == 2:  # all-day
            d0 = (start + timedelta(days=day)).isoformat()
            d1 = (start + timedelta(days=day + 1)).isoformat()
            ev.update(
                isAllDay=True,
                start={"dateTime": f"{d0}T00:00:00", "timeZone": "UTC"},
                end={"dateTime": f"{d1}T00:00:00", "timeZone": "UTC"},
                attendees=[],
                isOnlineMeeting=False,
                subject="Out of office",
            )
        elif kind == 3:  # someone else's meeting, cancelled by its organizer
            ev["organizer"] = _addr(rng.choice(externals)[0])
            ev["isCancelled"] = True
            ev["subject"] = "Canceled: " + ev["subject"]
        elif kind == 4:  # private appointment without attendees
            ev.update(sensitivity="private", attendees=[], subject="Doctor", isOnlineMeeting=False)
        out.append(ev)
    return out


def load(tenant: Tenant, seed: dict[str, Any]) -> None:
    for spec in seed.get("users", []):
        enabled = spec.get("accountEnabled")
        user = tenant.add_user(
            spec["userPrincipalName"],
            spec.get("displayName", ""),
            spec.get("id", ""),
            purpose=spec.get("userPurpose", "user"),
            enabled=None if enabled is None else bool(enabled),
        )
        for f in spec.get("folders", []):
            parent = user.folder(f["parent"]).id if f.get("parent") else user.root_folder_id
            tenant.add_mail_folder(user, f["displayName"], parent)
        names = {f.display_name.lower(): f for f in user.folders.values()}
        for m in spec.get("messages", []):
            ref = m.get("folder") or "inbox"
            folder = names.get(ref.lower()) or user.folder(ref)
            mail.new_message(tenant, user, folder, {k: v for k, v in m.items() if k != "folder"})
        for f in spec.get("contactFolders", []):
            contacts.create_folder(tenant, user, f["displayName"], user.contact_root_id)
        cnames = {f.display_name.lower(): f for f in user.contact_folders.values()}
        for c in spec.get("contacts", []):
            ref = c.get("folder") or "contacts"
            cf = user.contact_folder("contacts") if ref.lower() == "contacts" else cnames[ref.lower()]
            contacts.create_contact(tenant, user, cf, {k: v for k, v in c.items() if k != "folder"})
        for ev in spec.get("events", []):
            calendar.create_event(tenant, user, ev)
        for lst in spec.get("todoLists", []):
            name = lst["displayName"]
            known = [x for x in user.todo_lists.values() if name in (x.display_name, x.wellknown)]
            target = known[0] if known else tenant.add_todo_list(user, name, shared=bool(lst.get("isShared")))
            for task in lst.get("tasks", []):
                todo.create_task(tenant, user, target, task)
    for spec in seed.get("users", []):  # grants and delegates name other mailboxes: once all exist
        if spec.get("mailbox"):
            mailbox.configure(tenant, tenant.user(spec["userPrincipalName"]), spec["mailbox"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m emulators.graph.sample")
    p.add_argument("--users", type=int, default=3)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--per-day", type=int, default=10, help="messages per user per day")
    p.add_argument("--contacts", type=int, default=20)
    p.add_argument("--events", type=int, default=12)
    p.add_argument("--tasks", type=int, default=6, help="To Do tasks per user")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--domain", default="contoso.test")
    p.add_argument("--start", default="2026-01-05")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    data = generate(
        a.users,
        a.days,
        a.per_day,
        a.seed,
        a.domain,
        date.fromisoformat(a.start),
        a.contacts,
        a.events,
        a.tasks,
    )
    a.out.write_text(json.dumps(data))


if __name__ == "__main__":
    main()
