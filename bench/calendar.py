"""Calendar sync timings: a first sync and a no-change re-sync of one calendar through msgraph-sdk against
the Graph emulator, with the in-memory state store and CRM (so the figures are the stream's own cost and
Graph round trips on loopback, not Azure's or a CRM's latency). Prints JSON.

    .venv/bin/python -m bench.calendar [--singles 300] [--series 30] [--occurrences 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import httpx

from emulators.graph.launcher import graph_emulator
from shared.config import Settings
from shared.crm.memory import InMemoryCrm
from shared.graph.calendar import GraphCalendar
from shared.graph.client import GraphCaller, build_graph_client
from shared.model import Job
from shared.state.memory import InMemoryJobQueue, InMemoryStateStore
from shared.sync.calendar import CalendarStream
from shared.sync.engine import Engine

USER = "ann@contoso.com"


def _at(start: datetime, days: int, hour: int) -> dict[str, str]:
    return {
        "dateTime": (start + timedelta(days=days, hours=hour)).strftime("%Y-%m-%dT%H:%M:%S"),
        "timeZone": "UTC",
    }


async def run(singles: int, series: int, occurrences: int) -> dict[str, object]:
    today = datetime.combine(datetime.now(UTC).date(), datetime.min.time(), tzinfo=UTC)
    with graph_emulator() as graph:
        graph.control.add_user(USER)
        attendees = [{"emailAddress": {"address": "bob@fabrikam.example"}, "type": "required"}]
        with httpx.Client(base_url=graph.base_url, headers={"Authorization": "Bearer outlook"}) as outlook:
            for n in range(singles):
                body = {"subject": f"M{n}", "start": _at(today, n % 170, 9), "end": _at(today, n % 170, 10),
                        "attendees": attendees}  # fmt: skip
                outlook.post(f"/users/{USER}/events", json=body).raise_for_status()
            for n in range(series):
                weekly = {
                    "pattern": {"type": "daily", "interval": 7},
                    "range": {"type": "numbered", "numberOfOccurrences": occurrences},
                }
                body = {"subject": f"S{n}", "start": _at(today, n % 30, 14), "end": _at(today, n % 30, 15),
                        "attendees": attendees, "recurrence": weekly}  # fmt: skip
                outlook.post(f"/users/{USER}/events", json=body).raise_for_status()
        settings = Settings.from_env(
            {
                "GRAPH_BASE_URL": graph.base_url,
                "GRAPH_AUTH_MODE": "static-token",
                "GRAPH_STATIC_TOKEN": "bench",
                "AzureWebJobsStorage": "UseDevelopmentStorage=true",
                "CRM_BASE_URL": "http://127.0.0.1:1",
                "CRM_API_TOKEN": "unused",
            }  # fmt: skip
        )
        state, crm, caller = InMemoryStateStore(), InMemoryCrm(), GraphCaller()
        crm.add_person("bob@fabrikam.example", name="Bob")
        await state.put_config(USER, {"Enabled": True, "Mail": False, "Calendar": True})
        stream = CalendarStream(state, crm, GraphCalendar(build_graph_client(settings), caller, page_size=50))
        engine = Engine(state, InMemoryJobQueue(), {"calendar": stream})
        figures: dict[str, object] = {"singles": singles, "series": series, "occurrences_each": occurrences}
        for label in ("first_sync", "no_change_resync"):
            before = caller.requests
            start = time.perf_counter()
            outcome = await engine.run_job(Job(USER, "calendar"))
            figures[label] = {
                "seconds": round(time.perf_counter() - start, 3),
                "graph_requests": caller.requests - before,
                "stats": dict(outcome.stats),
            }
        figures["appointments"] = len(crm.appointments)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--singles", type=int, default=300)
    parser.add_argument("--series", type=int, default=30)
    parser.add_argument("--occurrences", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.singles, args.series, args.occurrences)), indent=2))


if __name__ == "__main__":
    main()
