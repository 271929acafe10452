"""The BottleCRM a test session shares: started once, skipped (not failed) where it cannot run.

Used by `tests/integration/bottlecrm/` and by the contract suite's BottleCRM factory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from emulators.bottlecrm import BottleCrm, BottleCrmUnavailable, bottlecrm

_shared: list[BottleCrm] = []
_unavailable: list[str] = []
_stack = contextlib.ExitStack()


def bottlecrm_session() -> Iterator[BottleCrm]:
    """A generator for a session-scoped fixture. Several fixtures may use it: the first starts the
    CRM, the others reuse it, and the last one to finish stops it."""
    if _unavailable:
        pytest.skip(_unavailable[0])
    if not _shared:
        try:
            _shared.append(_stack.enter_context(bottlecrm()))
        except BottleCrmUnavailable as exc:
            _unavailable.append(f"BottleCRM cannot run on this machine: {exc}")
            pytest.skip(_unavailable[0])
    _shared.append(_shared[0])
    try:
        yield _shared[0]
    finally:
        _shared.pop()
        if len(_shared) == 1:
            _shared.clear()
            _stack.close()
