"""Outages on the real stack: the CRM down for a while, a mailbox denied, storage unavailable. While it
lasts the user's status says what is wrong; when it ends the backlog drains and nothing is lost."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from shared.errors import StateError, SyncError
from shared.graph.calendar import GraphCalendar
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.contacts import GraphContacts
from shared.model import Job
from shared.state.tables import TableStateStore
from shared.sync.calendar import CalendarStream
from shared.sync.contacts import ContactsStream
from shared.sync.engine import Engine
from shared.sync.mail import LEASE_SECONDS, MailStream
from tests.integration.stack import Stack, unique_prefix
from tests.model.world import Clock

pytestmark = pytest.mark.integration
ANN = "ann@contoso.com"
BACKLOG = 12


def deliver_backlog(stack: Stack, first: int = 0) -> set[str]:
    keys = set()
    for n in range(first, first + BACKLOG):
        key = f"<backlog-{n}@fabrikam.example>"
        stack.deliver(ANN, subject=f"Order {n}", internetMessageId=key)
        keys.add(key)
    return keys


async def status(stack: Stack) -> dict[str, Any]:
    row = await stack.services.state.get_user(ANN)
    assert row is not None
    return dict(row.columns)


async def test_the_crm_down_for_a_while_then_back(stack: Stack) -> None:
    await stack.add_user(ANN, MailFolders="inbox")
    keys = deliver_backlog(stack)
    stack.crm.fault(503, count=None, path_contains="/journals/", retry_after="0", message="maintenance")
    with pytest.raises(SyncError):
        await stack.sync(ANN)
    down = await status(stack)
    assert down["State"] == "error" and "CRM" in down["LastError"] and down["ErrorCount"] >= 1
    assert stack.journals() == {}

    stack.crm.clear_faults()
    keys |= deliver_backlog(stack, BACKLOG)
    assert [o.status for o in await stack.sync(ANN)] == ["done"]
    assert set(stack.journals()) == keys
    up = await status(stack)
    assert up["State"] == "ok" and up["LastError"] == ""
    assert await stack.services.state.list_issues(ANN) == []


async def test_a_mailbox_denied_then_allowed(stack: Stack) -> None:
    await stack.add_user(ANN, MailFolders="inbox")
    keys = deliver_backlog(stack)
    stack.graph.control.deny(ANN)
    assert [o.status for o in await stack.sync(ANN)] == ["denied"]
    denied = await status(stack)
    assert denied["State"] == "error" and "mail:inbox" in denied["LastError"]
    assert stack.journals() == {}

    stack.graph.control.allow(ANN)
    assert [o.status for o in await stack.sync(ANN)] == ["done"]
    assert set(stack.journals()) == keys
    assert (await status(stack))["State"] == "ok"


class Outage:
    """The state store, unreachable while `down` (every call raises as the Tables client would)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.down = False
        self.down_after = -1  # goes down after this many more calls (mid-run); -1: not scheduled
        self.down_on = ""  # goes down at the first call of this method (mid-run, after an effect)
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down_on and name == self.down_on:
                self.down, self.down_on = True, ""
            if self.down_after == 0:
                self.down, self.down_after = True, -1
            elif self.down_after > 0:
                self.down_after -= 1
            if self.down:
                self.refused += 1
                raise StateError("Table Storage unavailable (connection refused)")
            return await target(*args, **kwargs)

        return call


async def test_storage_unavailable_for_a_while(stack: Stack) -> None:
    clock = Clock()
    store = TableStateStore.from_connection_string(
        stack.azurite.connection_string, clock=clock, table_prefix=unique_prefix()
    )
    await store.ensure_tables()
    stack.graph.control.add_user(ANN)
    await store.put_config(ANN, {"Enabled": True, "MailFolders": "inbox"})
    state = Outage(store)
    services = stack.services
    stream = MailStream(state, services.crm, services.mail, org_domains=["contoso.com"], clock=clock)
    engine = Engine(state, services.queue, {"mail": stream}, clock=clock)
    try:
        keys = deliver_backlog(stack)
        assert (await engine.run_job(Job(ANN, "mail:inbox"))).status == "done"
        keys |= deliver_backlog(stack, BACKLOG)
        for calls in (0, 9):  # down from the start, then in the middle of a round (after CRM writes)
            state.down_after = calls
            with pytest.raises(StateError):
                await engine.run_job(Job(ANN, "mail:inbox"))  # the queue retries it
            state.down = False
            clock.advance(LEASE_SECONDS + 1)  # the failed run could not let go of its lease
        assert state.refused >= 2
        keys |= deliver_backlog(stack, 2 * BACKLOG)
        assert (await engine.run_job(Job(ANN, "mail:inbox"))).status == "done"
        assert set(stack.journals()) == keys
        row = await store.get_user(ANN)
        assert row is not None and row.columns["State"] == "ok"
    finally:
        await store.aclose()


