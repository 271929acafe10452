"""One Dataverse stand-in per test session (HTTPS, a trustme CA), emptied before each test.

`client` is Microsoft's own `powerplatform-dataverse-client` (requests over real HTTPS, trusting the
test CA the way any `requests` program does: `REQUESTS_CA_BUNDLE`); `web` is a raw httpx client for
what that client does not cover, sending requests shaped as the Web API documentation shows them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken, TokenCredential
from PowerPlatform.Dataverse.client import DataverseClient

from emulators.dataverse.launcher import DataverseStandIn, dataverse_stand_in

HEADERS = {
    "Authorization": "Bearer test-token",
    "Accept": "application/json",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
}


class StaticCredential(TokenCredential):
    """An app-only token as azure-identity would hand it to the client (any token on loopback)."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes += scopes
        return AccessToken("test-token", int(time.time()) + 3600)


@pytest.fixture(scope="session")
def stand_in() -> Iterator[DataverseStandIn]:
    with dataverse_stand_in() as running:
        yield running


@pytest.fixture
def dv(stand_in: DataverseStandIn) -> DataverseStandIn:
    stand_in.reset()
    return stand_in


@pytest.fixture
def credential() -> StaticCredential:
    return StaticCredential()


@pytest.fixture
def client(dv: DataverseStandIn, credential: StaticCredential) -> Iterator[DataverseClient]:
    before = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = str(dv.ca_path)
    try:
        with DataverseClient(dv.url, credential) as opened:
            yield opened
    finally:
        if before is None:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = before


@pytest.fixture
def web(dv: DataverseStandIn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=dv.api_url, headers=HEADERS, verify=dv.ssl_context(), timeout=30) as opened:
        yield opened


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])
