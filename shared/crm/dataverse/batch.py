"""`$batch` bodies as the Dataverse Web API reads and writes them (multipart/mixed, CRLF line ends).

Pure: `BatchBody` serialises reads (GET parts outside any change set) and change sets (atomic groups
of writes whose operations may refer to an earlier one of the same set as `$<Content-ID>`); `parse`
turns the answer into one `PartResult` per operation, in order, with the change set each belongs to.
A change set's boundary names its table (`changeset_emails_…`), which makes a batch's writes easy to
tell apart in request logs and fault injection.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

CRLF = "\r\n"
MAX_OPERATIONS = 1000  # Dataverse's limit per $batch


@dataclass(frozen=True)
class Operation:
    method: str
    url: str  # absolute, or `$n` for the result of operation n of the same change set
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    content_id: str = ""


@dataclass
class ChangeSet:
    table: str
    operations: list[Operation] = field(default_factory=list)
    _next: int = 1

    def add(self, method: str, url: str, body: Any = None, **headers: str) -> str:
        """Add an operation; returns its `$n` reference."""
        content_id = f"{self._next}"
        self._next += 1
        pairs = tuple((k.replace("_", "-"), v) for k, v in headers.items())
        self.operations.append(Operation(method, url, body, pairs, content_id))
        return f"${content_id}"


@dataclass
class BatchBody:
    items: list[Operation | ChangeSet] = field(default_factory=list)

    def get(self, url: str, **headers: str) -> int:
        """Add a read; returns its index among the batch's results."""
        self.items.append(
            Operation("GET", url, None, tuple((k.replace("_", "-"), v) for k, v in headers.items()))
        )
        return self.size() - 1

    def changeset(self, table: str) -> ChangeSet:
        changeset = ChangeSet(table)
        self.items.append(changeset)
        return changeset

    def size(self) -> int:
        return sum(len(i.operations) if isinstance(i, ChangeSet) else 1 for i in self.items)

    def render(self) -> tuple[str, bytes]:
        """(Content-Type, body)."""
        boundary = f"batch_{uuid.uuid4().hex}"
        out: list[str] = []
        for item in self.items:
            if isinstance(item, ChangeSet):
                inner = f"changeset_{item.table}_{uuid.uuid4().hex}"
                out.append(f"--{boundary}{CRLF}Content-Type: multipart/mixed; boundary={inner}{CRLF}{CRLF}")
                out += [f"--{inner}{CRLF}{_part(op)}" for op in item.operations]
                out.append(f"--{inner}--{CRLF}")
            else:
                out.append(f"--{boundary}{CRLF}{_part(item)}")
        out.append(f"--{boundary}--{CRLF}")
        return f"multipart/mixed; boundary={boundary}", "".join(out).encode("utf-8")


def _part(op: Operation) -> str:
    head = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if op.content_id:
        head.append(f"Content-ID: {op.content_id}")
    request = [f"{op.method} {op.url} HTTP/1.1"]
    body = ""
    if op.body is not None:
        request.append("Content-Type: application/json; type=entry")
        body = json.dumps(op.body, ensure_ascii=False, separators=(",", ":"))
    request += [f"{k}: {v}" for k, v in op.headers]
    return CRLF.join(head) + CRLF + CRLF + CRLF.join(request) + CRLF + CRLF + body + CRLF


@dataclass(frozen=True)
class PartResult:
    status: int
    headers: dict[str, str]
    body: Any  # parsed JSON, or None
    changeset: int  # index of the change set among the batch's items (-1 for a read outside any)
    item: int  # index of the item (read or change set) this result belongs to

    @property
    def error(self) -> tuple[str, str]:
        """(Dataverse's error code, its message) of a failed operation."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        if not isinstance(error, dict):
            return "", ""
        return str(error.get("code") or ""), str(error.get("message") or "")


def _boundary(content_type: str) -> str:
    match = re.search(r'boundary="?([^";,\s]+)"?', content_type, re.I)
    return match.group(1) if match else ""


def _split(text: str, boundary: str) -> list[tuple[dict[str, str], str]]:
    chunks = text.split(f"--{boundary}")
    out = []
    for chunk in chunks[1:]:
        if chunk.startswith("--"):
            break
        chunk = chunk.removeprefix(CRLF).removesuffix(CRLF)
        head, _, body = chunk.partition(CRLF + CRLF)
        headers = {}
        for line in head.split(CRLF):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        out.append((headers, body))
    return out


def _response(text: str, changeset: int, item: int) -> PartResult:
    head, _, body = text.partition(CRLF + CRLF)
    lines = head.split(CRLF)
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    try:
        parsed = json.loads(body) if body.strip() else None
    except ValueError:
        parsed = None
    return PartResult(status, headers, parsed, changeset, item)


def parse(content_type: str, body: bytes) -> list[PartResult]:
    """The results of a multipart `$batch` answer, in order. A change set that failed answers with
    its failing operation only."""
    text = body.decode("utf-8", errors="replace")
    results: list[PartResult] = []
    for index, (headers, part) in enumerate(_split(text, _boundary(content_type))):
        kind = headers.get("content-type", "")
        if kind.startswith("multipart/mixed"):
            for _, inner in _split(part + CRLF, _boundary(kind)):
                results.append(_response(inner, index, index))
        else:
            results.append(_response(part, -1, index))
    return results
