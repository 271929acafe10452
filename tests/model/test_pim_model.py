"""Runs the contacts and calendar model (`pim.py`) against in-memory adapters that pass their contract
suites (`tests/contract/test_contacts_side.py`, `test_calendar_source.py`, `test_crm_port.py`).

Profiles (environment variable `MODEL_PROFILE`, as for `test_engine_model.py`): `ci` (default),
`dev` (for a quick look), `deep` (to hunt). The real-stack run is `tests/model/test_pim_model_real.py`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from tests.model.pim import with_world
from tests.model.world import MemoryWorld

COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    "print_blob": True,
    "report_multiple_bugs": False,
}
# CI runs the same examples every time (derandomize): a red CI is a regression, never a lucky draw.
# `dev` and `deep` draw new examples on each run, to hunt.
settings.register_profile(
    "pim-ci", max_examples=400, stateful_step_count=20, derandomize=True, database=None, **COMMON
)
settings.register_profile("pim-dev", max_examples=60, stateful_step_count=20, **COMMON)
settings.register_profile("pim-deep", max_examples=5_000, stateful_step_count=30, **COMMON)
PROFILE = settings.get_profile(f"pim-{os.environ.get('MODEL_PROFILE', 'ci')}")

MemoryPimSync = with_world(MemoryWorld)
TestContactsAndCalendarInMemory = MemoryPimSync.TestCase
TestContactsAndCalendarInMemory.settings = PROFILE
