"""What a request meets before the Web API: the bearer token, Dataverse's service protection limits,
injected faults, and the request counts a test or benchmark reads.

Service protection (api-limits): per user (here: per bearer token) and per server, at most
`requests` requests and `execution_ms` milliseconds of execution in a sliding window of
`window_seconds`, and `concurrency` requests at once. Over a limit the answer is 429 with
`Retry-After` (whole seconds until the window frees enough) and the documented code and message. A
`$batch` counts as one request, its whole execution toward the time limit. Defaults are Dataverse's:
6,000 requests and 1,200,000 ms per 300 s, 52 at once; tests lower them through the control API.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any

from emulators.dataverse import errors
from emulators.dataverse.api import Reply


@dataclass
class Limits:
    requests: int = 6000
    execution_ms: int = 1_200_000
    window_seconds: float = 300.0
    concurrency: int = 52


@dataclass
class Fault:
    status: int
    count: int | None = 1  # None: until cleared
    method: str = ""
    path_contains: str = ""
    retry_after: str | None = None
    error_code: str = ""
    message: str = ""
    apply_then_fail: bool = False  # the write is applied, then answered with `status`
    delay_seconds: float = 0.0
    scope: str = "request"  # "request": the HTTP request; "operation": one operation inside a $batch
    body_contains: str = ""  # only requests whose body holds this text (e.g. a change set's boundary)

    def matches(self, method: str, path: str, scope: str, body: bytes = b"") -> bool:
        return (
            self.scope == scope
            and (not self.method or self.method.upper() == method)
            and self.path_contains in path
            and (not self.body_contains or self.body_contains.encode() in body)
        )

    def reply(self) -> Reply:
        code, message = self.error_code, self.message
        if not code:
            code = errors.REQUESTS_EXCEEDED[0] if self.status == 429 else "0x80040216"
        if not message:
            message = "Injected fault." if self.status != 429 else "Number of requests exceeded the limit."
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
        return Reply.error(errors.DataverseError(self.status, code, message, headers))


@dataclass
class _Usage:
    calls: deque[tuple[float, float]] = field(default_factory=deque)  # (ended at, execution ms)
    in_flight: int = 0


class Gate:
    def __init__(self) -> None:
        self.limits = Limits()
        self.latency_ms = 0.0  # added to every request (makes concurrency visible in tests)
        self.faults: list[Fault] = []
        self.denied_tokens: set[str] = set()
        self._usage: dict[str, _Usage] = {}
        self.clear_stats()

    # -- limits ----------------------------------------------------------------------------------

    def admit(self, principal: str) -> Reply | None:
        """A 429 when this principal is over a limit; otherwise the request is counted in flight."""
        usage = self._usage.setdefault(principal, _Usage())
        now = time.monotonic()
        window = self.limits.window_seconds
        while usage.calls and usage.calls[0][0] <= now - window:
            usage.calls.popleft()
        if usage.in_flight >= self.limits.concurrency:
            return self._throttled(
                "concurrency", errors.CONCURRENCY_EXCEEDED, 1, limit=self.limits.concurrency
            )
        if len(usage.calls) >= self.limits.requests:
            wait = usage.calls[0][0] + window - now
            return self._throttled(
                "requests", errors.REQUESTS_EXCEEDED, wait, limit=self.limits.requests, window=int(window)
            )
        spent = sum(ms for _, ms in usage.calls)
        if spent >= self.limits.execution_ms:
            freed, wait = 0.0, window
            for ended, ms in usage.calls:
                freed += ms
                if spent - freed < self.limits.execution_ms:
                    wait = ended + window - now
                    break
            return self._throttled(
                "execution", errors.TIME_EXCEEDED, wait, limit=self.limits.execution_ms, window=int(window)
            )
        usage.in_flight += 1
        return None

    def done(self, principal: str, execution_ms: float) -> None:
        usage = self._usage.setdefault(principal, _Usage())
        usage.in_flight = max(0, usage.in_flight - 1)
        usage.calls.append((time.monotonic(), execution_ms))

    def remaining(self, principal: str) -> dict[str, str]:
        """The `x-ms-ratelimit-*` headers (for debugging, as Dataverse says; not for flow control)."""
        usage = self._usage.get(principal, _Usage())
        spent = sum(ms for _, ms in usage.calls)
        return {
            "x-ms-ratelimit-burst-remaining-xrm-requests": str(
                max(0, self.limits.requests - len(usage.calls))
            ),
            "x-ms-ratelimit-time-remaining-xrm-requests": f"{max(0.0, self.limits.execution_ms - spent):.2f}",
        }

    def _throttled(self, name: str, template: tuple[str, str], wait: float, **values: Any) -> Reply:
        self.throttled[name] += 1
        seconds = str(max(1, math.ceil(wait)))
        error = errors.DataverseError(
            429, template[0], template[1].format(**values), {"Retry-After": seconds}
        )
        return Reply.error(error)

    # -- faults ----------------------------------------------------------------------------------

    def take_fault(self, method: str, path: str, scope: str, body: bytes = b"") -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path, scope, body):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                self.injected += 1
                return fault
        return None

    # -- counts ----------------------------------------------------------------------------------

    def count(self, route: str, status: int) -> None:
        self.by_route[route] += 1
        self.by_status[str(status)] += 1
        self.log.append({"route": route, "status": status})

    def forget_usage(self) -> None:
        self._usage.clear()

    def clear_stats(self) -> None:
        self.by_route: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.injected = 0
        self.log: deque[dict[str, Any]] = deque(maxlen=2000)

    def stats(self, operations: int) -> dict[str, Any]:
        return {
            "requests": sum(self.by_route.values()),
            "batchOperations": operations,
            "byRoute": dict(self.by_route),
            "byStatus": dict(self.by_status),
            "throttled": dict(self.throttled),
            "injected": self.injected,
        }

    def settings(self) -> dict[str, Any]:
        return {"limits": asdict(self.limits), "latencyMs": self.latency_ms}


def route_of(method: str, path: str) -> str:
    """`PATCH emails({id})/email_activity_parties`: a request's method and route, without values."""
    out = []
    depth, skip = 0, False
    for char in path.split("?", 1)[0]:
        if char == "(":
            depth += 1
            if depth == 1:
                out.append("({id})")
                skip = True
            continue
        if char == ")":
            depth -= 1
            if depth == 0:
                skip = False
            continue
        if not skip:
            out.append(char)
    return f"{method} {''.join(out)}"
