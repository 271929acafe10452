"""The process side of the kill-point matrix: one mailbox per kill point plus a clean one, each with its
own job queue on Azurite. A phase starts one worker process (`worker_main.py`) per kill point, side by
side, each SIGKILLing itself at its point; then one more worker, after the dead workers' leases expired,
drains every queue: the re-runs of the killed mailboxes and the clean mailbox's run."""

from __future__ import annotations

import base64
import multiprocessing
import os
import secrets
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import httpx
from azure.storage.queue import QueueClient

from emulators.azurite import AzuriteStack
from emulators.crm.launcher import ReferenceCrm
from emulators.graph.launcher import GraphEmulator
from shared.model import Job
from shared.state.tables import TableStateStore
from tests.faults import worker_main
from tests.integration.stack import TENANT_DOMAIN, unique_prefix

LEASE_EXPIRED = 600.0  # seconds on the re-run's clock: past the dead worker's lease (300 s)


def env_for(azurite: AzuriteStack, graph: GraphEmulator, crm: ReferenceCrm, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "GRAPH_BASE_URL": graph.base_url, "GRAPH_AUTH_MODE": "static-token",
        "GRAPH_STATIC_TOKEN": "kill-test", "AzureWebJobsStorage": azurite.connection_string,
        "CRM_BASE_URL": crm.base_url, "CRM_API_TOKEN": crm.token, "ORG_DOMAINS": TENANT_DOMAIN, **extra,
    }  # fmt: skip


_FORKS = multiprocessing.get_context("forkserver")
_FORKS.set_forkserver_preload(["tests.faults.worker_preload"])


@dataclass
class Worker:
    process: BaseProcess
    log: Path


def spawn(env: dict[str, str]) -> Worker:
    """A worker process (`worker_main.child`), forked from a fork server that has imported everything
    once: a real process, SIGKILLed for real, without paying the imports (about 3 s of CPU) each time."""
    handle, name = tempfile.mkstemp(prefix="kill-worker-", suffix=".log")
    os.close(handle)
    process = _FORKS.Process(target=worker_main.child, args=(env, name), daemon=True)
    process.start()
    return Worker(process, Path(name))


def finish(worker: Worker) -> tuple[int | None, str]:
    """The exit code (-9: SIGKILL) and the tail of what the worker wrote (for assertion messages)."""
    worker.process.join(240)
    if worker.process.exitcode is None:
        worker.process.kill()
        worker.process.join()
        return None, "the worker did not end within 240 s"
    output = worker.log.read_text(errors="replace")[-3000:]
    worker.log.unlink()
    return worker.process.exitcode, output


def untag(value: Any, user: str) -> Any:
    """`value` with the mailbox's own name replaced, so two mailboxes' data compare equal."""
    tag = user.split("@")[0]
    if isinstance(value, str):
        return value.replace(tag, "USER")
    if isinstance(value, list | tuple):
        return type(value)(untag(v, user) for v in value)
    if isinstance(value, dict):
        return {untag(k, user): untag(v, user) for k, v in value.items()}
    return value


class Outlook:
    """What the users' own Outlook does, through Graph (one HTTP client for the whole matrix)."""

    def __init__(self, graph: GraphEmulator) -> None:
        self._base = graph.base_url
        self._http = httpx.Client(headers={"Authorization": "Bearer outlook"}, timeout=30)

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        response = self._http.request(method, f"{self._base}{path}", json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def close(self) -> None:
        self._http.close()


@dataclass
class Matrix:
    """`users[0]` runs clean; `users[n]` is killed at `kills[n - 1]` of each phase ("" for none)."""

    azurite: AzuriteStack
    graph: GraphEmulator
    crm: ReferenceCrm
    state: TableStateStore
    users: list[str]
    page_size: int
    prefix: str = field(default_factory=unique_prefix)
    queue_base: str = field(default_factory=lambda: "kill" + secrets.token_hex(4))
    queues: dict[str, QueueClient] = field(default_factory=dict)

    @classmethod
    async def open(
        cls, azurite: AzuriteStack, graph: GraphEmulator, crm: ReferenceCrm, users: list[str], page_size: int
    ) -> Matrix:
        prefix = unique_prefix()
        state = TableStateStore.from_connection_string(azurite.connection_string, table_prefix=prefix)
        await state.ensure_tables()
        matrix = cls(azurite, graph, crm, state, users, page_size, prefix)
        for n, user in enumerate(users):
            queue = QueueClient.from_connection_string(azurite.connection_string, f"{matrix.queue_base}-{n}")
            queue.create_queue()
            matrix.queues[user] = queue
        return matrix

    async def close(self) -> None:
        for queue in self.queues.values():
            queue.delete_queue()
            queue.close()
        await self.state.aclose()

    def env(self, queues: Sequence[int], **extra: str) -> dict[str, str]:
        """A worker's environment: it drains the queues of `users[n]` for each n in `queues`."""
        names = ",".join(f"{self.queue_base}-{n}" for n in queues)
        return env_for(
            self.azurite, self.graph, self.crm, TABLE_PREFIX=self.prefix, PAGE_SIZE=str(self.page_size),
            JOB_QUEUE=names, **extra,
        )  # fmt: skip

    def send(self, user: str, job: Job) -> None:
        """Queue `job` (with `user` as its user) on the user's queue, as the Functions trigger reads it."""
        job = Job(user, job.stream, job.reason, fresh_round=job.fresh_round)
        self.queues[user].send_message(base64.b64encode(job.to_json().encode()).decode())

    def assert_queues_empty(self) -> None:
        for user, queue in self.queues.items():
            assert queue.peek_messages(max_messages=5) == [], user  # every job is gone once done

    def phase(self, jobs: Sequence[Job], kills: Sequence[str], *, offset: float = 0.0) -> None:
        """Queue `jobs` for each user and start a worker per kill point; each must die of SIGKILL there.
        Then one worker, after the dead workers' leases expired, drains every user's queue: the re-runs
        of the killed users, and the clean run of the others."""
        assert len(kills) == len(self.users) - 1
        for user in self.users:
            for job in jobs:
                self.send(user, job)
        points = ["", *kills]
        killed = {
            n: spawn(self.env([n], KILL_AT=point, CLOCK_OFFSET_SECONDS=str(offset)))
            for n, point in enumerate(points)
            if point
        }
        for n, process in killed.items():
            code, output = finish(process)
            assert code == -signal.SIGKILL, (
                f"{self.users[n]} never reached {points[n]}: exit {code}\n{output}"
            )
        rest = spawn(self.env(range(len(self.users)), CLOCK_OFFSET_SECONDS=str(offset + LEASE_EXPIRED)))
        code, output = finish(rest)
        assert code == 0, f"the re-runs: exit {code}\n{output}"
        self.assert_queues_empty()


def differences(end: dict[str, Any], clean: dict[str, Any]) -> str:
    """What differs from the clean run, part by part (for assertion messages)."""
    lines = []
    for part in sorted(set(end) | set(clean)):
        mine, theirs = end.get(part), clean.get(part)
        if mine == theirs:
            continue
        if isinstance(mine, dict) and isinstance(theirs, dict):
            mine, theirs = sorted(mine.items()), sorted(theirs.items())
        if isinstance(mine, list) and isinstance(theirs, list):
            extra = [item for item in mine if item not in theirs]
            missing = [item for item in theirs if item not in mine]
            lines.append(f"{part}: extra {extra}; missing {missing}")
        else:
            lines.append(f"{part}: {mine!r} != {theirs!r}")
    return "\n".join(lines)
