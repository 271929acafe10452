"""One emulator process per test session (and per module for ones that need special flags); each test
works in its own fresh users so tests do not see each other's mail."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.headers_collection import HeadersCollection
from msgraph import GraphServiceClient

from emulators.graph.launcher import GraphEmulator, graph_emulator, sdk_client


def cfg(*prefer: str, query: Any = None) -> RequestConfiguration:
    h = HeadersCollection()  # always a fresh collection (kiota-python#507)
    for p in prefer:
        h.add("Prefer", p)
    return RequestConfiguration(headers=h, query_parameters=query)


@pytest.fixture(scope="session")
def emulator() -> Iterator[GraphEmulator]:
    with graph_emulator(duplicate_rate=0.0) as g:
        yield g


@pytest.fixture(scope="session")
def graph(emulator: GraphEmulator) -> GraphServiceClient:
    return sdk_client(emulator.base_url)


@pytest.fixture
def raw(emulator: GraphEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.base_url, headers={"Authorization": "Bearer t"}, timeout=30) as c:
        yield c


@pytest.fixture
def upn(emulator: GraphEmulator) -> str:
    """A fresh user of the emulated tenant."""
    address = f"u{uuid.uuid4().hex[:10]}@contoso.test"
    emulator.control.add_user(address, "Test User")
    return address


def mail_from(sender: str, subject: str = "Hello", **kw: Any) -> dict[str, Any]:
    return {
        "from": {"emailAddress": {"name": sender.split("@")[0], "address": sender}},
        "to": [{"emailAddress": {"name": "Someone", "address": "someone@contoso.test"}}],
        "subject": subject,
        "bodyHtml": f"<html><body><p>{subject}</p></body></html>",
        **kw,
    }


class Receiver:
    """A webhook endpoint on a free loopback port: answers Graph's validation handshake (unless told
    not to), records notification POSTs, and answers them with a chosen status (first ones can fail)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlsplit

        self.posts: list[dict[str, Any]] = []
        self.validations: list[str] = []
        self.fail_next = 0
        self.echo_token = True
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if "validationToken" in query:
                    token = query["validationToken"][0]
                    receiver.validations.append(parts.path)
                    body = (token if receiver.echo_token else "nope").encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                receiver.posts.append({"path": parts.path, "query": query, "body": json.loads(raw)})
                status = 500 if receiver.fail_next > 0 else 202
                receiver.fail_next = max(0, receiver.fail_next - 1)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def notifications(self) -> list[dict[str, Any]]:
        return [n for p in self.posts for n in p["body"]["value"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()
