"""What the three Graph-side contract suites (mail, contacts, calendar) share: one Graph emulator for
the session, and the scaffolding of their emulator harness (the real adapter's client, an "Outlook
user" acting over HTTP, delta faults and token expiry). Each suite keeps its own in-memory harness and
the operations only its stream has."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from emulators.graph.launcher import GraphEmulator, graph_emulator
from shared.config import Settings
from shared.graph.client import GraphCaller, build_graph_client

H = TypeVar("H")


async def quick_sleep(seconds: float) -> None:
    """Retry-After waits are honoured by the real `GraphCaller`; the suites do not need to sit them out."""
    await asyncio.sleep(min(seconds, 0.01))


@pytest.fixture(scope="session")
def contract_graph() -> Iterator[GraphEmulator]:
    """One emulator for the three suites; each test starts from an empty one (`harness_of`)."""
    with graph_emulator() as emulator:
        yield emulator


class EmulatedGraph:
    """The emulator side of a harness: `client` and `caller` build the real adapter under test; the
    `_outlook` requests act as the user in Outlook; `fault` makes the stream's delta reads fail."""

    def __init__(self, graph: GraphEmulator, delta_path: str, headers: dict[str, str] | None = None) -> None:
        self.graph = graph
        self._delta_path = delta_path
        settings = Settings.from_env(
            {"GRAPH_BASE_URL": graph.base_url, "GRAPH_AUTH_MODE": "static-token",
             "GRAPH_STATIC_TOKEN": "contract-token", "AzureWebJobsStorage": "UseDevelopmentStorage=true",
             "CRM_BASE_URL": "http://127.0.0.1:9/", "CRM_API_TOKEN": "unused"}
        )  # fmt: skip
        self.client = build_graph_client(settings)
        self.caller = GraphCaller(sleep=quick_sleep)
        self.http = httpx.Client(
            base_url=graph.base_url,
            headers={"Authorization": "Bearer outlook", **(headers or {})},
            timeout=30,
        )

    def _outlook(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, path, json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def add_user(self, upn: str) -> None:
        self.graph.control.add_user(upn)

    def expire_tokens(self, upn: str) -> None:
        self.graph.control.expire_delta_tokens(upn)

    def fault(self, status: int, *, retry_after: str | None = None, count: int = 1) -> None:
        """The next `count` delta reads of the stream answer `status`."""
        extra: dict[str, Any] = {} if retry_after is None else {"retryAfter": retry_after}
        self.graph.control.fault(status, count, method="GET", pathContains=self._delta_path, **extra)


@contextlib.asynccontextmanager
async def harness_of(
    kind: str,
    request: pytest.FixtureRequest,
    memory: Callable[[], H],
    emulated: Callable[[GraphEmulator], H],
) -> AsyncIterator[H]:
    """The harness for one parametrized run: the in-memory fake, or the real adapter over an emptied
    emulator (its faults cleared and its HTTP client closed afterwards)."""
    if kind == "memory":
        yield memory()
        return
    graph: GraphEmulator = request.getfixturevalue("contract_graph")
    graph.control.reset(empty=True)
    harness = emulated(graph)
    try:
        yield harness
    finally:
        graph.control.clear_faults()
        if isinstance(harness, EmulatedGraph):
            harness.http.close()
