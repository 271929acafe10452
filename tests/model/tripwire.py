"""Crash points at any await on an adapter: one counter shared by every wrapped adapter of a run; the
n-th awaited call dies (before the real call, or after it returned, so "the CRM applied it and then
the worker died" is covered) with `SimulatedCrash`, which is not an `Exception`, as nothing in the
engine can catch a SIGKILL. Nothing of ours is patched: the engine is built on the wrappers."""

from __future__ import annotations

import inspect
from typing import Any

from tests.integration.crash import SimulatedCrash


class Tripwire:
    """Dies at the `at`-th awaited call (0: never) of `method` ("crm.upsert_journal"), or of any
    wrapped method when `method` is "*"."""

    def __init__(self, at: int = 0, *, after: bool = False, method: str = "*") -> None:
        self.at = at
        self.after = after
        self.method = method
        self.calls = 0
        self.fired = ""

    def wrap(self, inner: Any, name: str) -> Any:
        return _Wired(inner, name, self)

    def _hit(self, where: str) -> bool:
        if self.method not in ("*", where):
            return False
        self.calls += 1
        return self.at > 0 and self.calls == self.at and not self.fired


class _Wired:
    def __init__(self, inner: Any, name: str, wire: Tripwire) -> None:
        self._inner = inner
        self._name = name
        self._wire = wire

    def __getattr__(self, attribute: str) -> Any:
        target = getattr(self._inner, attribute)
        if not inspect.iscoroutinefunction(target):
            return target
        wire = self._wire
        where = f"{self._name}.{attribute}"

        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            hit = wire._hit(where)
            if hit and not wire.after:
                wire.fired = f"before {where} (call {wire.calls})"
                raise SimulatedCrash(wire.fired)
            result = await target(*args, **kwargs)
            if hit:
                wire.fired = f"after {where} (call {wire.calls})"
                raise SimulatedCrash(wire.fired)
            return result

        return wrapped
