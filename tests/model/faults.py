"""What the in-memory Graph fakes share (`InMemoryMailboxes`, `InMemoryContacts`, `InMemoryCalendar`):
injected faults answered as Graph answers them (raised as the SDK's `APIError`, translated by the
product's own `GraphCaller`), a denied mailbox's 403, opaque delta links, and expiring sync states."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from kiota_abstractions.api_error import APIError

SCHEME = "memdelta:"
_CODES = {
    429: "ApplicationThrottled",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
    410: "SyncStateNotFound",
}


@dataclass
class _Fault:
    status: int
    count: int
    operation: str  # a port method name ("read_page", "create" ...) or "*"
    retry_after: str | None
    code: str


class Faults:
    def __init__(self) -> None:
        self._faults: list[_Fault] = []
        self.denied: set[str] = set()

    def add(
        self,
        status: int,
        *,
        count: int = 1,
        operation: str = "*",
        retry_after: str | None = None,
        code: str = "",
    ) -> None:
        self._faults.append(_Fault(status, count, operation, retry_after, code))

    def clear(self) -> None:
        self._faults.clear()

    def gate(self, user: str, operation: str) -> None:
        """Raise the first pending fault for `operation` (or a denied mailbox's 403)."""
        for fault in self._faults:
            if fault.operation in ("*", operation):
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                raise api_error(fault.status, fault.code or _CODES.get(fault.status, ""), headers)
        if user.lower() in self.denied:
            raise api_error(403, "ErrorAccessDenied")


class FakeGraph:
    """The test-side controls every fake has: faults, and sync states that can be expired."""

    _states: dict[str, Any]  # each fake's sync states by id: records with `user` and `expired`

    def __init__(self) -> None:
        self.faults = Faults()

    def fault(
        self,
        status: int,
        *,
        count: int = 1,
        operation: str = "*",
        retry_after: str | None = None,
        code: str = "",
    ) -> None:
        """The next `count` calls of `operation` (a port method, or "*") answer `status` (with
        `Retry-After` when given)."""
        self.faults.add(status, count=count, operation=operation, retry_after=retry_after, code=code)

    def clear_faults(self) -> None:
        self.faults.clear()

    def expire_delta_tokens(self, upn: str) -> int:
        expired = 0
        for state in self._states.values():
            if state.user == upn.lower() and not state.expired:
                state.expired = True
                expired += 1
        return expired

    @staticmethod
    def position(link: str) -> tuple[str, int]:
        """(sync state, change-log position) a link resumes from; ("", 0) for a new round."""
        if not link:
            return "", 0
        token = decode(link)
        return str(token["s"]), int(token["p"])


class _ODataError:
    def __init__(self, code: str) -> None:
        self.code = code
        self.message = code


def api_error(status: int, code: str, headers: dict[str, str] | None = None) -> APIError:
    error = APIError(f"Graph answered {status}", status, headers or {})
    error.error = _ODataError(code)  # type: ignore[attr-defined]
    return error


def encode(token: dict[str, Any]) -> str:
    raw = json.dumps(token, separators=(",", ":")).encode()
    return SCHEME + base64.urlsafe_b64encode(raw).decode()


def decode(link: str) -> dict[str, Any]:
    if not link.startswith(SCHEME):
        raise api_error(400, "ErrorInvalidUrlQuery")
    try:
        token: dict[str, Any] = json.loads(base64.urlsafe_b64decode(link[len(SCHEME) :]))
    except ValueError:
        raise api_error(400, "ErrorInvalidUrlQuery") from None
    return token
