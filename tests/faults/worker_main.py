"""A worker process for the kill-point matrix: `python -m tests.faults.worker_main`.

Builds the real adapters from the settings in its environment (as the Functions worker does), takes one
message from the job queue on Azurite, runs the job, deletes the message. `KILL_AT=<adapter>.<method>:
<n>:<before|after>` makes the process SIGKILL itself at that call (adapters are wrapped, nothing is
patched); `queue.delete:1:before` dies with the job done and its message not yet deleted.
Environment: the app settings, TABLE_PREFIX, JOB_QUEUE, PAGE_SIZE, CLOCK_OFFSET_SECONDS (a re-run after
the dead worker's lease expired), KILL_AT.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.storage.queue import QueueClient

from shared.config import Settings
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.mail import GraphMailReader
from shared.model import Job
from shared.state.memory import InMemoryJobQueue
from shared.state.tables import TableStateStore
from shared.sync.engine import Engine
from shared.sync.mail import MailStream
from shared.wiring import build_crm


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt:
    def __init__(self, spec: str) -> None:
        where, _, rest = spec.partition(":")
        nth, _, when = rest.partition(":")
        self.where, self.nth, self.after, self.calls = where, int(nth or 0), when == "after", 0

    def hit(self, where: str) -> bool:
        if where != self.where:
            return False
        self.calls += 1
        return self.calls == self.nth

    def wrap(self, inner: Any, name: str) -> Any:
        kill = self

        class Wired:
            def __getattr__(self, attribute: str) -> Any:
                target = getattr(inner, attribute)
                if not inspect.iscoroutinefunction(target):
                    return target
                where = f"{name}.{attribute}"

                async def call(*args: Any, **kwargs: Any) -> Any:
                    hit = kill.hit(where)
                    if hit and not kill.after:
                        die()
                    result = await target(*args, **kwargs)
                    if hit:
                        die()
                    return result

                return call

        return Wired()


async def main() -> int:
    settings = Settings.from_env()
    kill = KillAt(os.environ.get("KILL_AT", ""))
    offset = timedelta(seconds=float(os.environ.get("CLOCK_OFFSET_SECONDS", "0")))

    def clock() -> datetime:
        return datetime.now(UTC) + offset

    store = TableStateStore.from_connection_string(
        settings.storage_connection_string, clock=clock, table_prefix=os.environ["TABLE_PREFIX"]
    )
    crm = build_crm(settings)
    reader = GraphMailReader(
        build_graph_client(settings), GraphCaller(), page_size=int(os.environ["PAGE_SIZE"])
    )
    state, crm_w, mail = kill.wrap(store, "state"), kill.wrap(crm, "crm"), kill.wrap(reader, "graph")
    stream = MailStream(state, crm_w, mail, org_domains=settings.org_domains, clock=clock)
    engine = Engine(state, InMemoryJobQueue(), {"mail": stream}, clock=clock)
    queue = QueueClient.from_connection_string(settings.storage_connection_string, os.environ["JOB_QUEUE"])
    try:
        deadline = time.monotonic() + 60
        while True:
            message = queue.receive_message(visibility_timeout=2)
            if message is not None:
                break
            if time.monotonic() > deadline:
                return 3
            await asyncio.sleep(0.2)
        job = Job.from_json(base64.b64decode(message.content))
        outcome = await engine.run_job(job)
        if kill.hit("queue.delete"):
            die()
        queue.delete_message(message)
        print(outcome.status, flush=True)
        return 0 if outcome.status == "done" else 2
    finally:
        queue.close()
        await crm.aclose()
        await store.aclose()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
