"""A worker process for the kill-point matrix: `python -m tests.faults.worker_main`.

Builds the real adapters and the three streams (mail, contacts, calendar) from the settings in its
environment (as the Functions worker does), then drains its job queues on Azurite (JOB_QUEUE, names
separated by commas, one after the other): takes a message, runs the job, deletes the message, until the
queue holds none (visible or not). `KILL_AT=<adapter>.<method>:
<n>:<before|after>` makes the process SIGKILL itself at that call (`state`, `crm` and `graph` adapters
are wrapped, nothing is patched); `queue.delete:1:before` dies with a job done and its message not yet
deleted. Environment: the app settings, TABLE_PREFIX, JOB_QUEUE, PAGE_SIZE, CLOCK_OFFSET_SECONDS (later
phases of a scenario, and a re-run after the dead worker's lease expired), KILL_AT.

Storage outages (tests/faults/test_outages.py): `OUTAGE_AT=<same spec>` stops Azurite itself at that call
instead (SIGTERM to the process group AZURITE_PID, then waits until its ports refuse connections), and
the worker then behaves as the Functions host does: a job that raises is reported (`outcome: raised ...`) and
its message left to reappear after its visibility timeout; a queue call that fails is retried after a
short pause (no SDK retries: the Python storage SDK's back-off is about 80 s per refused call).
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import AzureError
from azure.storage.queue import QueueClient

from shared.config import Settings
from shared.errors import SyncError
from shared.graph.calendar import GraphCalendar
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.contacts import GraphContacts
from shared.graph.mail import GraphMailReader
from shared.model import Job, JobOutcome
from shared.state.memory import InMemoryJobQueue
from shared.state.tables import TableStateStore
from shared.sync.calendar import CalendarStream
from shared.sync.contacts import ContactsStream
from shared.sync.engine import Engine
from shared.sync.mail import MailStream
from shared.sync.push import PushStream
from shared.wiring import build_crm


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def stop_storage() -> None:
    """Stop Azurite (SIGTERM: it writes its data out) and wait until its table port refuses."""
    os.killpg(int(os.environ["AZURITE_PID"]), signal.SIGTERM)
    port = int(os.environ["AZURITE_TABLE_PORT"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                print(f"storage stopped at {os.environ['OUTAGE_AT']}", flush=True)
                return
        time.sleep(0.05)
    raise RuntimeError("Azurite did not stop")


class KillAt:
    def __init__(self, spec: str, action: Callable[[], None] = die) -> None:
        where, _, rest = spec.partition(":")
        nth, _, when = rest.partition(":")
        self.where, self.nth, self.after, self.calls = where, int(nth or 0), when == "after", 0
        self.action = action

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
                        kill.action()
                    result = await target(*args, **kwargs)
                    if hit and kill.after:
                        kill.action()
                    return result

                return call

        return Wired()


async def main() -> int:
    settings = Settings.from_env()
    outage = bool(os.environ.get("OUTAGE_AT"))
    kill = KillAt(os.environ["OUTAGE_AT"], stop_storage) if outage else KillAt(os.environ.get("KILL_AT", ""))
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
        "contacts": ContactsStream(state, crm_w, contacts),
        "calendar": CalendarStream(
            state, crm_w, calendar, body_limit=settings.journal_body_max_chars, clock=clock
        ),
        "push": PushStream(state, crm_w, calendar),
    }
    engine = Engine(state, InMemoryJobQueue(), streams, clock=clock)
    outcomes: list[JobOutcome] = []
    try:
        retries = {"retry_total": 0} if outage else {}
        for name in os.environ["JOB_QUEUE"].split(","):
            conn = settings.storage_connection_string
            with QueueClient.from_connection_string(conn, name, **retries) as queue:
                if not await drain(queue, engine, kill, outcomes, survive=outage):
                    return 3
        print(" ".join(o.status for o in outcomes), flush=True)
        return 0 if outage or all(o.status == "done" for o in outcomes) else 2
    finally:
        await crm.aclose()
        await store.aclose()


async def drain(
    queue: QueueClient, engine: Engine, kill: KillAt, outcomes: list[JobOutcome], *, survive: bool = False
) -> bool:
    """Run the queue's jobs until it holds none, visible or not (a message a killed worker took comes
    back once its visibility timeout ends). False when no message came for a minute. `survive`: a job
    that raises, or a queue call that fails, is reported and the loop goes on (as the Functions host)."""
    deadline, ran = time.monotonic() + 60, 0
    while True:
        try:
            message = queue.receive_message(visibility_timeout=2)
            if message is None:
                if ran and queue.get_queue_properties().approximate_message_count == 0:
                    return True
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.2)
                continue
        except AzureError as error:
            if not survive:
                raise
            print(f"queue unavailable: {type(error).__name__}", flush=True)
            await asyncio.sleep(0.2)
            continue
        job = Job.from_json(base64.b64decode(message.content))
        try:
            outcome = await engine.run_job(job)
        except SyncError as error:
            if not survive:
                raise
            print(f"outcome: raised {type(error).__name__}: {error}", flush=True)
            continue  # the message reappears after its visibility timeout
        print(f"outcome: {outcome.status}", flush=True)
        outcomes.append(outcome)
        ran += 1
        if kill.hit("queue.delete"):
            die()
        try:
            queue.delete_message(message)
        except AzureError as error:  # the message comes back and the job runs again (harmless)
            if not survive:
                raise
            print(f"could not delete the message: {type(error).__name__}", flush=True)


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
