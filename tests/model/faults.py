"""What the in-memory Graph fakes share: injected faults answered as Graph answers them (raised as the
SDK's `APIError`, translated by the product's own `GraphCaller`), and opaque delta links."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.model.mailbox import _CODES, _api_error, _decode, _encode

__all__ = ["Faults", "api_error", "decode", "encode"]


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
                raise _api_error(fault.status, fault.code or _CODES.get(fault.status, ""), headers)
        if user.lower() in self.denied:
            raise _api_error(403, "ErrorAccessDenied")


def api_error(status: int, code: str) -> Any:
    return _api_error(status, code)


def encode(token: dict[str, Any]) -> str:
    return _encode(token)


def decode(link: str) -> dict[str, Any]:
    return _decode(link)
