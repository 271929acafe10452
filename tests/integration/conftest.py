from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from emulators.azurite import AzuriteStack, azurite
from emulators.crm.launcher import ReferenceCrm, reference_crm
from emulators.graph.launcher import GraphEmulator, graph_emulator
from shared import wiring
from tests.integration.stack import Stack, settings_for, unique_prefix


@pytest.fixture(scope="session")
def azurite_stack() -> Iterator[AzuriteStack]:
    with azurite() as stack:
        yield stack


@pytest.fixture(scope="session")
def graph() -> Iterator[GraphEmulator]:
    with graph_emulator() as emulator:
        yield emulator


@pytest.fixture(scope="session")
def crm_server() -> Iterator[ReferenceCrm]:
    with reference_crm() as server:
        yield server


@pytest.fixture
async def stack(
    azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm
) -> AsyncIterator[Stack]:
    graph.control.reset(empty=True)
    crm_server.reset()
    services = await wiring.build(
        settings_for(azurite_stack, graph, crm_server), table_prefix=unique_prefix()
    )
    try:
        yield Stack(azurite_stack, graph, crm_server, services)
    finally:
        graph.control.clear_faults()
        crm_server.clear_faults()
        await services.aclose()
