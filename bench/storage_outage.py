"""How long the product's storage adapters take to give up when storage is unavailable: a state read
(`TableStateStore.get_user`) and an enqueue (`StorageJobQueue.enqueue`), each with the clients as the
product builds them (the SDKs' own retries and timeouts), against Azurite stopped (connections refused)
and frozen (SIGSTOP: connections accepted, no answer). A call still waiting after `--cap` seconds is
reported as `null` with `"capped": true`.

python -m bench.storage_outage [--cap 60]   → one JSON line (the queue call against a stopped Azurite
alone takes over a minute)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from collections.abc import Awaitable
from typing import Any

from emulators.azurite import restartable_azurite
from shared.errors import StateError
from shared.model import Job
from shared.state.queue import StorageJobQueue
from shared.state.tables import TableStateStore


async def gives_up(call: Awaitable[Any], cap: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(call, cap)
    except StateError as error:
        return {"seconds": round(time.perf_counter() - started, 1), "error": str(error)}
    except TimeoutError:
        return {"seconds": None, "capped": True}
    return {"seconds": round(time.perf_counter() - started, 1), "error": None}


async def measure(cap: float) -> dict[str, Any]:
    results: dict[str, Any] = {"cap_seconds": cap}
    with restartable_azurite() as storage:
        for mode in ("stopped", "frozen"):
            state = TableStateStore.from_connection_string(storage.connection_string, table_prefix="bench")
            queue = StorageJobQueue.from_connection_string(storage.connection_string)
            await state.ensure_tables()
            await queue.ensure_queue()
            await state.get_user("ann@contoso.com")  # connections open, as in a running worker
            if mode == "stopped":
                storage.stop()
            else:
                os.killpg(storage.pid, signal.SIGSTOP)
            try:
                table, enqueue = await asyncio.gather(
                    gives_up(state.get_user("ann@contoso.com"), cap),
                    gives_up(queue.enqueue(Job("ann@contoso.com", "mail:inbox", "bench")), cap),
                )
                results[mode] = {"table_read": table, "enqueue": enqueue}
            finally:
                if mode == "frozen":
                    os.killpg(storage.pid, signal.SIGCONT)
                    storage.stop()
                storage.start()
                await state.aclose()
                await queue.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cap", type=float, default=60.0, help="seconds to wait for one call at most")
    args = parser.parse_args()
    print(json.dumps({"benchmark": "storage_outage", **asyncio.run(measure(args.cap))}))


if __name__ == "__main__":
    main()
