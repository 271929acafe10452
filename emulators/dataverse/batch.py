"""`POST /$batch`: many operations in one HTTP request, as multipart/mixed.

Each part is either one operation (`Content-Type: application/http`: a request line, headers, a
blank line, a body) or a change set (a nested multipart/mixed whose operations are atomic: all are
applied or none). Every line ends in CRLF; a body without the final CRLF is refused as Dataverse does
("Stream was not readable"). In a change set, `Content-ID: n` names an operation's result, which
later operations of the same change set use as `$n` (in the URL or an `@odata.bind`); a reference to
an id not yet declared is refused. At most 1,000 operations. Without `Prefer: odata.continue-on-error`
the batch stops at the first failed operation and answers 400 (with the responses so far); with it,
every operation runs and the batch answers 200. GET is not allowed inside a change set.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

from emulators.dataverse import errors
from emulators.dataverse.api import API_PATH, Call, Reply, WebApi
from emulators.dataverse.listing import prefer
from emulators.dataverse.schema import TABLES

MAX_OPERATIONS = 1000
CRLF = "\r\n"

# Given the method and resource path of one operation: an injected fault's reply and whether the
# operation is applied first (an ambiguous write), or None.
FaultHook = Callable[[str, str], tuple[Reply, bool] | None]


@dataclass
class Operation:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None


class _Failed(Exception):
    def __init__(self, reply: Reply, content_id: str | None) -> None:
        self.reply, self.content_id = reply, content_id


def _boundary(content_type: str) -> str:
    match = re.search(r'boundary="?([^";,\s]+)"?', content_type or "", re.I)
    if not match:
        raise errors.bad_request(
            "The $batch request needs Content-Type multipart/mixed with a boundary.", "0x0"
        )
    return match.group(1)


def _parts(text: str, boundary: str) -> list[tuple[dict[str, str], str]]:
    delimiter = f"--{boundary}"
    chunks = text.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith("--"):
        raise errors.bad_request(f"The batch is missing its closing delimiter '{delimiter}--'.", "0x80048d19")
    out = []
    for chunk in chunks[1:-1]:
        chunk = chunk.removeprefix(CRLF).removesuffix(CRLF)
        head, _, body = chunk.partition(CRLF + CRLF)
        out.append((_headers(head), body))
    return out


def _headers(block: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(CRLF):
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers


def _operation(headers: dict[str, str], body: str) -> Operation:
    if "application/http" not in headers.get("content-type", ""):
        raise errors.bad_request("A batch part must be application/http or a change set.", "0x80048d19")
    head, _, payload = body.partition(CRLF + CRLF)
    lines = head.split(CRLF)
    request = lines[0].split(" ")
    if len(request) < 2:
        raise errors.bad_request(f"Bad request line in a batch part: {lines[0][:100]!r}.", "0x80048d19")
    return Operation(
        request[0].upper(),
        request[1],
        _headers(CRLF.join(lines[1:])),
        payload.encode(),
        headers.get("content-id"),
    )


def _parse(call: Call) -> list[Operation | list[Operation]]:
    text = call.body.decode("utf-8", errors="replace")
    if not text.endswith(CRLF):
        raise errors.bad_request("Stream was not readable.", "0x80048d19")
    items: list[Operation | list[Operation]] = []
    for headers, body in _parts(text, _boundary(call.headers.get("content-type", ""))):
        if headers.get("content-type", "").startswith("multipart/mixed"):
            inner = _boundary(headers["content-type"])
            items.append([_operation(h, b) for h, b in _parts(body + CRLF, inner)])
        else:
            items.append(_operation(headers, body))
    count = sum(len(i) if isinstance(i, list) else 1 for i in items)
    if count > MAX_OPERATIONS:
        raise errors.bad_request(
            f"The number of requests in a batch exceeded the limit of {MAX_OPERATIONS}.", "0x8004110d"
        )
    return items


class Batch:
    def __init__(self, api: WebApi, fault: FaultHook) -> None:
        self.api = api
        self.fault = fault
        self.operations = 0  # operations run, over the stand-in's life (stats)

    def run(self, call: Call) -> Reply:
        items = _parse(call)
        keep_going = "odata.continue-on-error" in prefer(call.headers)
        out, failed = [], False
        boundary = f"batchresponse_{uuid.uuid4()}"
        for item in items:
            if isinstance(item, list):
                text, ok = self._changeset(call, item)
            else:
                reply = self._one(call, item, {})
                text, ok = _part(reply, item.content_id), reply.status < 400
            out.append(f"--{boundary}{CRLF}{text}")
            if not ok:
                failed = True
                if not keep_going:
                    break
        body = "".join(out) + f"--{boundary}--{CRLF}"
        status = 400 if failed and not keep_going else 200
        return Reply(status, {"Content-Type": f"multipart/mixed; boundary={boundary}"}, body.encode())

    def _changeset(self, call: Call, operations: list[Operation]) -> tuple[str, bool]:
        boundary = f"changesetresponse_{uuid.uuid4()}"
        ids: dict[str, tuple[str, str]] = {}
        replies: list[tuple[Reply, str | None]] = []
        try:
            with self.api.store.transaction():
                for op in operations:
                    if op.method == "GET":
                        raise _Failed(
                            Reply.error(errors.bad_request("GET is not allowed inside a change set.", "0x0")),
                            op.content_id,
                        )
                    reply = self._one(call, op, ids)
                    if reply.status >= 400:
                        raise _Failed(reply, op.content_id)
                    if op.content_id and reply.entity:
                        ids[f"${op.content_id}"] = reply.entity
                    replies.append((reply, op.content_id))
        except _Failed as failure:
            replies = [(failure.reply, failure.content_id)]
        ok = all(r.status < 400 for r, _ in replies)
        inner = "".join(f"--{boundary}{CRLF}{_part(r, cid)}" for r, cid in replies)
        text = f"Content-Type: multipart/mixed; boundary={boundary}{CRLF}{CRLF}{inner}--{boundary}--{CRLF}"
        return text, ok

    def _one(self, call: Call, op: Operation, ids: dict[str, tuple[str, str]]) -> Reply:
        self.operations += 1
        try:
            path, query = _resolve(op.url, ids, self.api)
        except errors.DataverseError as error:
            return Reply.error(error)
        injected = self.fault(op.method, path)
        if injected is not None and not injected[1]:
            return injected[0]
        self.api.options.content_ids = ids
        try:
            inner = Call(op.method, path, query, op.headers, op.body, call.base)
            reply = self.api.handle(inner)
        finally:
            self.api.options.content_ids = {}
        return reply if injected is None else injected[0]


def _resolve(url: str, ids: dict[str, tuple[str, str]], api: WebApi) -> tuple[str, str]:
    """The resource path and query of an operation's URL: absolute, relative to the service root, or
    `$n` (a change-set reference)."""
    if url.startswith("$"):
        name, _, rest = url.partition("/")
        if name not in ids:
            raise errors.bad_request(
                f"Content-ID Reference: '{name}' does not exist in the batch context.", "0x0"
            )
        logical, row_id = ids[name]
        url = f"{TABLES[logical].entity_set}({row_id})" + (f"/{rest}" if rest else "")
    parts = urlsplit(url)
    path = unquote(parts.path)
    if API_PATH in path:
        path = path.split(API_PATH, 1)[1]
    return path.lstrip("/"), parts.query


def _part(reply: Reply, content_id: str | None) -> str:
    head = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id:
        head.append(f"Content-ID: {content_id}")
    reason = HTTPStatus(reply.status).phrase if reply.status in HTTPStatus._value2member_map_ else ""
    lines = [f"HTTP/1.1 {reply.status} {reason}", "OData-Version: 4.0"]
    for name, value in reply.headers.items():
        lines.append(f"{name}: {value}")
    if "OData-EntityId" in reply.headers:
        lines.append(f"Location: {reply.headers['OData-EntityId']}")
    body = reply.body.decode("utf-8")
    return CRLF.join(head) + CRLF + CRLF + CRLF.join(lines) + CRLF + CRLF + body + CRLF
