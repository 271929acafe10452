"""Outages on the real stack: the CRM down for a while, a mailbox denied, storage unavailable. While it
lasts the user's status says what is wrong; when it ends the backlog drains and nothing is lost.

Storage is made unavailable two ways. At the end of this file Azurite itself is stopped and started
again (mail; contacts and calendar): the real Tables and Queue clients meet refused connections, with
their own retries, under a worker process, and the redelivered job and the real sweep drain the backlog.
`Outage` (contacts and calendar, in process) refuses every state call from a chosen one on: the outage
begins at a state write itself (a link row, a key record), which a process stopping Azurite between two
calls cannot aim at as precisely, and costs well under a second."""

from __future__ import annotations

import asyncio
import inspect
import os
import secrets
import signal
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from time import monotonic, sleep
from typing import Any

import pytest

from emulators.azurite import RestartableAzurite, restartable_azurite
from emulators.crm.launcher import ReferenceCrm
from emulators.funchost.launcher import FunctionRunFailed, function_host
from emulators.graph.launcher import GraphEmulator
from emulators.localapp import app_settings
from emulators.process import free_port
from shared import wiring
from shared.errors import StateError, SyncError
from shared.graph.calendar import GraphCalendar
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.contacts import GraphContacts
from shared.model import Job
from shared.state.queue import JOBS_QUEUE, POISON_QUEUE, StorageJobQueue
from shared.state.tables import TableStateStore
from shared.sync.calendar import CalendarStream
from shared.sync.contacts import ContactsStream
from shared.sync.engine import Engine
from shared.sync.mail import MailStream
from shared.sync.runner import LEASE_SECONDS
from tests.faults.killing import LEASE_EXPIRED, Matrix, Outlook, differences, finish, spawn
from tests.faults.test_kill_points import (
    calendar_end,
    calendar_seed,
    contacts_end,
    contacts_seed,
    normalised,
)
from tests.integration.stack import TENANT_DOMAIN, Stack, settings_for, unique_prefix
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
        return ContactsStream(state, self.stack.services.crm, side)


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


# -- storage really unavailable: Azurite stopped, then started again ----------------------------------
#
# The tests above inject the outage with a wrapper (`Outage`): precise, in process. These stop Azurite
# itself, so the real azure-data-tables and azure-storage-queue clients meet refused connections (their
# own retries included) on tables and queue alike, as when a storage account is unreachable. A worker
# *process* (`worker_main.py`, as in the kill matrix) stops Azurite at a named checkpoint; it then
# behaves as the Functions host: the job that raised leaves its message in the queue, queue calls that
# fail are retried. The test starts Azurite again on the same ports with its data (kept on disk).

PAGE_SIZE = 5  # 12 messages: three pages
STORAGE_OUTAGES = {  # where the worker stops Azurite: the error its job fails with
    "state.get_user:1:before": "table read failed",  # gone before the job's first read (message taken)
    # gone in the middle of a round, after the second page's CRM write: its key rows cannot be written
    "crm.upsert_journals:2:after": "table transaction failed",
}


