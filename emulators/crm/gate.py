"""What happens to a request before it reaches the API: it is counted, authenticated, and may meet
an injected fault (a status, a Retry-After, a delay, or a write applied and then answered with 5xx).

The HTML page `/` is neither counted nor authenticated; the control API `/_crm/...` is authenticated
but neither counted nor faulted.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass
class Fault:
    status: int | None
    count: int | None  # None: until cleared
    method: str = ""
    path_contains: str = ""
    retry_after: str | None = None
    delay_seconds: float = 0.0
    apply_then_fail: bool = False
    message: str = "injected fault"

    def matches(self, method: str, path: str) -> bool:
        return (not self.method or self.method.upper() == method) and self.path_contains in path

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Fault:
        retry_after = doc.get("retryAfter")
        if doc.get("count", 1) is not None and int(doc.get("count", 1)) < 1:
            raise ValueError("count must be at least 1 (or null: until cleared)")
        return cls(
            status=int(doc["status"]) if doc.get("status") is not None else None,
            count=int(doc["count"]) if doc.get("count", 1) is not None else None,
            method=str(doc.get("method") or ""),
            path_contains=str(doc.get("pathContains") or ""),
            retry_after=None if retry_after is None else str(retry_after),
            delay_seconds=float(doc.get("delaySeconds") or 0.0),
            apply_then_fail=bool(doc.get("applyThenFail", False)),
            message=str(doc.get("message") or "injected fault"),
        )


class Controls:
    """The state the control API changes: faults and request counts."""

    def __init__(self, token: str) -> None:
        self.token = token.encode()
        self.faults: list[Fault] = []
        self.by_route: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.journal_writes = 0  # journals sent to be written: one per PUT, one per item of a bulk

    def take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    def authorised(self, headers: dict[bytes, bytes]) -> bool:
        auth = headers.get(b"authorization", b"")
        given = auth[7:] if auth[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
        return bool(given) and hmac.compare_digest(given, self.token)

    def stats(self) -> dict[str, Any]:
        return {
            "total": sum(self.by_route.values()),
            "byRoute": dict(self.by_route),
            "byStatus": dict(self.by_status),
            "journalWrites": self.journal_writes,
        }

    def clear_stats(self) -> None:
        self.by_route.clear()
        self.by_status.clear()
        self.journal_writes = 0


async def send_error(
    send: Send, status: int, code: str, message: str, retry_after: str | None = None
) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _template(routes: list[Any], scope: Scope) -> str:
    for route in routes:
        if isinstance(route, Route) and route.matches(scope)[0] == Match.FULL:
            return re.sub(r":\w+}", "}", route.path)
    return "(unmatched)"


class Gate:
    def __init__(self, app: ASGIApp, controls: Controls, routes: list[Any]) -> None:
        self.app, self.controls, self.routes = app, controls, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path == "/":
            await self.app(scope, receive, send)
            return
        if not self.controls.authorised(dict(scope["headers"])):
            await send_error(send, 401, "unauthorized", "missing or wrong credentials (Bearer or X-API-Key)")
            return
        if path.startswith("/_crm/"):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        route = f"{method} {_template(self.routes, scope)}"
        self.controls.by_route[route] += 1
        if route == "PUT /journals/{key}":
            self.controls.journal_writes += 1
        status: list[int] = []

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                self.controls.by_status[str(message["status"])] += 1
            await send(message)

        fault = self.controls.take_fault(method, path)
        if fault is not None:
            await self._inject(fault, scope, receive, counted)
        else:
            await self.app(scope, receive, counted)

    async def _inject(self, fault: Fault, scope: Scope, receive: Receive, send: Send) -> None:
        if fault.delay_seconds:
            await asyncio.sleep(fault.delay_seconds)
        if fault.status is None:
            await self.app(scope, receive, send)
            return
        if fault.apply_then_fail:

            async def discard(message: Message) -> None:
                return None

            await self.app(scope, receive, discard)
        code = "throttled" if fault.status == 429 else "injected"
        await send_error(send, fault.status, code, fault.message, fault.retry_after)
