"""Backfill: one mailbox of N messages (default 10,000) over 14 days, synced by the real engine through
msgraph-sdk → Graph emulator, azure-data-tables → Azurite, the reference CRM connector → CRM server.

    python -m bench.backfill [--messages 10000] [--days 14] [--profile FILE]      (prints JSON)

- Graph requests against the minimum ⌈N / page size⌉ + 1 (from the emulator's stats);
- engine time against a bare read of the same delta pages by the same reader (`GraphMailReader`);
- CRM requests per journal (from the CRM's stats); peak resident memory during the engine run;
- CPU seconds spent during the engine run by the engine and by each stand-in (Azurite, CRM, Graph);
  `--profile FILE` also writes a cProfile of the engine run (read it with `python -m pstats FILE`).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.stack import PeakRss, ProcessCpu, crm_people, local_stack, mailbox, mb
from shared import wiring
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.mail import GraphMailReader
from shared.model import Job

UPN_COLUMNS = {"Enabled": True, "MailFolders": "inbox", "DaysBack": 14}


async def bare_read(settings: Any, upn: str, page_size: int, since: datetime) -> tuple[int, int, float]:
    """The same delta round with the product's reader alone: pages, items, seconds."""
    reader = GraphMailReader(build_graph_client(settings), GraphCaller(), page_size=page_size)
    started = time.perf_counter()
    page = await reader.read_page(upn, "inbox", "", since)
    pages, items = 1, len(page.changes)
    while page.next_link:
        page = await reader.read_page(upn, "inbox", page.next_link, None)
        pages += 1
        items += len(page.changes)
    return pages, items, time.perf_counter() - started


async def run(messages: int, days: int, profile: str = "") -> dict[str, Any]:
    seed = mailbox(messages, days)
    upn = seed["users"][0]["userPrincipalName"]
    with local_stack(seed, budget=0) as stack:
        stack.crm.add_people(crm_people())
        settings = stack.settings()
        services = await wiring.build(settings, table_prefix="bench")
        try:
            await services.state.put_config(upn, UPN_COLUMNS)
            page_size = getattr(services.mail, "_page_size", 100)
            since = datetime.now(UTC) - timedelta(days=14)
            # warm up the SDK and the connections the same way for both runs
            await bare_read(settings, upn, page_size, since)
            read_times = []
            for _ in range(2):
                pages, items, seconds = await bare_read(settings, upn, page_size, since)
                read_times.append(seconds)
            read_seconds = min(read_times)

            graph_before = stack.graph_requests()
            crm_before = stack.crm.stats()["total"]
            profiler = cProfile.Profile() if profile else None
            with PeakRss() as rss, ProcessCpu() as cpu:
                started = time.perf_counter()
                if profiler is not None:
                    profiler.enable()
                outcome = await services.engine.run_job(Job(upn, "mail:inbox", "bench"))
                if profiler is not None:
                    profiler.disable()
                engine_seconds = time.perf_counter() - started
            if profiler is not None:
                profiler.dump_stats(profile)
            graph_requests = stack.graph_requests() - graph_before
            crm_stats = stack.crm.stats()
            crm_requests = crm_stats["total"] - crm_before
            journals = len(stack.crm.journals())
        finally:
            await services.aclose()
            wiring.use(None)
    minimum = math.ceil(messages / page_size) + 1
    return {
        "bench": "backfill",
        "messages": messages,
        "days": days,
        "page_size": page_size,
        "outcome": outcome.status,
        "stats": dict(outcome.stats),
        "journals_in_crm": journals,
        "graph_requests": graph_requests,
        "graph_requests_minimum": minimum,
        "graph_requests_over_minimum_pct": round(100 * (graph_requests - minimum) / minimum, 1),
        "bare_read": {"pages": pages, "items": items, "seconds": round(read_seconds, 2)},
        "engine_seconds": round(engine_seconds, 2),
        "engine_over_bare_read": round(engine_seconds / read_seconds, 2),
        "crm_requests": crm_requests,
        "crm_requests_per_journal": round(crm_requests / max(1, journals), 3),
        "crm_by_route": crm_stats.get("byRoute", {}),
        "cpu_seconds": cpu.seconds,
        "rss_before_mb": mb(rss.start),
        "rss_peak_mb": mb(rss.peak),
        "rss_growth_mb": mb(rss.peak - rss.start),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--profile", default="", help="write a cProfile of the engine run to this file")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.messages, args.days, args.profile))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
