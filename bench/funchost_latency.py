"""What the local Functions host adds to a request: the HTTP round trip through it, and the delay from
a queue message sent to its function running when the queue was idle (host.json polling back-off).

python -m bench.funchost_latency   → one JSON line
"""

from __future__ import annotations

import base64
import json
import time

import httpx
from azure.storage.queue import QueueClient

from emulators.azurite import azurite
from emulators.funchost.launcher import function_host

APP = "tests.emulators.funchost.sample_app:app"
NEVER = "0 0 0 1 1 *"


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {f"p{p}": round(ordered[min(len(ordered) - 1, len(ordered) * p // 100)], 1) for p in (50, 95)}


def main(requests: int = 200, messages: int = 15, idle_seconds: float = 3.0) -> None:
    with azurite() as stack:
        settings = {
            "AzureWebJobsStorage": stack.connection_string,
            "WORK_QUEUE": "bench-work",
            "TICK_QUEUE": "bench-tick",
            "TICK_SCHEDULE": NEVER,
            "SLOW_SCHEDULE": NEVER,
        }  # queue options from the repository's host.json
        with function_host(APP, settings) as host, httpx.Client() as client:
            round_trips = []
            for _ in range(requests):
                started = time.perf_counter()
                client.get(f"{host.base_url}/hello/bench").raise_for_status()
                round_trips.append((time.perf_counter() - started) * 1000)

            work = QueueClient.from_connection_string(stack.connection_string, "bench-work")
            seen = QueueClient.from_connection_string(stack.connection_string, "bench-work-seen")
            work.create_queue()
            seen.create_queue()
            pickups = []
            for i in range(messages):
                time.sleep(idle_seconds)  # idle: the poller backs off towards maxPollingInterval
                sent = time.perf_counter()
                work.send_message(base64.b64encode(json.dumps({"id": str(i)}).encode()).decode())
                while not any(
                    json.loads(m.content)["id"] == str(i) for m in seen.receive_messages(max_messages=32)
                ):
                    time.sleep(0.01)
                pickups.append((time.perf_counter() - sent) * 1000)
            work.close()
            seen.close()
    print(
        json.dumps(
            {
                "bench": "funchost_latency",
                "http_round_trip_ms": percentiles(round_trips),
                "queue_pickup_after_idle_ms": percentiles(pickups),
                "requests": requests,
                "messages": messages,
                "idle_seconds": idle_seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
