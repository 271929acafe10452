"""The sweep's probe for users with mail, contacts and calendar on the real stack: idle users cost at most
one Graph request each per sweep (several users share a `$batch`) and get no job; a change in any stream,
on either side, gets that stream a job; a CRM-side contact change still reaches Outlook."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.graph.batch import GraphBatch
from shared.graph.client import GraphCaller, build_graph_client
from shared.model import Job
from shared.state.memory import InMemoryJobQueue
from shared.sync.sweep import DeltaProbe, Sweeper
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration
USERS = ("ann@contoso.com", "ben@contoso.com", "cat@contoso.com")
ANN = USERS[0]
BOB = "bob@fabrikam.example"
ALL_THREE = {"MailFolders": "inbox", "Contacts": True, "Calendar": True}
with_bob = {"emailAddress": {"address": BOB}, "type": "required"}


def graph_http(stack: Stack) -> int:
    stats = stack.graph.control.stats()
    return int(stats["requests"]) - int(stats.get("batchSubRequests", 0))


def crm_requests(stack: Stack) -> int:
    return int(stack.crm.stats()["total"])


def tomorrow(hour: int) -> dict[str, str]:
    day = datetime.now(UTC).date() + timedelta(days=1)
    return {"dateTime": f"{day.isoformat()}T{hour:02d}:00:00", "timeZone": "UTC"}


async def settle(stack: Stack) -> None:
    """Sweep and run the jobs until a sweep finds nothing to do (our own writes come back once)."""
    for _ in range(6):
        jobs = await stack.services.engine.sweep()
        if not jobs:
            return
        for job in jobs:
            assert (await stack.services.engine.run_job(job)).status == "done"
    raise AssertionError(f"the sweep never settled: {jobs}")


async def three_stream_users(stack: Stack, users: tuple[str, ...] = USERS) -> None:
    for upn in users:
        await stack.add_user(upn, **ALL_THREE)
        stack.crm.add_person(f"crm-{upn.split('@')[0]}@fabrikam.example", name="Carl Crm", owner=upn,
                             givenName="Carl", surname="Crm")  # fmt: skip
        stack.deliver(upn, subject="Hello")
        meeting = {"subject": "Call", "start": tomorrow(9), "end": tomorrow(10), "attendees": [with_bob]}
        stack.outlook("POST", f"/users/{upn}/events", meeting)
        outcomes = await stack.sync(upn)
        assert [o.status for o in outcomes] == ["done", "done", "done"]
    await settle(stack)


def owned_contact(stack: Stack, upn: str) -> dict[str, Any]:
    folders = stack.outlook("GET", f"/users/{upn}/contactFolders?$top=100")["value"]
    folder = next(f["id"] for f in folders if f["displayName"] == "CRM Contacts")
    contacts = stack.outlook("GET", f"/users/{upn}/contactFolders/{folder}/contacts")["value"]
    assert len(contacts) == 1
    return dict(contacts[0])


async def test_idle_users_with_all_three_streams_cost_at_most_one_graph_request_each(stack: Stack) -> None:
    await three_stream_users(stack)
    sweeps = 4  # more sweeps than the delta token generations Graph keeps
    graph_before, crm_before = graph_http(stack), crm_requests(stack)
    for _ in range(sweeps):
        assert await stack.services.engine.sweep() == []
    graph = graph_http(stack) - graph_before
    assert graph <= sweeps * len(USERS)
    assert graph == sweeps  # the three users' nine links fit one $batch
    # the CRM side: one peek at the contact feed per user and sweep
    assert crm_requests(stack) - crm_before == sweeps * len(USERS)

    # the probes saved the idle answers' links: after the sweeps, a change is read without a new round
    stack.deliver(ANN, subject="After the sweeps")
    later = {"subject": "Later", "start": tomorrow(14), "end": tomorrow(15), "attendees": [with_bob]}
    stack.outlook("POST", f"/users/{ANN}/events", later)
    edit = owned_contact(stack, ANN)
    stack.outlook("PATCH", f"/users/{ANN}/contacts/{edit['id']}", {"jobTitle": "Buyer"})
    jobs = await stack.services.engine.sweep()
    assert sorted(j.stream for j in jobs) == ["calendar", "contacts", "mail:inbox"]
    assert {j.user for j in jobs} == {ANN}
    for job in jobs:
        outcome = await stack.services.engine.run_job(job)
        assert outcome.status == "done" and outcome.stats["fresh_rounds"] == 0, outcome
    assert "After the sweeps" in {j["subject"] for j in stack.journals().values()}
    assert [c["jobTitle"] for c in stack.crm.contacts(ANN)] == ["Buyer"]
    assert "Later" in {a["subject"] for a in stack.crm.appointments(ANN)}


CHANGES: dict[str, tuple[str, Callable[[Stack], None]]] = {
    "mail": ("mail:inbox", lambda s: s.deliver(ANN, subject="New mail")),
    "outlook contact": (
        "contacts",
        lambda s: s.outlook("PATCH", f"/users/{ANN}/contacts/{owned_contact(s, ANN)['id']}",
                            {"jobTitle": "X"}),
    ),
    "crm contact": (
        "contacts",
        lambda s: s.crm.update_person(s.crm.contacts(ANN)[0]["id"], jobTitle="Head of Buying"),
    ),
    "new crm contact": (
        "contacts",
        lambda s: s.crm.add_person("dora@fabrikam.example", name="Dora", owner=ANN),
    ),
    "event": (
        "calendar",
        lambda s: s.outlook("POST", f"/users/{ANN}/events", {"subject": "New", "start": tomorrow(16),
                            "end": tomorrow(17)}),
    ),
}  # fmt: skip


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_change_in_any_stream_gets_that_stream_a_job(stack: Stack, change: str) -> None:
    await three_stream_users(stack, (ANN,))
    stream, make = CHANGES[change]
    make(stack)
    assert await stack.services.engine.sweep() == [Job(ANN, stream, "sweep")]


async def test_a_crm_side_contact_change_reaches_outlook(stack: Stack) -> None:
    await three_stream_users(stack, (ANN,))
    carl = stack.crm.contacts(ANN)[0]["id"]
    stack.crm.update_person(carl, jobTitle="Head of Buying")
    stack.crm.add_person("dora@fabrikam.example", name="Dora Crm", owner=ANN, givenName="Dora")
    jobs = await stack.services.engine.sweep()
    assert jobs == [Job(ANN, "contacts", "sweep")]
    assert (await stack.services.engine.run_job(jobs[0])).status == "done"
    folders = stack.outlook("GET", f"/users/{ANN}/contactFolders?$top=100")["value"]
    folder = next(f["id"] for f in folders if f["displayName"] == "CRM Contacts")
    contacts = stack.outlook("GET", f"/users/{ANN}/contactFolders/{folder}/contacts")["value"]
    titles = {c["emailAddresses"][0]["address"]: c.get("jobTitle") for c in contacts}
    assert titles["crm-ann@fabrikam.example"] == "Head of Buying" and "dora@fabrikam.example" in titles
    await settle(stack)  # our own writes come back once, then the user is idle again
    assert await stack.services.engine.sweep() == []


async def test_a_failed_crm_peek_gives_contacts_a_job(stack: Stack) -> None:
    await three_stream_users(stack, (ANN,))
    stack.crm.fault(400, count=1, path_contains="/contacts/changes")  # refused: not retried
    assert await stack.services.engine.sweep() == [Job(ANN, "contacts", "sweep")]


async def test_a_crm_appointment_to_push_gets_the_push_a_job(stack: Stack) -> None:
    await three_stream_users(stack, (ANN,))
    await stack.services.state.put_config(ANN, {**ALL_THREE, "Enabled": True, "CalendarPushFromCrm": True})
    await settle(stack)  # the first push run reads the appointment feed and keeps its cursor
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    stack.crm.create_appointment(owner=ANN, subject="Site visit", start=start, end=start + timedelta(hours=1))
    assert await stack.services.engine.sweep() == [Job(ANN, "push", "sweep")]
    assert (await stack.services.engine.run_job(Job(ANN, "push", "sweep"))).status == "done"
    events = stack.outlook("GET", f"/users/{ANN}/events?$top=100")["value"]
    assert "Site visit" in {e["subject"] for e in events}


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_calendar_gets_a_job_when_its_window_is_due_to_move_forward(stack: Stack) -> None:
    await three_stream_users(stack, (ANN,))
    services = stack.services
    clock = Clock()
    client = build_graph_client(services.settings)
    probe = DeltaProbe(
        services.state, GraphBatch(client, GraphCaller()), services.engine.streams, clock=clock
    )
    sweeper = Sweeper(InMemoryJobQueue(), probe)
    config = await services.engine.load_user(ANN)
    assert config is not None
    clock.now += timedelta(hours=2)  # the hourly series check: no recurring meetings, so no job
    assert await sweeper.sweep([config]) == []
    clock.now += timedelta(days=1)
    assert await sweeper.sweep([config]) == [Job(ANN, "calendar", "sweep")]
