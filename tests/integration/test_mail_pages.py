"""Pages in flight on the real stack: page N+1 is read while page N is written, and page N's
checkpoint (its decisions, cursor and lease) is written while page N+1 is. A failure on a later page
keeps every earlier page's checkpoint, so the next run starts where the failed one stopped."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import GraphError
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.mail import GraphMailReader
from shared.model import Job
from tests.integration.stack import Stack
from tests.integration.test_mail_backfill import DELTA_ROUTE, at, deliver, engine_for, route

pytestmark = pytest.mark.integration
ANN = "ann@contoso.com"


class FailsOnce:
    """The reader, except that its `nth` page read fails once with a Graph error."""

    def __init__(self, inner: GraphMailReader, nth: int) -> None:
        self._inner = inner
        self._nth = nth
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def read_page(self, *args: Any) -> Any:
        self.reads += 1
        if self.reads == self._nth:
            raise GraphError("the mailbox is being moved", status=400, code="MailboxMoveInProgress")
        return await self._inner.read_page(*args)


async def test_a_page_that_fails_while_read_ahead_keeps_the_checkpoint_of_the_page_before(
    stack: Stack,
) -> None:
    await stack.add_user(ANN, MailFolders="inbox")
    for n in range(50):
        deliver(stack, n, at(n))
    reader = GraphMailReader(build_graph_client(stack.services.settings), GraphCaller(), page_size=20)
    failing = FailsOnce(reader, 2)  # page 2, read while page 1 is written
    with pytest.raises(GraphError):
        await engine_for(stack, 20, failing).run_job(Job(ANN, "mail:inbox"))
    assert failing.reads == 2
    cursor = await stack.services.state.get_cursor(ANN, "mail:inbox")
    assert cursor.link_kind == "next" and cursor.totals["journaled"] == 20
    assert len(stack.journals()) == 20
    decisions = [await stack.services.state.get_decision(ANN, key) for key in stack.journals()]
    assert all(d is not None and d.outcome == "synced" for d in decisions)

    before = route(stack, DELTA_ROUTE)
    assert (await engine_for(stack, 20).run_job(Job(ANN, "mail:inbox"))).status == "done"
    assert len(stack.journals()) == 50
    assert route(stack, DELTA_ROUTE) - before == 2  # pages 2 and 3; page 1 was not read again
