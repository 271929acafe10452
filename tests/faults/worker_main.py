"""A worker process for the kill-point matrix: `python -m tests.faults.worker_main`.

Builds the real adapters and the three streams (mail, contacts, calendar) from the settings in its
environment (as the Functions worker does), then drains its job queues on Azurite (JOB_QUEUE, names
separated by commas, one after the other): takes a message, runs the job, deletes the message, until the
queue holds none (visible or not). `KILL_AT=<adapter>.<method>:
<n>:<before|after>` makes the process SIGKILL itself at that call (`state`, `crm` and `graph` adapters
are wrapped, nothing is patched); `queue.delete:1:before` dies with a job done and its message not yet
deleted. Environment: the app settings, TABLE_PREFIX, JOB_QUEUE, PAGE_SIZE, CLOCK_OFFSET_SECONDS (later
phases of a scenario, and a re-run after the dead worker's lease expired), KILL_AT.
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
from shared.graph.calendar import GraphCalendar
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.contacts import GraphContacts
from shared.graph.mail import GraphMailReader
from shared.model import Job
from shared.state.memory import InMemoryJobQueue
from shared.state.tables import TableStateStore
from shared.sync.calendar import CalendarStream
from shared.sync.contacts import ContactsStream
from shared.sync.engine import Engine, JobOutcome
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
    client, caller, page_size = build_graph_client(settings), GraphCaller(), int(os.environ["PAGE_SIZE"])
    state, crm_w = kill.wrap(store, "state"), kill.wrap(crm, "crm")
    mail = kill.wrap(GraphMailReader(client, caller, page_size=page_size), "graph")
    contacts = kill.wrap(GraphContacts(client, caller, page_size=page_size), "graph")
    calendar = kill.wrap(GraphCalendar(client, caller, page_size=page_size), "graph")
    streams = {
        "mail": MailStream(state, crm_w, mail, org_domains=settings.org_domains, clock=clock),
        "contacts": ContactsStream(state, crm_w, contacts, clock=clock),
        "calendar": CalendarStream(
            state, crm_w, calendar, body_limit=settings.journal_body_max_chars, clock=clock
        ),
    }
    engine = Engine(state, InMemoryJobQueue(), streams, clock=clock)
    outcomes: list[JobOutcome] = []
    try:
        for name in os.environ["JOB_QUEUE"].split(","):
            with QueueClient.from_connection_string(settings.storage_connection_string, name) as queue:
                if not await drain(queue, engine, kill, outcomes):
                    return 3
        print(" ".join(o.status for o in outcomes), flush=True)
        return 0 if all(o.status == "done" for o in outcomes) else 2
    finally:
        await crm.aclose()
        await store.aclose()


async def drain(queue: QueueClient, engine: Engine, kill: KillAt, outcomes: list[JobOutcome]) -> bool:
    """Run the queue's jobs until it holds none, visible or not (a message a killed worker took comes
    back once its visibility timeout ends). False when no message came for a minute."""
    deadline, ran = time.monotonic() + 60, 0
    while True:
        message = queue.receive_message(visibility_timeout=2)
        if message is None:
            if ran and queue.get_queue_properties().approximate_message_count == 0:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)
            continue
        job = Job.from_json(base64.b64decode(message.content))
        outcomes.append(await engine.run_job(job))
        ran += 1
        if kill.hit("queue.delete"):
            die()
        queue.delete_message(message)


def warm() -> None:
    """Import what a worker imports on its first Graph answer (kiota's models, about 2 s of CPU): done
    once in the fork server (tests/faults/worker_preload.py), not in every killed worker."""
    from msgraph.generated.models.contact import Contact
    from msgraph.generated.models.contact_folder import ContactFolder
    from msgraph.generated.models.event import Event

    for model in (Contact(), ContactFolder(), Event()):
        model.get_field_deserializers()


def child(env: dict[str, str], log: str) -> None:
    """A worker forked from the fork server (tests/faults/killing.py): its own process, its output in
    `log`, killed by SIGKILL like any other."""
    with open(log, "ab") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    os.environ.clear()
    os.environ.update(env)
    sys.exit(asyncio.run(main()))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