@pytest.fixture(scope="module")
def storage() -> Iterator[RestartableAzurite]:
    with restartable_azurite() as running:
        yield running


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Poll `condition` until it holds (bounded: a loaded machine is slow, a hang is a failure)."""
    deadline = monotonic() + timeout
    while not condition():
        assert monotonic() < deadline, f"still waiting after {timeout} s for {what}"
        sleep(0.1)


def through_an_outage(storage: RestartableAzurite, matrix: Matrix, n: int, point: str) -> list[str]:
    """Start a worker on `matrix.users[n]`'s queue that stops Azurite at `point`; once its job failed on
    it, start Azurite again and wait for the worker to drain the queue. The lines it wrote."""
    worker = spawn(matrix.env([n], OUTAGE_AT=point, AZURITE_PID=str(storage.pid),
                              AZURITE_TABLE_PORT=str(storage.stack.table_port)))  # fmt: skip
    wait_for(lambda: not storage.running or not worker.process.is_alive(), f"the worker to reach {point}")
    wait_for(lambda: "outcome: raised" in worker.log.read_text() or not worker.process.is_alive(), "failure")
    assert not storage.running, f"the worker ended without stopping Azurite:\n{worker.log.read_text()}"
    storage.start()
    code, output = finish(worker)
    assert code == 0, f"exit {code}\n{output}"
    return [line for line in output.splitlines() if line.startswith(("storage stopped", "outcome: "))]


async def sweep_and_run(services: wiring.Services, matrix: Matrix) -> list[tuple[str, str]]:
    """The next sweep (the real one: state, Graph probes, CRM peeks) and a worker that runs the jobs it
    queued, with a clock past the lease a failed run left behind; the (user, stream) of those jobs."""
    jobs = await services.engine.sweep()
    rest = spawn({**matrix.env([]), "JOB_QUEUE": JOBS_QUEUE, "CLOCK_OFFSET_SECONDS": str(LEASE_EXPIRED)})
    code, output = finish(rest)
    assert code == 0 and output.count("outcome: done") == len(jobs), output
    matrix.assert_queues_empty()
    assert isinstance(services.queue, StorageJobQueue)
    for name in (JOBS_QUEUE, POISON_QUEUE):
        assert await services.queue.client(name).peek_messages() == [], name
    return sorted((job.user, job.stream) for job in jobs)


async def test_storage_stopped_then_started_again_mail(
    storage: RestartableAzurite, graph: GraphEmulator, crm_server: ReferenceCrm
) -> None:
    """Azurite stopped before a job's first read, and (another mailbox) in the middle of a round; started
    again, the redelivered job and the next sweep end every mailbox as a clean one (same journals, once
    each; a deltaLink; `State=ok`), and the jobs are gone from the queues."""
    graph.control.reset(empty=True)
    crm_server.reset()
    users = [f"clean@{TENANT_DOMAIN}"] + [f"outage{n}@{TENANT_DOMAIN}" for n in range(len(STORAGE_OUTAGES))]
    matrix = await Matrix.open(storage.stack, graph, crm_server, users, page_size=PAGE_SIZE)
    services = await wiring.build(settings_for(storage.stack, graph, crm_server), table_prefix=matrix.prefix)
    start = datetime.now(UTC).replace(microsecond=0)
    try:
        for user in users:
            graph.control.add_user(user)
            await matrix.state.put_config(user, {"Enabled": True, "MailFolders": "inbox"})
            tag = user.split("@")[0]
            for m in range(BACKLOG):
                graph.control.deliver(
                    user,
                    {"from": {"address": "bob@fabrikam.example"}, "to": [{"address": user}],
                     "subject": f"Order {m}", "internetMessageId": f"<order-{m}-{tag}@fabrikam.example>",
                     "bodyHtml": f"<p>Order {m}</p>", "conversationId": f"conv-{m}",
                     "receivedDateTime": (start - timedelta(minutes=m)).isoformat(),
                     "sentDateTime": (start - timedelta(minutes=m, seconds=5)).isoformat()},
                )  # fmt: skip
        lines, writes = {}, {}
        for n, (point, error) in enumerate(STORAGE_OUTAGES.items(), start=1):
            matrix.send(users[n], Job("", "mail:inbox", "notification"))
            crm_server.clear_stats()
            lines[point] = through_an_outage(storage, matrix, n, point)
            writes[point] = crm_server.stats()["journalWrites"]
            # the run failed on the refused connection with the error that stopped it: no crash, no hang
            assert lines[point][:2] == [
                f"storage stopped at {point}", f"outcome: raised StateError: {error}: ServiceRequestError"
            ], lines[point]  # fmt: skip
        first, middle = STORAGE_OUTAGES
        # Nothing had been written: after the restart the redelivered message ran the job, each journal once.
        assert lines[first][2:] == ["outcome: done"] and writes[first] == BACKLOG, (lines[first], writes)
        # The round cut in the middle left the failed run's lease (storage was down, it could not let go):
        # the redelivered message found it held, answered busy and was deleted, as the product does.
        assert lines[middle][2:] == ["outcome: busy"], lines[middle]
        assert writes[middle] == 2 * PAGE_SIZE, writes  # two pages written before the outage

        # The next sweep: the clean mailbox never ran, the cut round has its nextLink saved; the first
        # mailbox is up to date (its probe finds nothing new), so it gets no job.
        assert await sweep_and_run(services, matrix) == [(users[0], "mail:inbox"), (users[2], "mail:inbox")]
        clean = normalised(crm_server.journals(owner=users[0]), users[0])
        assert len(clean) == BACKLOG
        for user, point in zip(users[1:], STORAGE_OUTAGES, strict=True):
            assert len(crm_server.journals(owner=user)) == BACKLOG, point  # no journal twice
            assert normalised(crm_server.journals(owner=user), user) == clean, point
            cursor = await matrix.state.get_cursor(user, "mail:inbox")
            assert (cursor.link_kind, bool(cursor.link)) == ("delta", True), point
            row = await matrix.state.get_user(user)
            assert row is not None and (row.columns["State"], row.columns["LastError"]) == ("ok", ""), point
            assert await matrix.state.list_issues(user) == [], point
    finally:
        if not storage.running:
            storage.start()
        await services.aclose()
        await matrix.close()


PIM_OUTAGES = {  # stream: where the worker stops Azurite in the first sync, and the error the job fails with
    "contacts": ("graph.create:2:after", "table transaction failed"),  # an Outlook contact, no link row
    "calendar": ("crm.upsert_appointment:2:after", "table create failed"),  # an appointment, no key record
}


@pytest.mark.parametrize("stream", list(PIM_OUTAGES))
async def test_storage_stopped_in_the_middle_of_a_round_contacts_and_calendar(
    storage: RestartableAzurite, graph: GraphEmulator, crm_server: ReferenceCrm, stream: str
) -> None:
    """The seeded first sync of the kill matrix (`test_kill_points.py`), cut by Azurite stopping right
    after an effect on the other side; started again, the redelivered job (busy: the failed run's lease)
    and the next sweep end the mailbox as a clean one: both sides, the link rows, the cursor."""
    graph.control.reset(empty=True)
    crm_server.reset()
    users = [f"{stream}-clean@{TENANT_DOMAIN}", f"{stream}-outage@{TENANT_DOMAIN}"]
    matrix = await Matrix.open(storage.stack, graph, crm_server, users, page_size=3)
    services = await wiring.build(settings_for(storage.stack, graph, crm_server), table_prefix=matrix.prefix)
    outlook = Outlook(graph)
    try:
        if stream == "calendar":
            crm_server.add_person(BOB, name="Bob", owner=users[0])
        for user in users:
            graph.control.add_user(user)
            if stream == "contacts":
                await matrix.state.put_config(user, {"Enabled": True, "Mail": False, "Contacts": True})
                contacts_seed(outlook, crm_server, user)
            else:
                config = {"Enabled": True, "Mail": False, "Calendar": True, "CalendarPushFromCrm": True}
                await matrix.state.put_config(user, config)
                calendar_seed(outlook, crm_server, user)
        point, error = PIM_OUTAGES[stream]
        matrix.send(users[1], Job("", stream, "notification"))
        assert through_an_outage(storage, matrix, 1, point) == [
            f"storage stopped at {point}",
            f"outcome: raised StateError: {error}: ServiceRequestError",
            "outcome: busy",  # the redelivered message, while the failed run's lease lasts
        ]

        streams = (stream, "push") if stream == "calendar" else (stream,)  # the push: a stream of its own
        assert await sweep_and_run(services, matrix) == [(user, s) for user in users for s in streams]
        end = contacts_end if stream == "contacts" else calendar_end
        clean, cut = [await end(outlook, crm_server, matrix.state, user) for user in users]
        assert cut == clean, differences(cut, clean)
        assert clean["cursor"][:2] == ("delta", True)
        for user in users:
            row = await matrix.state.get_user(user)
            assert row is not None and (row.columns["State"], row.columns["LastError"]) == ("ok", ""), user
    finally:
        if not storage.running:
            storage.start()
        outlook.close()
        await services.aclose()
        await matrix.close()


async def test_storage_stopped_under_the_function_host(
    storage: RestartableAzurite, graph: GraphEmulator, crm_server: ReferenceCrm, tmp_path: Path
) -> None:
    """The Function App in the local host (queue trigger, timers, its own tables) while Azurite is
    stopped: a job and the sweep each fail on the storage error (no hang; the host stays up), and once
    Azurite is back the host's queue listener recovers by itself, the next sweep's job drains the backlog
    made before and during the outage, the status is ok and nothing went to the poison queue."""
    graph.control.reset(empty=True)
    crm_server.reset()
    port, key, log = free_port(), secrets.token_urlsafe(24), tmp_path / "host.log"
    settings = app_settings(storage.stack, graph, crm_server, port, key)
    state = TableStateStore.from_connection_string(storage.connection_string)  # the app's own tables
    queue = StorageJobQueue.from_connection_string(storage.connection_string)
    await state.ensure_tables()
    try:
        with function_host("function_app:app", settings=settings, port=port, log=log) as host:
            graph.control.add_user(ANN)
            await state.put_config(ANN, {"Enabled": True, "MailFolders": "inbox"})
            keys = {deliver(graph, ANN, n) for n in range(BACKLOG)}
            storage.stop()
            keys |= {deliver(graph, ANN, n) for n in range(BACKLOG, 2 * BACKLOG)}
            job = Job(ANN, "mail:inbox", "notification").to_json()
            failed = await asyncio.gather(
                host.fire_async("sync_worker", input=job),
                host.fire_async("sync_sweep"),
                return_exceptions=True,
            )
            assert [type(f) for f in failed] == [FunctionRunFailed, FunctionRunFailed], failed
            assert log.read_text().count("shared.errors.StateError: table ") >= 2  # the storage error, logged
            assert crm_server.journals() == []

            storage.start()
            await host.fire_async("sync_sweep")  # the next sweep, through the queue trigger

            async def drained() -> bool:
                row = await state.get_user(ANN)
                return row is not None and row.columns.get("State") == "ok" and not await queue_holds(queue)

            await eventually(drained, "the backlog drained through the queue trigger")
            assert {j["key"] for j in crm_server.journals()} == keys
            assert len(crm_server.journals()) == 2 * BACKLOG
            row = await state.get_user(ANN)
            assert row is not None and row.columns["LastError"] == "" and row.columns["ErrorCount"] == 0
            assert await queue.client(POISON_QUEUE).peek_messages() == []
            assert "a trigger loop stopped" not in log.read_text()
    finally:
        if not storage.running:
            storage.start()
        await queue.aclose()
        await state.aclose()


def deliver(graph: GraphEmulator, user: str, n: int) -> str:
    key = f"<host-{n}@fabrikam.example>"
    graph.control.deliver(
        user,
        {"from": {"address": "bob@fabrikam.example"}, "to": [{"address": user}], "subject": f"Order {n}",
         "internetMessageId": key, "bodyHtml": f"<p>Order {n}</p>"},
    )  # fmt: skip
    return key


async def queue_holds(queue: StorageJobQueue) -> bool:
    """Whether the jobs queue holds a message, visible or not (one being run is hidden)."""
    properties = await queue.client(JOBS_QUEUE).get_queue_properties()
    return bool(properties.approximate_message_count)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 90.0) -> None:
    deadline = monotonic() + timeout
    while not await check():
        assert monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.1)


async def test_storage_that_never_answers_ends_the_job_with_a_storage_error(
    storage: RestartableAzurite, graph: GraphEmulator, crm_server: ReferenceCrm
) -> None:
    """Azurite frozen (SIGSTOP: it accepts connections and never answers, like a black-holed endpoint):
    the job ends with a storage error once the Tables client's timeouts ran out (shortened here to 1 s;
    in production 10 s to connect, 35 s to answer, `shared/state/tables.py` TIMEOUTS), instead of
    hanging on azure-core's 300 s defaults. Thawed, the next run drains the backlog."""
    graph.control.reset(empty=True)
    crm_server.reset()
    prefix = unique_prefix()
    services = await wiring.build(settings_for(storage.stack, graph, crm_server), table_prefix=prefix)
    # the frozen run's store: the same tables, timeouts of 1 s (only the thawed run may be slow to answer)
    quick = TableStateStore.from_connection_string(
        storage.connection_string, table_prefix=prefix, timeouts=(1.0, 1.0)
    )
    stream = MailStream(quick, services.crm, services.mail, org_domains=[TENANT_DOMAIN])
    frozen = Engine(quick, services.queue, {"mail": stream})
    try:
        graph.control.add_user(ANN)
        await services.state.put_config(ANN, {"Enabled": True, "MailFolders": "inbox"})
        keys = {deliver(graph, ANN, n) for n in range(BACKLOG)}
        os.killpg(storage.pid, signal.SIGSTOP)
        try:
            with pytest.raises(StateError, match="table read failed: ServiceResponseTimeoutError"):
                await asyncio.wait_for(frozen.run_job(Job(ANN, "mail:inbox")), 120)  # (a hang fails here)
        finally:
            os.killpg(storage.pid, signal.SIGCONT)
        assert crm_server.journals() == []
        assert (await services.engine.run_job(Job(ANN, "mail:inbox"))).status == "done"
        assert {j["key"] for j in crm_server.journals()} == keys
        row = await services.state.get_user(ANN)
        assert row is not None and row.columns["State"] == "ok"
    finally:
        await quick.aclose()
        await services.aclose()
