"""Idle sweep: N enabled users (default 1,000), each with its streams already synced and nothing new. One
safety-net sweep, and the jobs it causes, measured two ways on the same stack:

- `per_stream_jobs`: the sweep enqueues a job per user and stream and every job reads its delta link;
- `batch_probe` (what the product does): the users' delta links are probed in `$batch`es of ≤ 20
  sub-requests (a user's streams together, several users a batch); jobs only for streams with changes.

    python -m bench.idle_sweep [--users 1000] [--streams mail|all]      (prints JSON)

`--streams mail` (default): Inbox and Sent Items. `--streams all`: Inbox, Sent Items, contacts (one CRM
contact per user, so the owned folder holds one contact) and calendar: four streams per user; the
contacts' CRM side is peeked once per user and sweep (`crm_requests`).

Graph requests are HTTP requests from the emulator's stats ($batch sub-requests listed apart); table
transactions are storage operations counted at the store's table backend (a query page counts one);
CRM requests from the CRM's stats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

from bench.stack import LocalStack, counted_store, empty_users, local_stack
from shared.graph.batch import GraphBatch
from shared.graph.calendar import GraphCalendar
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.contacts import GraphContacts
from shared.graph.mail import GraphMailReader
from shared.model import StreamKind
from shared.state.memory import InMemoryJobQueue
from shared.sync.calendar import CalendarStream
from shared.sync.contacts import ContactsStream
from shared.sync.engine import Engine
from shared.sync.mail import MailStream
from shared.sync.stream import Stream
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


async def run(users: int, streams: str = "mail") -> dict[str, Any]:
    seed = empty_users(users)
    upns = [u["userPrincipalName"] for u in seed["users"]]
    with local_stack(seed, budget=0) as stack:
        return await _measure(stack, upns, streams)


async def _measure(stack: LocalStack, upns: list[str], streams: str) -> dict[str, Any]:
    settings = stack.settings()
    state, tables = counted_store(stack.azurite.connection_string, "benchsweep")
    crm = build_crm(settings)
    client = build_graph_client(settings)
    caller = GraphCaller()
    queue = InMemoryJobQueue()
    runners: dict[StreamKind, Stream] = {
        StreamKind.MAIL: MailStream(
            state, crm, GraphMailReader(client, caller), org_domains=settings.org_domains
        )
    }
    columns: dict[str, Any] = {"Enabled": True}
    if streams == "all":
        runners[StreamKind.CONTACTS] = ContactsStream(state, crm, GraphContacts(client, caller))
        runners[StreamKind.CALENDAR] = CalendarStream(state, crm, GraphCalendar(client, caller))
        columns.update(Contacts=True, Calendar=True)
        stack.crm.add_people(
            [{"kind": "contact", "displayName": f"Carl {i}", "emails": [f"carl{i}@fabrikam.example"],
              "owner": upn} for i, upn in enumerate(upns)]
        )  # fmt: skip
    plain = Engine(state, queue, runners)
    probing = Engine(
        state, queue, runners, sweeper=Sweeper(queue, DeltaProbe(state, GraphBatch(client, caller), runners))
    )
    try:
        await state.ensure_tables()
        await gather_bounded(upns, lambda u: state.put_config(u, columns))
        jobs = await plain.sweep()  # the first sync of every stream
        queue.receive(len(jobs))
        outcomes = await gather_bounded(jobs, plain.run_job)
        assert all(o.status == "done" for o in outcomes), {o.status for o in outcomes}

        async def drain() -> int:
            ran = 0
            while pending := queue.receive(1000):
                await gather_bounded(pending, plain.run_job)
                ran += len(pending)
            return ran

        settling = 0
        while await probing.sweep():  # our own first writes (contacts) come back once
            settling += await drain()
            assert settling < 10 * len(upns), "the sweep does not settle"

        first = await plain.load_user(upns[0])
        per_user = len(first.streams()) if first is not None else 0
        results: dict[str, Any] = {
            "bench": "idle_sweep", "users": len(upns), "streams": streams, "streams_per_user": per_user,
            "settling_jobs": settling,
        }  # fmt: skip
        for name, engine in (
            ("per_stream_jobs", plain),
            ("batch_probe", probing),
            ("batch_probe_again", probing),
        ):
            graph_before, subs_before = stack.graph_requests(), _subs(stack)
            tables_before, crm_before = tables.calls, stack.crm.stats()["total"]
            started = time.perf_counter()
            enqueued = await engine.sweep()
            sweep_seconds = time.perf_counter() - started
            ran = await drain()
            total_seconds = time.perf_counter() - started
            graph = stack.graph_requests() - graph_before
            crm_requests = stack.crm.stats()["total"] - crm_before
            results[name] = {
                "jobs": len(enqueued),
                "jobs_run": ran,
                "graph_requests": graph,
                "graph_requests_per_user": round(graph / len(upns), 3),
                "batch_sub_requests": _subs(stack) - subs_before,
                "crm_requests": crm_requests,
                "crm_requests_per_user": round(crm_requests / len(upns), 3),
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
        if (
            streams == "all"
        ):  # a CRM-side change: the contacts stream of that user only, and it reaches Outlook
            carl = stack.crm.contacts(upns[-1])[0]["id"]
            stack.crm.update_person(carl, jobTitle="Head of Buying")
            jobs = await probing.sweep()
            results["after_one_crm_contact_change"] = {"jobs": [f"{j.user}|{j.stream}" for j in jobs]}
            results["after_one_crm_contact_change"]["jobs_run"] = await drain()
            results["after_one_crm_contact_change"]["in_outlook"] = _outlook_titles(stack, upns[-1])
    finally:
        await crm.aclose()
        await state.aclose()
    return results


def _outlook_titles(stack: LocalStack, upn: str) -> list[str]:
    """Job titles of the contacts in the user's owned folder, read through Graph as Outlook would."""
    with httpx.Client(
        base_url=stack.graph.base_url, headers={"Authorization": "Bearer o"}, timeout=30
    ) as http:
        folders = http.get(f"/users/{upn}/contactFolders", params={"$top": "100"}).json()["value"]
        folder = next(f["id"] for f in folders if f["displayName"] == "CRM Contacts")
        contacts = http.get(f"/users/{upn}/contactFolders/{folder}/contacts").json()["value"]
    return [str(c.get("jobTitle") or "") for c in contacts]


def _subs(stack: LocalStack) -> int:
    return int(stack.graph.control.stats().get("batchSubRequests", 0))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--streams", choices=("mail", "all"), default="mail")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.users, args.streams))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