# -- contacts and calendar -------------------------------------------------------------------------

BOB = "bob@fabrikam.example"
TODAY = datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)


class Backlog:
    """What piles up for one stream while something is down, and what of it reached the other side."""

    stream = ""
    columns: dict[str, Any] = {}
    crm_down = ""  # the CRM paths that fail while the CRM is "down" ("": all of them)

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def add(self, first: int, count: int) -> set[str]:
        raise NotImplementedError

    def synced(self) -> set[str]:
        raise NotImplementedError

    def runner(self, state: Any, clock: Clock) -> Any:
        raise NotImplementedError


class Contacts(Backlog):
    """Contacts added on both sides: a CRM contact of the user and an Outlook one in the owned folder."""

    stream, columns = "contacts", {"Mail": False, "Contacts": True}

    def folder(self) -> str:
        folders = self.stack.outlook("GET", f"/users/{ANN}/contactFolders?$top=100")["value"]
        found = [f["id"] for f in folders if f["displayName"] == "CRM Contacts"]
        if found:
            return str(found[0])
        made = self.stack.outlook("POST", f"/users/{ANN}/contactFolders", {"displayName": "CRM Contacts"})
        return str(made["id"])

    def add(self, first: int, count: int) -> set[str]:
        folder, made = self.folder(), set()
        for n in range(first, first + count):
            self.stack.crm.add_person(f"crm{n}@fabrikam.example", name=f"Crm {n}", owner=ANN)
            contact = {
                "displayName": f"Outlook {n}",
                "emailAddresses": [{"address": f"outlook{n}@northwind.example"}],
            }
            self.stack.outlook("POST", f"/users/{ANN}/contactFolders/{folder}/contacts", contact)
            made |= {f"crm{n}@fabrikam.example", f"outlook{n}@northwind.example"}
        return made

    def synced(self) -> set[str]:
        """Addresses on both sides (a contact made on one side reached the other)."""
        path = f"/users/{ANN}/contactFolders/{self.folder()}/contacts?$top=500"
        outlook = {a["address"].lower() for c in self.stack.outlook("GET", path)["value"]
                   for a in c["emailAddresses"]}  # fmt: skip
        return outlook & {e.lower() for p in self.stack.crm.contacts(ANN) for e in p["emails"]}

    def runner(self, state: Any, clock: Clock) -> Any:
        settings = self.stack.services.settings
        assert settings is not None
        side = GraphContacts(build_graph_client(settings), GraphCaller())
        return ContactsStream(state, self.stack.services.crm, side, clock=clock)


class Calendar(Backlog):
    """Meetings with a CRM person; only the appointment writes fail while the CRM is down (the lookup of
    attendees works), so the run records the failed meetings as issues before it gives up."""

    stream, columns, crm_down = "calendar", {"Mail": False, "Calendar": True}, "/appointments"

    def add(self, first: int, count: int) -> set[str]:
        if first == 0:
            self.stack.crm.add_person(BOB, name="Bob", owner=ANN)
        for n in range(first, first + count):
            start = TODAY + timedelta(days=1 + n, hours=9)
            self.stack.outlook("POST", f"/users/{ANN}/events", {
                "subject": f"Meeting {n}", "attendees": [{"emailAddress": {"address": BOB}}],
                "start": {"dateTime": f"{start:%Y-%m-%dT%H:%M:%S}", "timeZone": "UTC"},
                "end": {"dateTime": f"{start + timedelta(hours=1):%Y-%m-%dT%H:%M:%S}", "timeZone": "UTC"},
            })  # fmt: skip
        return {f"Meeting {n}" for n in range(first, first + count)}

    def synced(self) -> set[str]:
        subjects = [a["subject"] for a in self.stack.crm.appointments(ANN) if not a["cancelled"]]
        assert len(subjects) == len(set(subjects)), subjects  # never twice
        return set(subjects)

    def runner(self, state: Any, clock: Clock) -> Any:
        settings = self.stack.services.settings
        assert settings is not None
        source = GraphCalendar(build_graph_client(settings), GraphCaller())
        return CalendarStream(state, self.stack.services.crm, source, clock=clock)


