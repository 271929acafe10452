"""python -m emulators.graph --port PORT [--seed FILE] [limits and knobs, see --help]"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from emulators.graph.server import LATENCY_PROFILES, TASKS_PERMISSIONS, Config, Emulator, create_app, flag


def main(argv: list[str] | None = None) -> None:
    d = Config()
    p = argparse.ArgumentParser(
        prog="python -m emulators.graph", description="Local Microsoft Graph v1.0 subset."
    )
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--seed", type=Path, help="JSON tenant written by emulators.graph.sample")
    p.add_argument(
        "--concurrency", type=int, default=d.concurrency, help="requests in flight per mailbox (0: no limit)"
    )
    p.add_argument(
        "--budget", type=int, default=d.budget, help="requests per window per mailbox (0: no limit)"
    )
    p.add_argument("--window", type=float, default=d.window, help="budget window in seconds")
    p.add_argument("--throttle-scope", choices=("mailbox", "app"), default=d.throttle_scope)
    p.add_argument(
        "--filter-cap", type=int, default=d.filter_cap, help="items per $filter'ed message delta round"
    )
    p.add_argument("--latency-ms", type=int, help=f"added to every Graph request (default {d.latency_ms})")
    p.add_argument(
        "--latency-per-item-ms",
        type=float,
        help=f"added per item in a response (default {d.latency_per_item_ms})",
    )
    p.add_argument(
        "--latency-profile",
        choices=sorted(LATENCY_PROFILES),
        default="off",
        help="named latency (graph: as the real service; see the README); the two flags above override it",
    )
    p.add_argument(
        "--duplicate-rate", type=float, default=d.duplicate_rate, help="share of notifications sent twice"
    )
    p.add_argument("--random-seed", type=int, default=d.random_seed)
    p.add_argument("--notify-timeout", type=float, default=d.notify_timeout)
    p.add_argument("--notify-retries", type=int, default=d.notify_retries)
    p.add_argument("--notify-retry-delay", type=float, default=d.notify_retry_delay)
    p.add_argument("--validation-timeout", type=float, default=d.validation_timeout)
    p.add_argument(
        "--tasks-permission",
        choices=TASKS_PERMISSIONS,
        default=d.tasks_permission,
        help="the app's To Do role: Tasks.ReadWrite.All, Tasks.Read.All or none (401 on To Do)",
    )
    p.add_argument(
        "--todo-due-change-duplicates",
        type=flag,
        default=d.todo_due_change_duplicates,
        help="true: a new due date on a recurring task leaves a second open task (a reported To Do bug)",
    )
    a = p.parse_args(argv)
    latency = dict(LATENCY_PROFILES[a.latency_profile])
    if a.latency_ms is not None:
        latency["latency_ms"] = a.latency_ms
    if a.latency_per_item_ms is not None:
        latency["latency_per_item_ms"] = a.latency_per_item_ms
    config = Config(
        concurrency=a.concurrency,
        budget=a.budget,
        window=a.window,
        throttle_scope=a.throttle_scope,
        filter_cap=a.filter_cap,
        latency_ms=latency["latency_ms"],
        latency_per_item_ms=latency["latency_per_item_ms"],
        duplicate_rate=a.duplicate_rate,
        random_seed=a.random_seed,
        notify_timeout=a.notify_timeout,
        notify_retries=a.notify_retries,
        notify_retry_delay=a.notify_retry_delay,
        validation_timeout=a.validation_timeout,
        tasks_permission=a.tasks_permission,
        todo_due_change_duplicates=a.todo_due_change_duplicates,
    )
    logging.basicConfig(level=logging.WARNING)
    emu = Emulator(config, a.seed)
    uvicorn.run(create_app(emu), host=a.host, port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
