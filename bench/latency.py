"""Notification path latency: a message is delivered in the Graph emulator → Graph notifies the app's
webhook → `graph_notifications` enqueues a job → the queue-triggered `sync_worker` runs it → the
journal is in the CRM. The whole FunctionApp (`function_app:app`) runs in the local Functions host
against Azurite, the Graph emulator and the reference CRM; subscriptions are created by the app's own
`subscription_upkeep`. Deliveries are spaced by an idle gap, so the queue poller has backed off (host.json
`maxPollingInterval`) as it would between real mails.

    python -m bench.latency [--samples 30] [--users 3] [--idle 1.0]      (prints JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from typing import Any

import httpx

from bench.stack import DOMAIN, empty_users, local_stack
from emulators.funchost.launcher import function_host
from emulators.localapp import webhook_key_settings
from emulators.process import free_port
from shared import wiring
from shared.model import Job

NEVER = "0 0 0 1 1 *"  # timers fire only when the benchmark says so


def percentile(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, -(-len(ordered) * p // 100) - 1))]


async def _prepare(settings: Any, upns: list[str]) -> None:
    services = await wiring.build(settings)
    try:
        for upn in upns:
            await services.state.put_config(upn, {"Enabled": True, "MailFolders": "inbox"})
            outcome = await services.engine.run_job(Job(upn, "mail:inbox", "bench"))
            assert outcome.status == "done", outcome
    finally:
        await services.aclose()
        wiring.use(None)


def run(samples: int, users: int, idle: float, timeout: float = 30.0) -> dict[str, Any]:
    seed = empty_users(users)
    upns = [u["userPrincipalName"] for u in seed["users"]]
    with local_stack(seed) as stack:
        asyncio.run(_prepare(stack.settings(), upns))
        port = free_port()  # chosen just before the host binds it: other processes take free ports too
        env = stack.env(
            SYNC_SCHEDULE=NEVER,
            SUBSCRIPTION_SCHEDULE=NEVER,
            WEBHOOK_BASE_URL=f"http://127.0.0.1:{port}/api",
            FUNCTIONS_WORKER_RUNTIME="python",
            **webhook_key_settings(secrets.token_urlsafe(32)),
        )
        with function_host("function_app:app", env, port) as host:
            host.fire("subscription_upkeep")
            listed = httpx.get(f"{stack.graph.base_url}/subscriptions", headers={"Authorization": "Bearer b"})
            subscriptions = len(listed.json().get("value", []))
            latencies: list[float] = []
            missed = 0
            for i in range(-1, samples):  # sample -1 warms the worker up (builds its services); not counted
                time.sleep(idle)
                upn = upns[i % len(upns)]
                subject = f"Latency sample {i} {secrets.token_hex(3)}"
                started = time.perf_counter()
                stack.graph.control.deliver(
                    upn,
                    {"from": {"address": f"ann{i}@fabrikam.example"}, "to": [{"address": upn}],
                     "subject": subject, "bodyHtml": "<p>Hello</p>"},
                )  # fmt: skip
                while not any(j.get("subject") == subject for j in stack.crm.journals()):
                    if time.perf_counter() - started > timeout:
                        missed += 1
                        break
                    time.sleep(0.01)
                else:
                    if i >= 0:
                        latencies.append((time.perf_counter() - started) * 1000)
            deliveries = stack.graph.control.notifications()
    return {
        "bench": "latency",
        "path": "deliver → notification → webhook → queue → worker → CRM journal",
        "samples": samples,
        "users": users,
        "idle_seconds_between_mails": idle,
        "subscriptions_created": subscriptions,
        "notification_posts": len(deliveries),
        "missed": missed,
        "p50_ms": round(percentile(latencies, 50)) if latencies else None,
        "p95_ms": round(percentile(latencies, 95)) if latencies else None,
        "max_ms": round(max(latencies)) if latencies else None,
        "domain": DOMAIN,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--idle", type=float, default=1.0)
    args = parser.parse_args(argv)
    result = run(args.samples, args.users, args.idle)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
