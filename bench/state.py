"""State store timings: the in-memory store and the Table store on a local Azurite. Prints JSON.

    .venv/bin/python -m bench.state [--rounds 200]

Figures are per operation in milliseconds (median and 95th percentile) on this machine against
Azurite over loopback: they show the store's own overhead and round trips, not Azure's latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

from emulators.azurite import azurite
from shared.model import Cursor, Link
from shared.state.memory import InMemoryStateStore
from shared.state.store import EntityStateStore
from shared.state.tables import TableStateStore


async def _timed(rounds: int, op: Callable[[int], Awaitable[object]]) -> dict[str, float]:
    samples = []
    for i in range(rounds):
        start = time.perf_counter()
        await op(i)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 3),
        "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 3),
    }


async def measure(store: EntityStateStore, rounds: int) -> dict[str, dict[str, float]]:
    user = f"bench-{uuid.uuid4().hex[:8]}@contoso.com"
    cursor = Cursor()

    async def lease_cycle(i: int) -> None:
        lease = await store.acquire(user, "mail:inbox", f"job-{i}", 60)
        assert lease is not None
        await store.renew(lease, 60)
        await store.release(lease)

    async def save_cursor(i: int) -> None:
        nonlocal cursor
        cursor = await store.save_cursor(user, "contacts", Cursor(link=f"page-{i}", etag=cursor.etag))

    async def put_page(i: int) -> None:  # one delta page's links (100 rows, one transaction)
        await store.put_links([Link(user, "mail:inbox", f"{i}-{n}", crm_key=str(n)) for n in range(100)])

    async def get_page(i: int) -> None:
        await store.get_links(user, "mail:inbox", [f"{i}-{n}" for n in range(100)])

    return {
        "lease_acquire_renew_release": await _timed(rounds, lease_cycle),
        "save_cursor": await _timed(rounds, save_cursor),
        "mark_queued": await _timed(rounds, lambda i: store.mark_queued(user, f"s{i}", 30)),
        "put_links_100": await _timed(max(5, rounds // 10), put_page),
        "get_links_100": await _timed(max(5, rounds // 10), get_page),
    }


async def main(rounds: int) -> None:
    results: dict[str, object] = {"rounds": rounds}
    results["memory"] = await measure(InMemoryStateStore(), rounds)
    with azurite() as stack:
        store = TableStateStore.from_connection_string(stack.connection_string)
        try:
            await store.ensure_tables()
            results["azurite"] = await measure(store, rounds)
        finally:
            await store.aclose()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    asyncio.run(main(parser.parse_args().rounds))
