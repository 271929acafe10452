"""What the BottleCRM stream tests (mail, contacts, calendar) share: settings for the real stack with
the BottleCRM connector, a state store on Azurite with a clock the test moves, a connector whose writes
are counted, acting as the user in Outlook, and a first worker that dies at a named call."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from emulators.azurite import AzuriteStack
from emulators.bottlecrm import BottleCrm
from emulators.graph.launcher import GraphEmulator
from shared.config import Settings
from shared.crm.bottlecrm import BottleCrmConnector
from shared.model import Job
from shared.state.tables import TableStateStore
from shared.sync.engine import Engine
from tests.integration.crash import Clock, Crash, die_once
from tests.integration.stack import outlook, unique_prefix

__all__ = ["BottleWorld", "Crash", "bottle_world", "outlook"]


class Writes:
    """Counts the writes BottleCRM receives under one API path (an httpx event hook, not a stand-in)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0

    async def __call__(self, request: httpx.Request) -> None:
        if request.method in ("POST", "PATCH", "PUT", "DELETE") and request.url.path.startswith(self.path):
            self.count += 1


def settings(azurite: AzuriteStack, graph: GraphEmulator, crm: BottleCrm) -> Settings:
    return Settings.from_env(
        {
            "GRAPH_BASE_URL": graph.base_url,
            "GRAPH_AUTH_MODE": "static-token",
            "GRAPH_STATIC_TOKEN": "local-test-token",
            "AzureWebJobsStorage": azurite.connection_string,
            "CRM_CONNECTOR": "bottlecrm",
            "CRM_BASE_URL": crm.base_url,
            "CRM_API_TOKEN": crm.token,
            "ORG_DOMAINS": "contoso.com",
        }
    )


@dataclass
class BottleWorld:
    config: Settings
    clock: Clock
    state: TableStateStore
    writes: Writes
    crm: BottleCrmConnector

    async def die_once(
        self, crash: Crash | None, parts: Mapping[str, Any], engine_of: Callable[..., Engine], job: Job
    ) -> None:
        """`crash.die_once` under this world's clock."""
        await die_once(self.clock, crash, parts, engine_of, job)


@contextlib.asynccontextmanager
async def bottle_world(
    server: BottleCrm,
    azurite: AzuriteStack,
    graph: GraphEmulator,
    user: str,
    columns: Mapping[str, Any],
    writes_under: str,
    *,
    prefix: str = "",
) -> AsyncIterator[BottleWorld]:
    """A fresh state store (its own table prefix unless `prefix` is given) with `user` configured by
    `columns`, and a connector whose writes under `writes_under` are counted."""
    config = settings(azurite, graph, server)
    clock = Clock()
    state = TableStateStore.from_connection_string(
        config.storage_connection_string, clock=clock, table_prefix=prefix or unique_prefix()
    )
    await state.ensure_tables()
    await state.put_config(user, dict(columns))
    writes = Writes(writes_under)
    client = httpx.AsyncClient(timeout=30.0, event_hooks={"request": [writes]})
    try:
        crm = BottleCrmConnector(server.base_url, server.token, client=client)
        yield BottleWorld(config, clock, state, writes, crm)
    finally:
        await client.aclose()
        await state.aclose()
