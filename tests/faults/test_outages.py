"""Outages on the real stack: the CRM down for a while, a mailbox denied, storage unavailable. While it
lasts the user's status says what is wrong; when it ends the backlog drains and nothing is lost."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from shared.errors import StateError, SyncError
from shared.model import Job
from shared.state.tables import TableStateStore
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
    stack.crm.fault(503, count=None, path_contains="/journals/", message="maintenance")
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
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
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
