"""Crash injection for the real adapters: a wrapper that dies at the n-th call of one method, before
or after the real call was made (so "the CRM applied it, then the worker died" is covered)."""

from __future__ import annotations

from typing import Any


class SimulatedCrash(BaseException):
    """Not an Exception: nothing in the engine may catch it, as nothing catches a SIGKILL."""


class CrashAt:
    def __init__(self, inner: Any, method: str, nth: int, *, after: bool) -> None:
        self._inner = inner
        self._method = method
        self._nth = nth
        self._after = after
        self.calls = 0
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name != self._method:
            return target

        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            hit = self.calls == self._nth and not self.fired
            if hit and not self._after:
                self.fired = True
                raise SimulatedCrash(f"before {name} #{self._nth}")
            result = await target(*args, **kwargs)
            if hit:
                self.fired = True
                raise SimulatedCrash(f"after {name} #{self._nth}")
            return result

        return wrapped
