"""A first round that Graph caps (5,000 messages with `$filter`; 50 here) on the real stack: the round is
ordered newest first, so only the messages at or before its oldest one are listed afterwards. Nothing at
the boundary is lost, the Graph requests are the minimum, and a crash mid-listing resumes the listing."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.mail import GraphMailReader
from shared.model import Job
from shared.ports.state import StateStore
from shared.state.memory import InMemoryJobQueue
from shared.state.tables import TableStateStore
from shared.sync.engine import Engine
from shared.sync.mail import MailStream
from tests.integration.crash import CrashAt, SimulatedCrash
from tests.integration.stack import Stack, unique_prefix

pytestmark = pytest.mark.integration
ANN = "ann@contoso.com"
CAP = 50
LIST_ROUTE = "GET /users/{user}/mailFolders/{folder}/messages"
DELTA_ROUTE = "GET /users/{user}/mailFolders/{folder}/messages/delta"


@pytest.fixture
def capped(stack: Stack) -> Iterator[Stack]:
    stack.graph.control.settings(filter_cap=CAP)
    try:
        yield stack
    finally:
        stack.graph.control.settings(filter_cap=5000)


def engine_for(
    stack: Stack, page_size: int, source: object | None = None, state: StateStore | None = None
) -> Engine:
    services = stack.services
    reader: Any = source or GraphMailReader(
        build_graph_client(services.settings), GraphCaller(), page_size=page_size
    )
    state = state or services.state
    stream = MailStream(state, services.crm, reader, org_domains=["contoso.com"], filter_cap=CAP)
    return Engine(state, InMemoryJobQueue(), {"mail": stream})


def at(minutes_ago: float) -> str:
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes_ago)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def deliver(stack: Stack, n: int, received: str) -> None:
    stack.deliver(
        ANN, subject=f"M{n}", internetMessageId=f"<m-{n}@fabrikam.example>", receivedDateTime=received
    )


def http_requests(stack: Stack) -> int:
    stats = stack.graph.control.stats()
    return int(stats["requests"]) - int(stats.get("batchSubRequests", 0))


def route(stack: Stack, name: str) -> int:
    return int(stack.graph.control.stats()["byRoute"].get(name, 0))


async def test_messages_sharing_the_boundary_timestamp_are_all_journaled(capped: Stack) -> None:
    stack = capped
    await stack.add_user(ANN, MailFolders="inbox")
    # 30 newer than the boundary, 40 sharing its second (the cap falls among them), 30 older;
    # delivered out of received order, so the log's order is not the round's
    same = at(120)
    order = list(range(100))
    order = order[1::2] + order[::2]
    for n in order:
        deliver(stack, n, at(n) if n < 30 else same if n < 70 else at(200 + n))
    listed = route(stack, LIST_ROUTE)
    outcome = await engine_for(stack, page_size=20).run_job(Job(ANN, "mail:inbox"))
    assert outcome.status == "done", outcome
    assert sorted(j["subject"] for j in stack.journals().values()) == sorted(f"M{n}" for n in range(100))
    cursor = await stack.services.state.get_cursor(ANN, "mail:inbox")
    assert cursor.link_kind == "delta" and cursor.mail.backfill is None
    assert route(stack, LIST_ROUTE) - listed == math.ceil((40 + 30) / 20)  # the boundary's second, then older


async def test_a_capped_first_round_costs_the_minimum_graph_requests(capped: Stack) -> None:
    stack = capped
    await stack.add_user(ANN, MailFolders="inbox")
    messages, page = 130, 10
    for n in range(messages):
        deliver(stack, n, at(n * 3 + (7 if n % 2 else 0)))
    before = http_requests(stack)
    outcome = await engine_for(stack, page_size=page).run_job(Job(ANN, "mail:inbox"))
    assert outcome.status == "done", outcome
    assert len(stack.journals()) == messages
    # the capped round: its pages and the empty page Graph ends it with; the listing: the rest of the
    # window plus the round's oldest message (listed again: `le` keeps its timestamp's others)
    assert route(stack, DELTA_ROUTE) == CAP // page + 1
    assert route(stack, LIST_ROUTE) == math.ceil((messages - CAP + 1) / page)
    assert http_requests(stack) - before == CAP // page + 1 + math.ceil((messages - CAP + 1) / page)
    assert http_requests(stack) - before <= math.ceil(messages / page) + 2  # the floor for any reader

    # later mail comes through the round's deltaLink, nothing is listed again
    deliver(stack, 999, at(0))
    assert (await engine_for(stack, page_size=page).run_job(Job(ANN, "mail:inbox"))).status == "done"
    assert len(stack.journals()) == messages + 1
    assert route(stack, LIST_ROUTE) == math.ceil((messages - CAP + 1) / page)


async def test_mail_arriving_during_the_backfill_comes_through_the_delta_link(capped: Stack) -> None:
    stack = capped
    await stack.add_user(ANN, MailFolders="inbox")
    for n in range(90):
        deliver(stack, n, at(10 + n))

    class ArrivesWhileListing:
        """The real reader; a message arrives just before the first listing page is read."""

        def __init__(self, inner: GraphMailReader) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> object:
            return getattr(self._inner, name)

        async def list_page(self, *args: object) -> object:
            if not args[2]:
                deliver(stack, 500, at(0))
            return await self._inner.list_page(*args)  # type: ignore[arg-type]

    reader = GraphMailReader(build_graph_client(stack.services.settings), GraphCaller(), page_size=20)
    engine = engine_for(stack, 20, ArrivesWhileListing(reader))
    assert (await engine.run_job(Job(ANN, "mail:inbox"))).status == "done"
    assert len(stack.journals()) == 90
    assert (await engine.run_job(Job(ANN, "mail:inbox"))).status == "done"
    assert len(stack.journals()) == 91


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_a_crash_mid_listing_resumes_the_listing(capped: Stack) -> None:
    stack = capped
    clock = Clock()
    state = TableStateStore.from_connection_string(
        stack.services.settings.storage_connection_string, clock=clock, table_prefix=unique_prefix()
    )
    await state.ensure_tables()
    try:
        await stack.add_user(ANN, MailFolders="inbox")
        await state.put_config(ANN, {"Enabled": True, "MailFolders": "inbox"})
        for n in range(130):
            deliver(stack, n, at(n))
        reader = GraphMailReader(build_graph_client(stack.services.settings), GraphCaller(), page_size=20)
        crashing = CrashAt(reader, "list_page", 3, after=True)  # the third listing page was read
        with pytest.raises(SimulatedCrash):
            await engine_for(stack, 20, crashing, state=state).run_job(Job(ANN, "mail:inbox"))
        cursor = await state.get_cursor(ANN, "mail:inbox")
        assert cursor.mail.backfill is not None and cursor.mail.backfill.link and cursor.mail.backfill.until
        assert len(stack.journals()) == CAP + 2 * 20 - 1  # the first listed is the round's oldest
        clock.now += timedelta(minutes=10)  # the dead worker's lease expires
        delta_before, list_before = route(stack, DELTA_ROUTE), route(stack, LIST_ROUTE)
        outcome = await engine_for(stack, 20, state=state).run_job(Job(ANN, "mail:inbox"))
        assert outcome.status == "done", outcome
        assert len(stack.journals()) == 130
        # page 3 was read ahead while page 2 was written, so the worker died before page 2's checkpoint:
        # the listing went on from its saved link, page 2 again, then the rest (one page was done);
        # then the stored deltaLink is read once
        assert route(stack, LIST_ROUTE) - list_before == math.ceil((130 - CAP + 1) / 20) - 1
        assert route(stack, DELTA_ROUTE) - delta_before == 1
        assert (await state.get_cursor(ANN, "mail:inbox")).mail.backfill is None
    finally:
        await state.aclose()
