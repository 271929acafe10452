"""Backfill into Dynamics 365: one mailbox of N messages (default 10,000) over 14 days, synced by the
real engine through msgraph-sdk → Graph emulator, azure-data-tables → Azurite, and the Dataverse
connector → the Dataverse stand-in over HTTPS.

    python -m bench.dataverse [--messages 10000] [--days 14]      (prints JSON)

- Dataverse requests per journal (a `$batch` is one request, as Dataverse counts it), against the
  target of 0.05, and what ran inside the batches;
- the time against Dataverse's service protection limit of 6,000 requests per user per 5 minutes:
  the pace the backfill asked for, and the fastest the limit would let this many requests go;
- engine seconds (on this machine, with the stand-in's own cost in them), and the CPU seconds the
  engine and each stand-in spent meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stack import DOMAIN, ProcessCpu, crm_people, mailbox
from emulators.azurite import azurite
from emulators.dataverse.launcher import DataverseStandIn, dataverse_stand_in
from emulators.graph.launcher import graph_emulator
from shared import wiring
from shared.config import Settings
from shared.model import Job

UPN_COLUMNS = {"Enabled": True, "MailFolders": "inbox", "DaysBack": 14}
LIMIT_REQUESTS, LIMIT_WINDOW_S = 6000, 300  # per user, per 5 minutes (Dataverse's service protection)
TARGET_PER_JOURNAL = 0.05


def _seed_people(dv: DataverseStandIn, owner: str) -> int:
    people = [(str(p["emails"][0]), str(p["displayName"])) for p in crm_people()]
    dv.add_contacts(people, owner=owner)
    return len(people)


async def run(messages: int, days: int, logs: Path | None = None) -> dict[str, Any]:
    seed = mailbox(messages, days)
    upn = seed["users"][0]["userPrincipalName"]
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        seed_path = Path(tmp) / "tenant.json"
        seed_path.write_text(json.dumps(seed))
        log = (lambda name: logs / f"{name}.log") if logs else (lambda name: None)
        storage = stack.enter_context(azurite(log=log("azurite")))
        graph = stack.enter_context(graph_emulator(seed=seed_path, budget=0, log=log("graph")))
        dv = stack.enter_context(dataverse_stand_in(log=log("dataverse")))
        dv.add_user(upn)
        contacts = _seed_people(dv, upn)
        os.environ["SSL_CERT_FILE"] = str(dv.ca_path)  # this process's httpx trusts the stand-in's CA
        settings = Settings.from_env(
            {
                "GRAPH_BASE_URL": graph.base_url,
                "GRAPH_AUTH_MODE": "static-token",
                "GRAPH_STATIC_TOKEN": "bench",
                "AzureWebJobsStorage": storage.connection_string,
                "CRM_CONNECTOR": "dataverse",
                "DATAVERSE_URL": dv.url,
                "DATAVERSE_AUTH_MODE": "static-token",
                "DATAVERSE_STATIC_TOKEN": "bench",
                "ORG_DOMAINS": DOMAIN,
            }
        )
        services = await wiring.build(settings, table_prefix="benchdv")
        try:
            await services.state.put_config(upn, UPN_COLUMNS)
            dv.clear_stats()
            with ProcessCpu() as cpu:
                started = time.perf_counter()
                outcome = await services.engine.run_job(Job(upn, "mail:inbox", "bench"))
                seconds = time.perf_counter() - started
            stats = dv.stats()
            journals = len(dv.rows("emails", select="activityid"))
        finally:
            await services.aclose()
            wiring.use(None)
    requests = int(stats["requests"])
    pace = requests / seconds * LIMIT_WINDOW_S if seconds else 0.0
    return {
        "bench": "dataverse",
        "messages": messages,
        "days": days,
        "contacts_in_dataverse": contacts,
        "outcome": outcome.status,
        "stats": dict(outcome.stats),
        "journals_in_crm": journals,
        "dataverse_requests": requests,
        "requests_per_journal": round(requests / max(1, journals), 4),
        "requests_per_journal_target": TARGET_PER_JOURNAL,
        "batch_operations": stats["batchOperations"],
        "by_route": stats["byRoute"],
        "engine_seconds": round(seconds, 2),
        "cpu_seconds": cpu.seconds,
        "service_protection": {
            "limit": f"{LIMIT_REQUESTS} requests per {LIMIT_WINDOW_S} s per user",
            "requests_per_5_minutes_at_this_pace": round(pace),
            "share_of_the_limit_at_this_pace": round(pace / LIMIT_REQUESTS, 3),
            "fastest_the_limit_allows_s": round(requests / (LIMIT_REQUESTS / LIMIT_WINDOW_S), 1),
            "throttled": stats["throttled"],
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--logs", type=Path, help="a folder for the stand-ins' logs")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.messages, args.days, args.logs))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
