"""A burst of Graph change notifications at the webhook of the real FunctionApp in the local host:
1,000 POSTs (bounded concurrency, loopback only) for 5 users × 2 streams. How fast each is answered
(Graph wants well under 3 s) and how many sync jobs they became (coalescing: one per user+stream).

python -m bench.webhook_burst [notifications] [concurrency]   → one JSON line
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from emulators.azurite import azurite
from emulators.crm.launcher import reference_crm
from emulators.funchost.launcher import function_host
from emulators.graph.launcher import graph_emulator
from shared.model import SubscriptionRecord
from shared.state.tables import TableStateStore

USERS = [f"user{n}@contoso.com" for n in range(5)]
STREAMS = ["mail:inbox", "mail:sentitems"]
GRAPH_DEADLINE_MS = 3000.0


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {f"p{p}": round(ordered[min(len(ordered) - 1, len(ordered) * p // 100)], 1) for p in (50, 95, 99)}


async def seed(connection_string: str) -> dict[tuple[str, str], tuple[str, str]]:
    state = TableStateStore.from_connection_string(connection_string)
    await state.ensure_tables()
    subscriptions = {}
    expires = datetime.now(UTC) + timedelta(days=2)
    for user in USERS:
        await state.put_config(user, {"Enabled": True})
        for stream in STREAMS:
            sub_id, secret = f"sub-{user}-{stream}", f"secret-{user}-{stream}"
            await state.put_subscription(
                SubscriptionRecord(user, f"users/{user}/{stream}", stream, sub_id, secret, expires)
            )
            subscriptions[(user, stream)] = (sub_id, secret)
    await state.aclose()
    return subscriptions


async def burst(url: str, bodies: list[bytes], concurrency: int) -> tuple[list[float], dict[str, int], float]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(body: bytes) -> None:
            async with gate:
                started = time.perf_counter()
                response = await client.post(url, content=body, headers={"Content-Type": "application/json"})
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return latencies, statuses, time.perf_counter() - started


def main(notifications: int = 1000, concurrency: int = 50) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        azurite() as stack,
        graph_emulator() as graph,
        reference_crm() as crm,
    ):
        subscriptions = asyncio.run(seed(stack.connection_string))
        for user in USERS:
            graph.control.add_user(user)
        settings = {
            "AzureWebJobsStorage": stack.connection_string, "GRAPH_BASE_URL": graph.base_url,
            "GRAPH_AUTH_MODE": "static-token", "GRAPH_STATIC_TOKEN": "bench", "CRM_BASE_URL": crm.base_url,
            "CRM_API_TOKEN": crm.token, "ORG_DOMAINS": "contoso.com",
        }  # fmt: skip
        log = Path(tmp) / "host.log"
        with function_host("function_app:app", settings, log=log) as host:
            url = f"{host.root_url}/api/notifications?code={host.function_key}"
            targets = list(subscriptions.values())
            bodies = [
                json.dumps(
                    {
                        "value": [
                            {"subscriptionId": s, "clientState": c, "changeType": "created", "resource": "x"}
                        ]
                    }
                ).encode()  # fmt: skip
                for s, c in (targets[n % len(targets)] for n in range(notifications))
            ]
            latencies, statuses, seconds = asyncio.run(burst(url, bodies, concurrency))
            time.sleep(2.0)  # let the log reach the file
        text = log.read_text(errors="replace")
    enqueued = sum(int(n) for n in re.findall(r"notifications accepted=\d+ ignored=\d+ enqueued=(\d+)", text))
    coalesced = sum(int(n) for n in re.findall(r"enqueued=\d+ coalesced=(\d+)", text))
    print(
        json.dumps(
            {
                "bench": "webhook_burst",
                "notifications": notifications,
                "concurrency": concurrency,
                "targets": len(subscriptions),
                "statuses": statuses,
                "answer_ms": {**percentiles(latencies), "max": round(max(latencies), 1)},
                "over_3s": sum(1 for v in latencies if v > GRAPH_DEADLINE_MS),
                "burst_seconds": round(seconds, 2),
                "per_second": round(notifications / seconds, 1),
                "jobs_enqueued": enqueued,
                "coalesced": coalesced,
            }
        )
    )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
