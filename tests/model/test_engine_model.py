"""Runs the engine model (`machine.py`) against in-memory adapters that pass their contract suites.

Profiles (environment variable `MODEL_PROFILE`): `ci` (default, 1,000 examples), `dev` (100, for a quick
look), `deep` (10,000, to hunt). The real-stack run is `tests/model/test_engine_model_real.py`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from tests.model.machine import with_world
from tests.model.world import MemoryWorld

COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    "print_blob": True,
}
# CI runs the same examples every time (derandomize): a red CI is a regression, never a lucky draw.
# `dev` and `deep` draw new examples on each run, to hunt.
settings.register_profile(
    "model-ci", max_examples=600, stateful_step_count=12, derandomize=True, database=None, **COMMON
)
settings.register_profile("model-dev", max_examples=100, stateful_step_count=12, **COMMON)
settings.register_profile("model-deep", max_examples=10_000, stateful_step_count=25, **COMMON)
PROFILE = settings.get_profile(f"model-{os.environ.get('MODEL_PROFILE', 'ci')}")

MemoryMailSync = with_world(MemoryWorld)
TestMailSyncInMemory = MemoryMailSync.TestCase
TestMailSyncInMemory.settings = PROFILE
