"""One BottleCRM per test session (started by `emulators.bottlecrm`, skipped where it cannot run)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from emulators.bottlecrm import BottleCrm
from shared.crm.bottlecrm import BottleCrmConnector
from tests.bottlecrm_server import bottlecrm_session


@pytest.fixture(scope="session")
def bottlecrm_server() -> Iterator[BottleCrm]:
    yield from bottlecrm_session()


@pytest.fixture
async def crm(bottlecrm_server: BottleCrm) -> AsyncIterator[BottleCrmConnector]:
    connector = BottleCrmConnector(bottlecrm_server.base_url, bottlecrm_server.token, provision_owners=True)
    yield connector
    await connector.aclose()
