"""The emulator's request/response records, Graph's error body, Prefer parsing and date helpers."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class Request:
    method: str
    path: str  # after /v1.0, e.g. /users/x/mailFolders/inbox
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""
    base_url: str = ""  # http://127.0.0.1:PORT/v1.0

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise GraphError(400, "BadRequest", "Invalid JSON in request body.") from exc

    @property
    def prefer(self) -> dict[str, str]:
        return parse_prefer(self.headers.get("prefer", ""))


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-able, or bytes for a raw body
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, str]:
        if self.body is None:
            return b"", ""
        if isinstance(self.body, bytes):
            return self.body, self.headers.get("Content-Type", "text/plain")
        return json.dumps(self.body, separators=(",", ":")).encode(), "application/json"


class GraphError(Exception):
    """Answered with Graph's error body: {"error": {"code", "message", "innerError": {...}}}."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> Response:
        return Response(self.status, error_body(self.status, self.code, self.message), dict(self.headers))


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    now = iso(utcnow())
    request_id = str(uuid.uuid4())
    inner: dict[str, Any] = {"date": now, "request-id": request_id, "client-request-id": request_id}
    if status == 429:
        inner.update(code="429", message="Please retry after", status="429")
    return {"error": {"code": code, "message": message, "innerError": inner}}


def not_found(what: str = "item") -> GraphError:
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


_PREFER_PART = re.compile(r'\s*([^=,\s]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^,]*))?\s*(?:,|$)')


def parse_prefer(header: str) -> dict[str, str]:
    """`odata.maxpagesize=10, IdType="ImmutableId"` -> {"odata.maxpagesize": "10", "idtype": "ImmutableId"}.
    Names are lower-cased; several Prefer headers arrive comma-joined."""
    out: dict[str, str] = {}
    for m in _PREFER_PART.finditer(header):
        if not m.group(1):
            continue
        value = (m.group(2) or "").strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = value[1:-1]
        out[m.group(1).lower()] = value
    return out


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(dt: datetime) -> str:
    """Graph's DateTimeOffset form: 2026-01-02T03:04:05Z."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_dt(value: str) -> datetime:
    """ISO 8601 with or without offset; no offset means UTC."""
    v = value.strip().replace("Z", "+00:00")
    if "." in v:  # 2026-01-01T10:00:00.0000000 -> at most microseconds
        head, _, rest = v.partition(".")
        digits = re.match(r"\d*", rest)
        frac = digits.group(0) if digits else ""
        v = head + "." + frac[:6].ljust(6, "0") + rest[len(frac) :]
    try:
        dt = datetime.fromisoformat(v)
    except ValueError as exc:
        raise GraphError(400, "ErrorInvalidParameter", f"The value '{value}' is not a valid date.") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
