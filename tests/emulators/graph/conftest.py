"""One emulator process per test session (and per module for ones that need special flags); each test
works in its own fresh users so tests do not see each other's mail."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kiota_abstractions.authentication import AccessTokenProvider, AllowedHostsValidator
from kiota_abstractions.authentication.base_bearer_token_authentication_provider import (
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.headers_collection import HeadersCollection
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph_core import GraphClientFactory

from emulators.graph.launcher import GraphEmulator, graph_emulator


class StaticToken(AccessTokenProvider):
    async def get_authorization_token(self, uri: str, additional_authentication_context: Any = None) -> str:
        return "emulator-token"

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return AllowedHostsValidator([])


def sdk_client(base_url: str) -> GraphServiceClient:
    """msgraph-sdk pointed at the emulator, with the default middleware (retry, redirect...)."""
    http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(base_url=base_url))
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(StaticToken()), client=http)
    adapter.base_url = base_url
    return GraphServiceClient(request_adapter=adapter)


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
