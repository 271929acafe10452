"""Crash injection for the real adapters: a wrapper that dies at the n-th call of one method, before
or after the real call was made (so "the CRM applied it, then the worker died" is covered), and a first
worker that dies so (`die_once`) under a clock the test moves past its lease."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.model import Job
from shared.sync.engine import Engine

# (which part crashes, which method, which call, after the real call?)
Crash = tuple[str, str, int, bool]


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def crash_id(crash: Crash) -> str:
    """A test id for a crash point: `crm.upsert_journals#1-after`."""
    return f"{crash[0]}.{crash[1]}#{crash[2]}{'-after' if crash[3] else ''}"


async def die_once(
    clock: Clock, crash: Crash | None, parts: Mapping[str, Any], engine_of: Callable[..., Engine], job: Job
) -> None:
    """With `crash`, a first worker built by `engine_of(**parts)`, with `parts[crash[0]]` wrapped, dies
    at the named call; then its lease expires."""
    if crash is None:
        return
    target, method, nth, after = crash
    dying = {**parts, target: CrashAt(parts[target], method, nth, after=after)}
    with pytest.raises(SimulatedCrash):
        await engine_of(**dying).run_job(job)
    clock.now += timedelta(minutes=10)


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
