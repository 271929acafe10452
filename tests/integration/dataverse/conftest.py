"""One Dataverse stand-in per test session (HTTPS, its own test CA); Azurite and the Graph emulator
come from `tests/integration/conftest.py`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulators.dataverse.launcher import DataverseStandIn, dataverse_stand_in


@pytest.fixture(scope="session")
def dataverse_server() -> Iterator[DataverseStandIn]:
    with dataverse_stand_in() as stand_in:
        yield stand_in
