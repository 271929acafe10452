"""Per-mailbox throttling as Outlook does it: at most N requests in flight per (app, mailbox) and a request
budget per 10 minutes; injected faults (the next `count` matching requests fail a chosen way)."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from emulators.graph.protocol import GraphError


class Throttle:
    def __init__(self, concurrency: int = 4, budget: int = 10_000, window: float = 600.0) -> None:
        self.concurrency = concurrency
        self.budget = budget
        self.window = window
        self.in_flight: dict[str, int] = {}
        self.history: dict[str, deque[float]] = {}
        self.throttled = {"concurrency": 0, "budget": 0}

    def admit(self, key: str) -> None:
        """Count the request and take a concurrency slot, or raise the 429 Outlook would answer."""
        now = time.monotonic()
        hist = self.history.setdefault(key, deque())
        while hist and hist[0] <= now - self.window:
            hist.popleft()
        if self.budget and len(hist) >= self.budget:
            self.throttled["budget"] += 1
            wait = max(1, math.ceil(hist[0] + self.window - now))
            raise GraphError(429, "TooManyRequests", "Please retry again later.", {"Retry-After": str(wait)})
        hist.append(now)
        if self.concurrency and self.in_flight.get(key, 0) >= self.concurrency:
            self.throttled["concurrency"] += 1
            raise GraphError(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
                {"Retry-After": "1"},
            )
        self.in_flight[key] = self.in_flight.get(key, 0) + 1

    def release(self, key: str) -> None:
        self.in_flight[key] -= 1


DEFAULT_CODES = {
    400: "BadRequest",
    401: "InvalidAuthenticationToken",
    403: "ErrorAccessDenied",
    404: "ErrorItemNotFound",
    410: "SyncStateNotFound",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "serviceNotAvailable",
    504: "GatewayTimeout",
    509: "BandwidthLimitExceeded",
}
DEFAULT_MESSAGES = {
    410: "The sync state generation is not found; generation=0;[highest=0].",
    429: "Please retry again later.",
    503: "The service is temporarily unavailable. Please retry later.",
    504: "The gateway timed out.",
}


@dataclass
class Fault:
    status: int
    count: int
    method: str = ""
    path_contains: str = ""
    retry_after: str | None = None
    error_code: str = ""
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # e.g. a Location on a 410 resync
    served: int = field(default=0)

    def matches(self, method: str, target: str) -> bool:
        return (not self.method or self.method.upper() == method) and self.path_contains in target

    def error(self) -> GraphError:
        headers = {"Retry-After": self.retry_after} if self.retry_after not in (None, "") else {}
        headers.update(self.headers)
        code = self.error_code or DEFAULT_CODES.get(self.status, "UnknownError")
        message = self.message or DEFAULT_MESSAGES.get(self.status, f"Injected failure {self.status}.")
        return GraphError(self.status, code, message, headers)


class Faults:
    def __init__(self) -> None:
        self.pending: list[Fault] = []
        self.injected = 0

    def add(self, fault: Fault) -> None:
        self.pending.append(fault)

    def check(self, method: str, target: str) -> None:
        for f in self.pending:
            if f.served < f.count and f.matches(method, target):
                f.served += 1
                self.injected += 1
                if f.served >= f.count:
                    self.pending.remove(f)
                raise f.error()
