"""The emulator: one in-memory tenant behind Graph's request pipeline (auth, user, deny, faults,
throttling, latency, handler), served by Starlette. Graph lives under /v1.0, the control API under
/_emulator."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route

from emulators.graph import (
    batch,
    calendar,
    categories,
    contacts,
    control,
    mail,
    mailbox,
    sending,
    subscriptions,
    todo,
)
from emulators.graph.delta import SyncStates
from emulators.graph.protocol import GraphError, Request, Response
from emulators.graph.routing import Ctx, Router
from emulators.graph.store import Tenant
from emulators.graph.throttling import Faults, Throttle

logger = logging.getLogger(__name__)


@dataclass
class Config:
    concurrency: int = 4  # requests in flight per (app, mailbox); 0 = unlimited
    budget: int = 10_000  # requests per window per (app, mailbox); 0 = unlimited
    window: float = 600.0
    throttle_scope: str = "mailbox"  # or "app": the limits apply per app whatever the mailbox
    filter_cap: int = 5000  # a $filter'ed message delta round returns at most this many items
    latency_ms: int = 0  # added to every Graph request (makes concurrency limits reachable)
    latency_per_item_ms: float = 0.0  # added per item a response carries (a page of `value`, or one entity)
    duplicate_rate: float = 0.25  # share of change notifications Graph sends twice
    random_seed: int = 1
    notify_timeout: float = 3.0
    notify_retries: int = 3
    notify_retry_delay: float = 1.0
    validation_timeout: float = 10.0
    tasks_permission: str = "readwrite"  # the app's To Do role: readwrite, read (Tasks.Read.All) or none
    todo_due_change_duplicates: bool = False  # a recurring task's new due date leaves a second open task


# Named latency settings. "graph": what a Function App in an Azure region sees from Graph's Outlook
# endpoints, chosen at the low end of what is reported (no per-request figure is published), so that a
# ratio of engine time to bare read time measured under it is not flattered: see the README.
LATENCY_PROFILES: dict[str, dict[str, Any]] = {
    "off": {"latency_ms": 0, "latency_per_item_ms": 0.0},
    "graph": {"latency_ms": 100, "latency_per_item_ms": 2.0},
}


TASKS_PERMISSIONS = ("readwrite", "read", "none")


def flag(value: Any) -> bool:
    """A boolean setting from JSON or the command line ("true"/"false", "1"/"0")."""
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


def response_items(resp: Response) -> int:
    """How many items a response carries, for the per-item latency: a collection page's `value`, or one
    entity; none for errors, empty bodies and the $batch envelope (its sub-requests pay their own)."""
    body = resp.body
    if resp.status >= 300 or not isinstance(body, dict):
        return 0
    value = body.get("value")
    if isinstance(value, list):
        return len(value)
    return 0 if "responses" in body else 1


class Stats:
    def __init__(self) -> None:
        self.total = 0
        self.batch_sub_requests = 0  # $batch sub-requests (also in total; not HTTP requests of their own)
        self.by_route: Counter[str] = Counter()
        self.by_user: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.log: deque[dict[str, Any]] = deque(maxlen=5000)

    def record(self, method: str, template: str, user: str, status: int, in_batch: bool) -> None:
        self.total += 1
        self.batch_sub_requests += in_batch
        self.by_route[f"{method} {template}"] += 1
        if user:
            self.by_user[user] += 1
        self.by_status[str(status)] += 1
        self.log.append(
            {"method": method, "route": template, "user": user, "status": status, "batch": in_batch}
        )


class Emulator:
    def __init__(self, config: Config | None = None, seed: Path | None = None) -> None:
        self.config = config or Config()
        self.seed = seed
        self.router = Router()
        for module in (batch, mail, sending, mailbox, contacts, calendar, categories, todo, subscriptions):
            module.routes(self.router)
        self.control = Router()
        control.routes(self.control)
        self.notifier = subscriptions.Notifier(self)
        self.reset()

    def reset(self, *, empty: bool = False) -> None:
        self.tenant = Tenant()
        self.states = SyncStates(self.tenant.epoch)
        self.throttle = Throttle(self.config.concurrency, self.config.budget, self.config.window)
        self.faults = Faults()
        self.stats = Stats()
        self.notifier.reset()
        if self.seed is not None and not empty:
            from emulators.graph.sample import load

            load(self.tenant, json.loads(self.seed.read_text()))

    def settings(self) -> dict[str, Any]:
        return asdict(self.config)

    def apply_settings(self, changes: dict[str, Any]) -> None:
        profile = changes.get("latency_profile")
        if profile is not None:
            if profile not in LATENCY_PROFILES:
                raise GraphError(400, "BadRequest", f"Unknown latency profile {profile}.")
            changes = {
                **LATENCY_PROFILES[profile],
                **{k: v for k, v in changes.items() if k != "latency_profile"},
            }
        for k, v in changes.items():
            if not hasattr(self.config, k):
                raise GraphError(400, "BadRequest", f"Unknown setting {k}.")
            if k == "tasks_permission" and v not in TASKS_PERMISSIONS:
                raise GraphError(400, "BadRequest", f"tasks_permission must be one of {TASKS_PERMISSIONS}.")
        for k, v in changes.items():
            kind = type(getattr(self.config, k))
            setattr(self.config, k, flag(v) if kind is bool else kind(v))
        self.throttle.concurrency = self.config.concurrency
        self.throttle.budget = self.config.budget
        self.throttle.window = self.config.window

    async def handle(self, req: Request, *, in_batch: bool = False) -> Response:
        """Graph's pipeline for one request (or one $batch sub-request)."""
        template, user_label, status = "?", "", 500
        try:
            resp = await self._handle(req, in_batch)
        except GraphError as err:
            resp = err.response()
        except Exception:  # an emulator bug must still answer like a server, and show up in tests
            logger.exception("unhandled error in %s %s", req.method, req.path.split("?")[0])
            resp = GraphError(500, "InternalServerError", "The emulator failed.").response()
        status = resp.status
        template = resp.headers.pop("X-Route", "?")
        user_label = resp.headers.pop("X-User", "")
        self.stats.record(req.method, template, user_label, status, in_batch)
        return resp

    async def _handle(self, req: Request, in_batch: bool) -> Response:
        try:
            route, params = self.router.match(req.method, req.path)
        except GraphError as err:
            resp = err.response()
            return resp
        labels = {"X-Route": route.template}
        try:
            auth = req.headers.get("authorization", "")
            if not in_batch and (not auth.lower().startswith("bearer ") or not auth[7:].strip()):
                raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
            ctx = Ctx(req, self, params)
            key = auth[7:].strip()
            if "user" in params:
                ctx.user = self.tenant.user(params["user"])
                labels["X-User"] = ctx.user.upn
                if ctx.user.denied and "/todo" not in route.template:  # scoping leaves To Do out
                    raise GraphError(403, "ErrorAccessDenied", "Access to OData is disabled.")
                if self.config.throttle_scope != "app":
                    key += "|" + ctx.user.id
            target = req.path + (
                "?" + "&".join(f"{k}={v}" for k, v in req.query.items()) if req.query else ""
            )
            self.faults.check(req.method, target)
            throttled = "user" in params or self.config.throttle_scope == "app"
            if throttled:
                self.throttle.admit(key)
            try:
                if self.config.latency_ms:
                    await asyncio.sleep(self.config.latency_ms / 1000)
                result = route.handler(ctx)
                resp = await result if inspect.isawaitable(result) else result
                per_item = self.config.latency_per_item_ms * response_items(resp)
                if per_item:
                    await asyncio.sleep(per_item / 1000)
            finally:
                if throttled:
                    self.throttle.release(key)
        except GraphError as err:
            resp = err.response()
        resp.headers.update(labels)
        return resp

    async def handle_control(self, req: Request) -> Response:
        try:
            route, params = self.control.match(req.method, req.path)
            result = route.handler(Ctx(req, self, params))
            return await result if inspect.isawaitable(result) else result
        except GraphError as err:
            return err.response()


def create_app(emu: Emulator) -> Starlette:
    async def endpoint(request: StarletteRequest) -> StarletteResponse:
        path = request.url.path
        host = request.headers.get("host", f"{request.url.hostname}:{request.url.port}")
        base = f"{request.url.scheme}://{host}/v1.0"
        req = Request(
            method=request.method,
            path="",
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
            base_url=base,
        )
        if path.startswith("/v1.0/") or path == "/v1.0":
            req.path = path[len("/v1.0") :]
            resp = await emu.handle(req)
        elif path.startswith("/_emulator/"):
            req.path = path[len("/_emulator") :]
            resp = await emu.handle_control(req)
        elif path == "/" or path == "/health":
            resp = Response(200, {"status": "ok"})
        else:
            resp = GraphError(404, "NotFound", "Only /v1.0 and /_emulator are served.").response()
        content, ctype = resp.encoded()
        headers = dict(resp.headers)
        headers.pop("Content-Type", None)
        if ctype:
            headers["Content-Type"] = ctype
        return StarletteResponse(content, status_code=resp.status, headers=headers)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await emu.notifier.start()
        try:
            yield
        finally:
            await emu.notifier.stop()

    methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)], lifespan=lifespan)
