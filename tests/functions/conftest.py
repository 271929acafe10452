"""Fixtures for calling the decorated functions directly.

Each test gets its own `Services` installed with `wiring.use()` (nothing patched): the in-memory
state store, job queue and CRM (each passes its port's contract suite), and the real msgraph-sdk
client against the Graph emulator, so the worker, the subscription upkeep and the admin checks
read a real (emulated) Graph over HTTP. A small loopback web server hands the Graph emulator's
webhook calls (validation handshakes, change and lifecycle notifications) to the same decorated
functions, checking the function key in `?code=` as the Functions host does.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import httpx
import pytest
from aiohttp import web
from azure.functions.queue import QueueMessage
from msgraph.graph_service_client import GraphServiceClient

from emulators.graph.launcher import GraphEmulator, graph_emulator
from emulators.process import free_port
from functions import notifications
from shared import wiring
from shared.config import Settings
from shared.crm.memory import InMemoryCrm
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.mail import GraphMailReader
from shared.graph.probe import MailboxProbe
from shared.graph.subscriptions import GraphSubscriptions
from shared.model import Job
from shared.state.memory import InMemoryJobQueue, InMemoryStateStore
from shared.subscriptions import SubscriptionKeeper
from shared.sync.engine import Engine
from shared.sync.mail import MailStream

TENANT = "contoso.com"
Handler = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]


class Clock:
    """The test's clock: the real time plus an offset the test may move forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Webhook:
    """The app's HTTP functions as Graph reaches them: `{base_url}/notifications?code={key}`."""

    base_url: str
    key: str


def http_request(
    handler_name: str,
    body: bytes = b"",
    params: dict[str, str] | None = None,
    route: dict[str, str] | None = None,
) -> func.HttpRequest:
    return func.HttpRequest(
        "POST" if handler_name in {"notifications", "lifecycle"} else "GET",
        f"http://127.0.0.1/api/{handler_name}",
        params=params or {},
        route_params=route or {},
        headers={"content-type": "application/json"},
        body=body,
    )


def queue_message(text: str | bytes, dequeue_count: int = 1) -> QueueMessage:
    return QueueMessage(id=secrets.token_hex(8), body=text, dequeue_count=dequeue_count)


@pytest.fixture(scope="session")
def graph() -> Iterator[GraphEmulator]:
    with graph_emulator() as emulator:
        yield emulator


@pytest.fixture(scope="session")
async def webhook() -> AsyncIterator[Webhook]:
    key = secrets.token_urlsafe(24)
    routes: dict[str, Handler] = {
        "notifications": notifications.graph_notifications,
        "lifecycle": notifications.graph_lifecycle,
    }

    async def serve(request: web.Request) -> web.Response:
        if request.query.get("code") != key:
            return web.Response(status=401)
        handler = routes[request.match_info["name"]]
        req = func.HttpRequest(
            request.method,
            str(request.url),
            headers=dict(request.headers),
            params=dict(request.query),
            body=await request.read(),
        )
        response = await handler(req)
        return web.Response(
            status=response.status_code,
            body=response.get_body(),
            headers={"Content-Type": response.mimetype or "text/plain"},
        )

    application = web.Application()
    application.router.add_post("/api/{name:notifications|lifecycle}", serve)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Webhook(f"http://127.0.0.1:{port}/api", key)
    finally:
        await runner.cleanup()


ADMIN_KEY = secrets.token_urlsafe(32)  # the admin API's credential in these tests (no App Service auth)


@pytest.fixture(scope="session")
def settings(graph: GraphEmulator) -> Settings:
    return Settings.from_env(
        {
            "GRAPH_BASE_URL": graph.base_url,
            "GRAPH_AUTH_MODE": "static-token",
            "GRAPH_STATIC_TOKEN": "function-tests",
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "CRM_BASE_URL": "http://127.0.0.1:9",
            "ADMIN_KEY": ADMIN_KEY,
        }
    )


@pytest.fixture(scope="session")
def graph_client(settings: Settings) -> GraphServiceClient:
    return build_graph_client(settings)


@dataclass
class App:
    """What one test's function calls run against, and what the test reads back."""

    state: InMemoryStateStore
    queue: InMemoryJobQueue
    crm: InMemoryCrm
    services: wiring.Services
    graph: GraphEmulator
    webhook: Webhook
    clock: Clock

    def jobs(self) -> list[Job]:
        """Every job on the queue (visible or delayed), oldest first, without taking them."""
        return [Job.from_json(m.text) for m in self.queue.messages]

    def take_messages(self) -> list[QueueMessage]:
        """Take every queued job as the queue trigger would hand it to the worker."""
        taken = [queue_message(m.text) for m in self.queue.messages]
        self.queue.messages.clear()
        return taken

    async def add_user(self, upn: str, **columns: Any) -> None:
        self.graph.control.add_user(upn)
        await self.state.put_config(upn, {"Enabled": True, **columns})

    def deliver(self, upn: str, **message: Any) -> dict[str, Any]:
        message.setdefault("from", {"address": "bob@fabrikam.example", "name": "Bob Buyer"})
        message.setdefault("to", [{"address": upn}])
        message.setdefault("subject", "Quote")
        message.setdefault("bodyHtml", "<p>Hello</p>")
        return self.graph.control.deliver(upn, message)

    def graph_subscriptions(self) -> dict[str, dict[str, Any]]:
        """The subscriptions the Graph emulator holds, by id."""
        listing = httpx.get(
            f"{self.graph.base_url}/subscriptions", headers={"Authorization": "Bearer admin"}, timeout=30
        )
        listing.raise_for_status()
        return {s["id"]: s for s in listing.json()["value"]}


@pytest.fixture
async def app(
    graph: GraphEmulator, webhook: Webhook, graph_client: GraphServiceClient, settings: Settings
) -> AsyncIterator[App]:
    graph.control.reset(empty=True)
    clock = Clock()
    state = InMemoryStateStore(clock=clock)
    queue = InMemoryJobQueue(clock=clock)
    crm = InMemoryCrm()
    caller = GraphCaller()
    mail = GraphMailReader(graph_client, caller)
    engine = Engine(
        state, queue, {"mail": MailStream(state, crm, mail, org_domains=(TENANT,), clock=clock)}, clock=clock
    )
    keeper = SubscriptionKeeper(
        state,
        GraphSubscriptions(graph_client, caller),
        queue,
        engine.streams,
        webhook_base_url=webhook.base_url,
        webhook_key=webhook.key,
        clock=clock,
    )
    services = wiring.Services(
        state, queue, crm, mail, engine, keeper, MailboxProbe(graph_client, caller), settings
    )
    wiring.use(services)
    try:
        yield App(state, queue, crm, services, graph, webhook, clock)
    finally:
        wiring.use(None)
        graph.control.clear_faults()