BACKLOGS = [Contacts, Calendar]


@pytest.mark.parametrize("kind", BACKLOGS, ids=lambda k: k.stream)
async def test_the_crm_down_for_a_while_then_back_contacts_and_calendar(stack: Stack, kind: type) -> None:
    backlog: Backlog = kind(stack)
    await stack.add_user(ANN, **backlog.columns)
    made = backlog.add(0, 3)
    # Retry-After 0: the connector retries at once (its back-off is not what this test is about)
    stack.crm.fault(503, count=None, path_contains=backlog.crm_down, retry_after="0", message="maintenance")
    with pytest.raises(SyncError):
        await stack.sync(ANN)
    down = await status(stack)
    assert down["State"] == "error" and down["ErrorCount"] >= 1
    assert down["LastError"].startswith(f"{backlog.stream}: CRM") and "503" in down["LastError"]
    assert backlog.synced() == set()
    issues = await stack.services.state.list_issues(ANN)
    assert bool(issues) == (kind is Calendar)  # the meetings whose write failed wait to be retried
    assert all(i.reason.startswith("CRM: CRM PUT /appointments") for i in issues), issues

    stack.crm.clear_faults()
    made |= backlog.add(3, 3)
    assert [o.status for o in await stack.sync(ANN)] == ["done"]
    assert backlog.synced() == made
    up = await status(stack)
    assert up["State"] == "ok" and up["LastError"] == ""
    assert await stack.services.state.list_issues(ANN) == []


@pytest.mark.parametrize("kind", BACKLOGS, ids=lambda k: k.stream)
async def test_a_mailbox_denied_then_allowed_contacts_and_calendar(stack: Stack, kind: type) -> None:
    backlog: Backlog = kind(stack)
    await stack.add_user(ANN, **backlog.columns)
    made = backlog.add(0, 3)
    stack.graph.control.deny(ANN)
    assert [o.status for o in await stack.sync(ANN)] == ["denied"]
    denied = await status(stack)
    assert denied["State"] == "error" and denied["LastError"].startswith(f"{backlog.stream}: ")
    assert "may not read this mailbox" in denied["LastError"]

    stack.graph.control.allow(ANN)
    assert backlog.synced() == set()  # (read once allowed: the test goes through Graph too)
    made |= backlog.add(3, 2)
    assert [o.status for o in await stack.sync(ANN)] == ["done"]
    assert backlog.synced() == made
    assert (await status(stack))["State"] == "ok"


@pytest.mark.parametrize(
    ("kind", "effect"), [(Contacts, "put_links"), (Calendar, "put_key")], ids=["contacts", "calendar"]
)
async def test_storage_unavailable_for_a_while_contacts_and_calendar(
    stack: Stack, kind: type, effect: str
) -> None:
    backlog: Backlog = kind(stack)
    clock = Clock()
    store = TableStateStore.from_connection_string(
        stack.azurite.connection_string, clock=clock, table_prefix=unique_prefix()
    )
    await store.ensure_tables()
    stack.graph.control.add_user(ANN)
    await store.put_config(ANN, {"Enabled": True, **backlog.columns})
    state = Outage(store)
    engine = Engine(state, stack.services.queue, {backlog.stream: backlog.runner(state, clock)}, clock=clock)
    try:
        made = backlog.add(0, 2)
        assert (await engine.run_job(Job(ANN, backlog.stream))).status == "done"
        made |= backlog.add(2, 3)
        before = backlog.synced()
        for down_on in ("", effect):  # down from the start; then at the first write of a link or key
            state.down, state.down_on = not down_on, down_on
            with pytest.raises(StateError):
                await engine.run_job(Job(ANN, backlog.stream))  # the queue retries it
            state.down, state.down_on = False, ""
            clock.advance(LEASE_SECONDS + 1)  # the failed run could not let go of its lease
        assert state.refused >= 2
        assert backlog.synced() > before  # the second outage began after an effect of the round
        made |= backlog.add(5, 2)
        assert (await engine.run_job(Job(ANN, backlog.stream))).status == "done"
        assert backlog.synced() == made
        row = await store.get_user(ANN)
        assert row is not None and row.columns["State"] == "ok" and row.columns["LastError"] == ""
        assert await store.list_issues(ANN) == []
    finally:
        await store.aclose()
