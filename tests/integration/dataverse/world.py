"""What the Dataverse stream tests (mail, contacts, calendar) share: settings for the real stack with
the Dataverse connector, a state store on Azurite with a clock the test moves, a connector over HTTPS
(trusting the stand-in's test CA) whose writes are counted, and a first worker that dies at a named
call."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from emulators.azurite import AzuriteStack
from emulators.dataverse.launcher import DataverseStandIn
from emulators.graph.launcher import GraphEmulator
from shared.config import Settings
from shared.crm.dataverse import DataverseConnector
from shared.model import Job
from shared.state.tables import TableStateStore
from shared.sync.engine import Engine
from tests.integration.crash import Clock, Crash, die_once
from tests.integration.stack import outlook, unique_prefix

__all__ = ["Crash", "DataverseWorld", "dataverse_world", "outlook"]


class Requests:
    """Counts what the connector sends Dataverse (an httpx event hook, not a stand-in): every request,
    and the writes (a `$batch` is a write when it holds a change set)."""

    def __init__(self) -> None:
        self.total = 0
        self.writes = 0

    async def __call__(self, request: httpx.Request) -> None:
        self.total += 1
        batch = request.url.path.endswith("/$batch")
        if request.method in ("PATCH", "PUT", "DELETE") or (
            request.method == "POST" and (not batch or b"changeset_" in request.content)
        ):
            self.writes += 1


def settings(azurite: AzuriteStack, graph: GraphEmulator, dv: DataverseStandIn) -> Settings:
    return Settings.from_env(
        {
            "GRAPH_BASE_URL": graph.base_url,
            "GRAPH_AUTH_MODE": "static-token",
            "GRAPH_STATIC_TOKEN": "local-test-token",
            "AzureWebJobsStorage": azurite.connection_string,
            "CRM_CONNECTOR": "dataverse",
            "DATAVERSE_URL": dv.url,
            "DATAVERSE_AUTH_MODE": "static-token",
            "DATAVERSE_STATIC_TOKEN": "local-test-token",
            "ORG_DOMAINS": "contoso.com",
        }
    )


@dataclass
class DataverseWorld:
    config: Settings
    clock: Clock
    state: TableStateStore
    requests: Requests
    crm: DataverseConnector

    async def die_once(
        self, crash: Crash | None, parts: Mapping[str, Any], engine_of: Callable[..., Engine], job: Job
    ) -> None:
        """`crash.die_once` under this world's clock."""
        await die_once(self.clock, crash, parts, engine_of, job)


@contextlib.asynccontextmanager
async def dataverse_world(
    dv: DataverseStandIn, azurite: AzuriteStack, graph: GraphEmulator, user: str, columns: Mapping[str, Any]
) -> AsyncIterator[DataverseWorld]:
    """A fresh state store (its own table prefix) with `user` configured by `columns`, and a connector
    whose requests are counted."""
    config = settings(azurite, graph, dv)
    clock = Clock()
    state = TableStateStore.from_connection_string(
        config.storage_connection_string, clock=clock, table_prefix=unique_prefix()
    )
    await state.ensure_tables()
    await state.put_config(user, dict(columns))
    requests = Requests()
    client = httpx.AsyncClient(verify=dv.ssl_context(), timeout=60.0, event_hooks={"request": [requests]})
    crm = DataverseConnector(dv.url, "local-test-token", client=client, backoff_base=0.05, page_size=50)
    try:
        yield DataverseWorld(config, clock, state, requests, crm)
    finally:
        await crm.aclose()
        await client.aclose()
        await state.aclose()
