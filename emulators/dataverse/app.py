"""The stand-in's HTTP surface: the Web API under `/api/data/v9.2/` (bearer token required) and the
control API under `/_dataverse/` (what Dataverse itself cannot do: faults, limits, stats, settings,
token expiry, reset; no auth, loopback only).

Control API (docs/connectors.md §8.1 has the full table): `GET /health`; `GET`/`DELETE
/_dataverse/stats` (requests by route and status: a `$batch` is one request, `batchOperations` counts
what ran inside); `GET /_dataverse/requests` (recent method, route, status; no values);
`POST`/`DELETE /_dataverse/faults` (the next matching requests, by method, path and body text, or
`$batch` operations with scope `operation`, answer a status); `GET`/`PATCH /_dataverse/settings`
(service protection limits, added latency, the largest page, whether a second email with a used
`messageid` is refused); `POST /_dataverse/expire-tokens` (change-tracking tokens issued so far
expire); `POST /_dataverse/deny-token` (that bearer token gets 401); `POST /_dataverse/reset`.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulators.dataverse import errors
from emulators.dataverse.api import API_PATH, Call, Reply, WebApi
from emulators.dataverse.batch import Batch
from emulators.dataverse.gate import Fault, Gate, Limits, route_of
from emulators.dataverse.store import Store

ALL_METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE"]


class StandIn:
    def __init__(self, db_path: str = ":memory:", *, page_cap: int = 5000) -> None:
        self.api = WebApi(Store(db_path), page_cap=page_cap)
        self.gate = Gate()
        self.batch = Batch(self.api, self._operation_fault)
        self.default_page_cap = page_cap

    def _operation_fault(self, method: str, path: str) -> tuple[Reply, bool] | None:
        fault = self.gate.take_fault(method, path, "operation")
        return None if fault is None else (fault.reply(), fault.apply_then_fail)

    async def serve(self, request: Request) -> Response:
        raw = str(request.scope["path"])  # percent-decoded, so a key segment reads as written
        path = raw.split(API_PATH, 1)[1] if API_PATH in raw else ""
        query = bytes(request.scope.get("query_string", b"")).decode("latin-1")
        headers = {k.lower(): v for k, v in request.headers.items()}
        base = f"{request.url.scheme}://{request.url.netloc}{API_PATH}"
        call = Call(request.method, path, query, headers, await request.body(), base)
        route = route_of(request.method, path)
        token = _bearer(headers)
        if not token or token in self.gate.denied_tokens:
            reply = Reply.error(errors.unauthorized(f"{request.url.scheme}://{request.url.netloc}"))
            self.gate.count(route, reply.status)
            return _response(reply)
        reply = await self._admitted(call, token, route)
        self.gate.count(route, reply.status)
        return _response(reply, self.gate.remaining(token))

    async def _admitted(self, call: Call, token: str, route: str) -> Reply:
        throttled = self.gate.admit(token)
        if throttled is not None:
            return throttled
        started = time.perf_counter()
        try:
            fault = self.gate.take_fault(call.method, call.path, "request", call.body)
            if fault is not None and fault.delay_seconds:
                await asyncio.sleep(fault.delay_seconds)
            if self.gate.latency_ms:
                await asyncio.sleep(self.gate.latency_ms / 1000)
            if fault is not None and not fault.apply_then_fail:
                return fault.reply()
            reply = self._run(call)
            return reply if fault is None else fault.reply()
        finally:
            self.gate.done(token, (time.perf_counter() - started) * 1000)

    def _run(self, call: Call) -> Reply:
        if call.path == "$batch" and call.method == "POST":
            try:
                return self.batch.run(call)
            except errors.DataverseError as error:
                return Reply.error(error)
        return self.api.handle(call)

    # -- control ---------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        return {
            **self.gate.settings(),
            "pageCap": self.api.listing.page_cap,
            "rejectDuplicateMessageId": self.api.options.reject_duplicate_messageid,
        }

    def apply_settings(self, body: dict[str, Any]) -> None:
        limits = body.get("limits") or {}
        for name, attribute in (
            ("requests", "requests"),
            ("executionMs", "execution_ms"),
            ("windowSeconds", "window_seconds"),
            ("concurrency", "concurrency"),
        ):
            if name in limits:
                setattr(self.gate.limits, attribute, type(getattr(self.gate.limits, attribute))(limits[name]))
        if "latencyMs" in body:
            self.gate.latency_ms = float(body["latencyMs"])
        if "pageCap" in body:
            self.api.listing.page_cap = max(1, int(body["pageCap"]))
        if "rejectDuplicateMessageId" in body:
            self.api.options.reject_duplicate_messageid = bool(body["rejectDuplicateMessageId"])

    def reset(self) -> None:
        self.api.store.reset()
        self.api.seed()
        self.gate.faults.clear()
        self.gate.denied_tokens.clear()
        self.gate.limits = Limits()
        self.gate.forget_usage()
        self.gate.latency_ms = 0.0
        self.gate.clear_stats()
        self.batch.operations = 0
        self.api.listing.page_cap = self.default_page_cap
        self.api.options.reject_duplicate_messageid = False


def _bearer(headers: dict[str, str]) -> str:
    value = headers.get("authorization", "")
    return value[7:].strip() if value[:7].lower() == "bearer " else ""


def _response(reply: Reply, extra: dict[str, str] | None = None) -> Response:
    headers = {"OData-Version": "4.0", **reply.headers, **(extra or {})}
    return Response(reply.body, status_code=reply.status, headers=headers)


async def _json(request: Request) -> dict[str, Any]:
    try:
        value = json.loads(await request.body() or b"{}")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise errors.bad_request("The control API takes a JSON object.")
    return value


def create_app(stand_in: StandIn) -> Starlette:
    async def api(request: Request) -> Response:
        return await stand_in.serve(request)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def stats(request: Request) -> Response:
        if request.method == "DELETE":
            stand_in.gate.clear_stats()
            stand_in.batch.operations = 0
        return JSONResponse(stand_in.gate.stats(stand_in.batch.operations))

    async def requests(request: Request) -> Response:
        return JSONResponse({"value": list(stand_in.gate.log)})

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            stand_in.gate.faults.clear()
            return Response(status_code=204)
        body = await _json(request)
        try:
            fault = Fault(
                status=int(body["status"]),
                count=None if body.get("count", 1) is None else int(body.get("count", 1)),
                method=str(body.get("method") or ""),
                path_contains=str(body.get("pathContains") or ""),
                retry_after=None if body.get("retryAfter") is None else str(body["retryAfter"]),
                error_code=str(body.get("errorCode") or ""),
                message=str(body.get("message") or ""),
                apply_then_fail=bool(body.get("applyThenFail", False)),
                delay_seconds=float(body.get("delaySeconds") or 0.0),
                scope=str(body.get("scope") or "request"),
                body_contains=str(body.get("bodyContains") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            return JSONResponse({"error": f"bad fault: {exc}"}, status_code=400)
        stand_in.gate.faults.append(fault)
        return JSONResponse({"pending": len(stand_in.gate.faults)}, status_code=201)

    async def settings(request: Request) -> Response:
        if request.method == "PATCH":
            stand_in.apply_settings(await _json(request))
        return JSONResponse(stand_in.settings())

    async def expire(request: Request) -> Response:
        stand_in.api.store.expire_tokens()
        return Response(status_code=204)

    async def deny(request: Request) -> Response:
        stand_in.gate.denied_tokens.add(str((await _json(request)).get("token", "")))
        return Response(status_code=204)

    async def reset(request: Request) -> Response:
        stand_in.reset()
        return Response(status_code=204)

    return Starlette(
        routes=[
            Route(API_PATH + "{path:path}", api, methods=ALL_METHODS),
            Route("/health", health, methods=["GET"]),
            Route("/_dataverse/stats", stats, methods=["GET", "DELETE"]),
            Route("/_dataverse/requests", requests, methods=["GET"]),
            Route("/_dataverse/faults", faults, methods=["POST", "DELETE"]),
            Route("/_dataverse/settings", settings, methods=["GET", "PATCH"]),
            Route("/_dataverse/expire-tokens", expire, methods=["POST"]),
            Route("/_dataverse/deny-token", deny, methods=["POST"]),
            Route("/_dataverse/reset", reset, methods=["POST"]),
        ]
    )
