"""The contacts and calendar model on the real stack (Azurite, msgraph-sdk → the Graph emulator, the
reference CRM over HTTP), with a smaller profile: `MODEL_REAL_EXAMPLES` examples (default 8) of at most
8 steps each."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from emulators.azurite import AzuriteStack
from emulators.crm.launcher import ReferenceCrm
from emulators.graph.launcher import GraphEmulator
from tests.model.pim import with_world
from tests.model.real import RealWorld

pytestmark = pytest.mark.integration

REAL = settings(
    max_examples=int(os.environ.get("MODEL_REAL_EXAMPLES", "8")),
    stateful_step_count=int(os.environ.get("MODEL_REAL_STEPS", "8")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
    database=None,
    # the same examples every run unless MODEL_RANDOM is set (to hunt): CI is red only on a regression
    derandomize=not os.environ.get("MODEL_RANDOM"),
    # MODEL_SHRINK=0 reports a failure as drawn, at once: a real-stack shrink can take many minutes
    phases=[p for p in Phase if p != Phase.shrink or os.environ.get("MODEL_SHRINK", "1") != "0"],
)


def test_the_contacts_and_calendar_model_on_the_real_stack(
    azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm
) -> None:
    machine = with_world(lambda: RealWorld(azurite_stack, graph, crm_server))
    run_state_machine_as_test(machine, settings=REAL)
