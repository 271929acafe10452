from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from emulators.crm.launcher import ReferenceCrm, reference_crm


@pytest.fixture(scope="session")
def crm_server() -> Iterator[ReferenceCrm]:
    with reference_crm() as server:
        yield server


@pytest.fixture
def server(crm_server: ReferenceCrm) -> ReferenceCrm:
    crm_server.reset()
    return crm_server


@pytest.fixture
def api(server: ReferenceCrm) -> Iterator[httpx.Client]:
    """A raw client of the public API, authenticated with the bearer token."""
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {server.token}"}
    ) as client:
        yield client
