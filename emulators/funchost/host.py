"""The host: indexes a FunctionApp and serves it (HTTP), schedules it (timers) and feeds it (queues).

Admin API (master key in `x-functions-key` or `code`, like the real host's):
- `GET /admin/host/ping`: 200 once the host runs (no key).
- `GET /admin/host/status`: `{"state": "Running", "errors": [...]}`.
- `GET /admin/functions`: every function with its trigger and, if it cannot run here, its error.
- `POST /admin/functions/<name>` with `{"input": "..."}`: run a timer (or queue) function now; 202
  at once like the real host. This host adds `?wait=true`: answer once the run ended (200, or 500
  if the function raised), so tests and the demo can fire a timer and then look at its effects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import azure.functions as func
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulators.funchost.config import HostConfig, Keys
from emulators.funchost.http import HttpFunctions, key_matches, supplied_key
from emulators.funchost.indexing import FunctionSpec, index
from emulators.funchost.invoke import Invoker, QueueClients
from emulators.funchost.queues import QueueListener
from emulators.funchost.timers import Timer

logger = logging.getLogger(__name__)

DRAIN_SECONDS = 3.0


def describe(spec: FunctionSpec) -> dict[str, Any]:
    info: dict[str, Any] = {"name": spec.name, "trigger": spec.kind}
    if spec.kind == "http" and spec.route is not None:
        info |= {"route": spec.route.template, "methods": sorted(spec.methods), "authLevel": spec.auth_level}
    elif spec.kind == "timer" and spec.schedule is not None:
        info |= {"schedule": spec.schedule.expression, "runOnStartup": spec.run_on_startup}
    elif spec.kind == "queue":
        info |= {"queueName": spec.queue_name, "connection": spec.connection}
    if spec.error:
        info["error"] = spec.error
    return info


def _report_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("a trigger loop stopped", exc_info=task.exception())


class FunctionHost:
    def __init__(
        self, app: func.FunctionApp, settings: Mapping[str, str], config: HostConfig, keys: Keys
    ) -> None:
        self.specs = index(app, settings)
        self.config = config
        self.keys = keys
        self.clients = QueueClients(config.queues.message_encoding)
        self.invoker = Invoker(self.clients, config.function_timeout)
        runnable = [s for s in self.specs if not s.error]
        self.timers = {s.name: Timer(s, self.invoker) for s in runnable if s.kind == "timer"}
        self.listeners = {
            s.name: QueueListener(s, self.invoker, self.clients, config.queues)
            for s in runnable
            if s.kind == "queue"
        }
        self.http = HttpFunctions(self.specs, self.invoker, keys, config.route_prefix)
        self._tasks: list[asyncio.Task[Any]] = []
        for spec in self.specs:
            if spec.error:
                logger.error("function %s cannot run in this host: %s", spec.name, spec.error)
            else:
                logger.info("function %s: %s", spec.name, describe(spec))

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        loops = [*(t.loop() for t in self.timers.values()), *(q.loop() for q in self.listeners.values())]
        self._tasks = [asyncio.create_task(c) for c in loops]
        for task in self._tasks:
            task.add_done_callback(_report_crash)
        try:
            yield
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for listener in self.listeners.values():
                await listener.drain(DRAIN_SECONDS)
            await self.clients.close()

    def _is_master(self, request: Request) -> bool:
        return key_matches(supplied_key(request), [self.keys.master])

    async def ping(self, request: Request) -> Response:
        return Response(status_code=200)

    async def status(self, request: Request) -> Response:
        if not self._is_master(request):
            return Response(status_code=401)
        errors = [f"{s.name}: {s.error}" for s in self.specs if s.error]
        return JSONResponse({"state": "Running", "errors": errors})

    async def functions(self, request: Request) -> Response:
        if not self._is_master(request):
            return Response(status_code=401)
        return JSONResponse([describe(s) for s in self.specs])

    async def invoke(self, request: Request) -> Response:
        if not self._is_master(request):
            return Response(status_code=401)
        name = request.path_params["name"]
        spec = next((s for s in self.specs if s.name.lower() == name.lower()), None)
        if spec is None:
            return Response(status_code=404)
        if spec.error or spec.kind not in {"timer", "queue"}:
            return JSONResponse(
                {"error": f"{spec.name} cannot be run through the admin API"}, status_code=400
            )
        body = await request.body()
        try:
            text = str(json.loads(body).get("input") or "") if body else ""
        except (ValueError, AttributeError):
            return JSONResponse({"error": 'the body must be {"input": "..."}'}, status_code=400)
        timer = self.timers.get(spec.name)
        run = timer.run("Manual") if timer else self._run_queue_function(spec, text)
        if request.query_params.get("wait", "").lower() != "true":
            task = asyncio.create_task(run)
            self._tasks.append(task)
            task.add_done_callback(self._tasks.remove)
            return Response(status_code=202)
        return Response(status_code=200 if await run else 500)

    async def _run_queue_function(self, spec: FunctionSpec, text: str) -> bool:
        try:
            await self.invoker.invoke(spec, func.QueueMessage(body=text.encode("utf-8")), "Manual")
            return True
        except Exception:
            return False

    def asgi(self) -> Starlette:
        routes = [
            Route("/admin/host/ping", self.ping, methods=["GET", "HEAD"]),
            Route("/admin/host/status", self.status, methods=["GET"]),
            Route("/admin/functions", self.functions, methods=["GET"]),
            Route("/admin/functions/{name}", self.invoke, methods=["POST"]),
            Route(
                "/{path:path}",
                self.http.handle,
                methods=sorted({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}),
            ),
        ]
        return Starlette(routes=routes, lifespan=self.lifespan)
