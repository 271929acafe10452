"""Idle sweep: N enabled users (default 1,000), each with Inbox and Sent Items already synced and nothing
new. One safety-net sweep, and the jobs it causes, measured two ways on the same stack:

- `per_stream_jobs`: the sweep enqueues a job per user and stream and every job reads its delta link;
- `batch_probe` (what the product does): one `$batch` per user probes its delta links; jobs only for
  streams with changes.

    python -m bench.idle_sweep [--users 1000]      (prints JSON)

Graph requests are HTTP requests from the emulator's stats ($batch sub-requests listed apart); table
transactions are storage operations counted at the store's table backend (a query page counts one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bench.stack import LocalStack, counted_store, empty_users, local_stack
from shared.graph.batch import GraphBatch
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.mail import GraphMailReader
from shared.state.memory import InMemoryJobQueue
from shared.sync.engine import Engine
from shared.sync.mail import MailStream
from shared.sync.sweep import DeltaProbe, Sweeper
from shared.wiring import build_crm

CONCURRENCY = 16


async def gather_bounded(
    items: Sequence[Any], fn: Callable[[Any], Awaitable[Any]], n: int = CONCURRENCY
) -> list[Any]:
    slots = asyncio.Semaphore(n)

    async def one(item: Any) -> Any:
        async with slots:
            return await fn(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


async def run(users: int) -> dict[str, Any]:
    seed = empty_users(users)
    upns = [u["userPrincipalName"] for u in seed["users"]]
    with local_stack(seed, budget=0) as stack:
        return await _measure(stack, upns)


async def _measure(stack: LocalStack, upns: list[str]) -> dict[str, Any]:
    settings = stack.settings()
    state, tables = counted_store(stack.azurite.connection_string, "benchsweep")
    crm = build_crm(settings)
    client = build_graph_client(settings)
    caller = GraphCaller()
    queue = InMemoryJobQueue()
    runners = {
        "mail": MailStream(state, crm, GraphMailReader(client, caller), org_domains=settings.org_domains)
    }
    plain = Engine(state, queue, runners)
    probing = Engine(
        state, queue, runners, sweeper=Sweeper(queue, DeltaProbe(state, GraphBatch(client, caller)))
    )
    try:
        await state.ensure_tables()
        await gather_bounded(upns, lambda u: state.put_config(u, {"Enabled": True}))
        jobs = await plain.sweep()  # the first sync of every stream (empty mailboxes)
        queue.receive(len(jobs))
        outcomes = await gather_bounded(jobs, plain.run_job)
        assert all(o.status == "done" for o in outcomes), {o.status for o in outcomes}

        async def drain() -> int:
            ran = 0
            while pending := queue.receive(1000):
                await gather_bounded(pending, plain.run_job)
                ran += len(pending)
            return ran

        results: dict[str, Any] = {"bench": "idle_sweep", "users": len(upns), "streams_per_user": 2}
        for name, engine in (
            ("per_stream_jobs", plain),
            ("batch_probe", probing),
            ("batch_probe_again", probing),
        ):
            graph_before, subs_before = stack.graph_requests(), _subs(stack)
            tables_before = tables.calls
            started = time.perf_counter()
            enqueued = await engine.sweep()
            sweep_seconds = time.perf_counter() - started
            ran = await drain()
            total_seconds = time.perf_counter() - started
            graph = stack.graph_requests() - graph_before
            results[name] = {
                "jobs": len(enqueued),
                "jobs_run": ran,
                "graph_requests": graph,
                "graph_requests_per_user": round(graph / len(upns), 3),
                "batch_sub_requests": _subs(stack) - subs_before,
                "table_transactions": tables.calls - tables_before,
                "table_transactions_per_user": round((tables.calls - tables_before) / len(upns), 2),
                "sweep_seconds": round(sweep_seconds, 2),
                "sweep_and_jobs_seconds": round(total_seconds, 2),
            }
        # one user gets a message: the probe must send exactly that stream to a job, and it must sync
        stack.graph.control.deliver(
            upns[0],
            {"from": {"address": "ann@fabrikam.example"}, "to": [{"address": upns[0]}], "subject": "New",
             "bodyHtml": "<p>x</p>"},
        )  # fmt: skip
        jobs = await probing.sweep()
        results["after_one_new_message"] = {"jobs": [f"{j.user}|{j.stream}" for j in jobs]}
        ran = await drain()
        results["after_one_new_message"]["journals_in_crm"] = len(stack.crm.journals())
        results["after_one_new_message"]["jobs_run"] = ran
    finally:
        await crm.aclose()
        await state.aclose()
    return results


def _subs(stack: LocalStack) -> int:
    return int(stack.graph.control.stats().get("batchSubRequests", 0))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.users))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
