"""Timer triggers: run each on its schedule, never two runs of one timer at once.

After a run the next occurrence is taken after the time the run ended, so occurrences a long run
overlapped are skipped, not queued. `past_due` is true when a run starts well after its scheduled
time. `run_on_startup` runs the function once when the host starts. `run()` runs it now (the
admin API), waiting for a run in progress first. Schedule status is kept in memory only (the real
host keeps it in blob storage when `use_monitor` is on).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from azure.functions.timer import TimerRequest

from emulators.funchost.indexing import FunctionSpec
from emulators.funchost.invoke import Invoker

logger = logging.getLogger(__name__)

PAST_DUE_AFTER = timedelta(seconds=1)


def now() -> datetime:
    return datetime.now(UTC)


class Timer:
    def __init__(self, spec: FunctionSpec, invoker: Invoker) -> None:
        assert spec.schedule is not None
        self.spec = spec
        self.invoker = invoker
        self.lock = asyncio.Lock()
        self.last: datetime | None = None
        self.next: datetime = spec.schedule.next_after(now())

    def _request(self, scheduled: datetime | None) -> TimerRequest:
        started = now()
        past_due = scheduled is not None and started - scheduled > PAST_DUE_AFTER
        status = {
            "Last": (self.last or datetime.min.replace(tzinfo=UTC)).isoformat(),
            "Next": self.next.isoformat(),
            "LastUpdated": started.isoformat(),
        }
        return TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})

    async def run(self, reason: str, scheduled: datetime | None = None) -> bool:
        """One run; whether it succeeded. A failure is logged (by the invoker) and not retried."""
        async with self.lock:
            try:
                await self.invoker.invoke(self.spec, self._request(scheduled), reason)
                return True
            except Exception:
                return False
            finally:
                self.last = now()

    async def loop(self) -> None:
        assert self.spec.schedule is not None
        if self.spec.run_on_startup:
            await self.run("RunOnStartup")
        self.next = self.spec.schedule.next_after(now())
        while True:
            delay = (self.next - now()).total_seconds()
            if delay > 0:
                await asyncio.sleep(min(delay, 30.0))  # re-check the wall clock at least every 30 s
                continue
            await self.run("Timer", scheduled=self.next)
            self.next = self.spec.schedule.next_after(max(now(), self.next))
