"""The local stack the benchmarks run on: Azurite, the Graph emulator (seeded by `emulators.graph.sample`)
and the reference CRM, each a real process on a free loopback port, plus helpers to count what the
product asked of them (Graph requests from `/_emulator/stats`, CRM requests from `/_crm/stats`, table
transactions by wrapping the store's table backend)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.data.tables.aio import TableServiceClient

from emulators.azurite import AzuriteStack, azurite
from emulators.crm.launcher import ReferenceCrm, reference_crm
from emulators.graph.launcher import GraphEmulator, graph_emulator
from emulators.graph.sample import COMPANIES, generate
from shared.config import Settings
from shared.state.entities import Entity, Row
from shared.state.store import EntityStateStore
from shared.state.tables import AzureTables

DOMAIN = "contoso.test"  # the sample generator's tenant domain


@dataclass
class LocalStack:
    azurite: AzuriteStack
    graph: GraphEmulator
    crm: ReferenceCrm

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "GRAPH_BASE_URL": self.graph.base_url,
            "GRAPH_AUTH_MODE": "static-token",
            "GRAPH_STATIC_TOKEN": "local-bench-token",
            "AzureWebJobsStorage": self.azurite.connection_string,
            "CRM_BASE_URL": self.crm.base_url,
            "CRM_API_TOKEN": self.crm.token,
            "ORG_DOMAINS": DOMAIN,
            **extra,
        }

    def settings(self, **extra: str) -> Settings:
        return Settings.from_env(self.env(**extra))

    def graph_requests(self) -> int:
        """HTTP requests the app sent to Graph so far ($batch sub-requests are not requests of their own)."""
        stats = self.graph.control.stats()
        return int(stats["requests"]) - int(stats.get("batchSubRequests", 0))

    def graph_total(self) -> int:
        return int(self.graph.control.stats()["requests"])


@contextlib.contextmanager
def local_stack(seed: Mapping[str, Any] | None = None, **graph_flags: Any) -> Iterator[LocalStack]:
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        seed_path = None
        if seed is not None:
            seed_path = Path(tmp) / "tenant.json"
            seed_path.write_text(json.dumps(seed))
        store = stack.enter_context(azurite())
        graph = stack.enter_context(graph_emulator(seed=seed_path, **graph_flags))
        crm = stack.enter_context(reference_crm())
        yield LocalStack(store, graph, crm)


def mailbox(messages: int, days: int, *, seed: int = 7, upn_index: int = 0) -> dict[str, Any]:
    """A seed tenant of one mailbox with `messages` messages in its Inbox, received over the last `days`
    days (all inside the default 14-day window), from the sample generator's external correspondents."""
    start = datetime.now(UTC).date() - timedelta(days=days - 1)
    per_day = max(1, math.ceil(messages / days))
    data = generate(
        users=1,
        days=days,
        per_day=per_day,
        seed=seed,
        domain=DOMAIN,
        start=start,
        contacts_per_user=0,
        events_per_user=0,
    )
    user = data["users"][0]
    now = datetime.now(UTC) - timedelta(minutes=5)
    kept = []
    for m in user["messages"][:messages]:
        received = min(datetime.fromisoformat(m["receivedDateTime"].replace("Z", "+00:00")), now)
        kept.append({**m, "folder": "inbox", "receivedDateTime": received.strftime("%Y-%m-%dT%H:%M:%SZ")})
    user["messages"] = kept
    return data


def empty_users(count: int) -> dict[str, Any]:
    return {
        "users": [
            {"userPrincipalName": f"user{i:05d}@{DOMAIN}", "displayName": f"User {i}", "messages": []}
            for i in range(count)
        ]
    }


def crm_people() -> list[dict[str, Any]]:
    """The sample generator's external correspondents (first × last names at each company's domain)."""
    from emulators.graph.sample import FIRST, LAST

    return [
        {"kind": "contact", "displayName": f"{f} {la}", "emails": [f"{f}.{la}@{d}".lower()]}
        for _, d in COMPANIES
        for f in FIRST
        for la in LAST
    ]


def today() -> date:
    return datetime.now(UTC).date()


class CountingTables:
    """An `EntityTables` that counts the storage operations (one HTTP request each, queries per page)."""

    def __init__(self, inner: AzureTables) -> None:
        self._inner = inner
        self.calls = 0
        self.by_kind: dict[str, int] = {}

    def _count(self, kind: str, n: int = 1) -> None:
        self.calls += n
        self.by_kind[kind] = self.by_kind.get(kind, 0) + n

    async def create_tables(self, names: Sequence[str]) -> None:
        await self._inner.create_tables(names)

    async def get(self, table: str, partition_key: str, row_key: str) -> Row | None:
        self._count("get")
        return await self._inner.get(table, partition_key, row_key)

    async def insert(self, table: str, entity: Entity) -> str:
        self._count("insert")
        return await self._inner.insert(table, entity)

    async def replace(self, table: str, entity: Entity, etag: str) -> str:
        self._count("replace")
        return await self._inner.replace(table, entity, etag)

    async def upsert(self, table: str, entity: Entity, *, merge: bool) -> str:
        self._count("upsert")
        return await self._inner.upsert(table, entity, merge=merge)

    async def delete(self, table: str, partition_key: str, row_key: str, etag: str = "") -> None:
        self._count("delete")
        await self._inner.delete(table, partition_key, row_key, etag)

    async def query(
        self,
        table: str,
        partition_key: str | None = None,
        row_from: str | None = None,
        row_to: str | None = None,
    ) -> list[Row]:
        rows = await self._inner.query(table, partition_key, row_from, row_to)
        self._count("query", max(1, math.ceil(len(rows) / 1000)))  # Table service pages hold 1,000 rows
        return rows

    async def upsert_batch(self, table: str, entities: Sequence[Entity]) -> None:
        if entities:
            self._count("transaction")
        await self._inner.upsert_batch(table, entities)

    async def get_many(self, table: str, partition_key: str, row_keys: Sequence[str]) -> list[Row]:
        self._count("get", len(set(row_keys)))
        return await self._inner.get_many(table, partition_key, row_keys)

    async def transact(self, table: str, writes: Sequence[tuple[Entity, str]]) -> list[str]:
        if writes:
            self._count("transaction")
        return await self._inner.transact(table, writes)

    async def aclose(self) -> None:
        await self._inner.aclose()


def counted_store(connection_string: str, table_prefix: str) -> tuple[EntityStateStore, CountingTables]:
    tables = CountingTables(AzureTables(TableServiceClient.from_connection_string(connection_string)))
    return EntityStateStore(tables, table_prefix=table_prefix), tables  # type: ignore[arg-type]


class PeakRss:
    """Samples this process's resident set size every 20 ms in a thread (Linux /proc)."""

    def __init__(self) -> None:
        self.peak = self.start = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakRss:
        self.peak = self.start = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mb(n: float) -> float:
    return round(n / 1_000_000, 1)


class Stopwatch:
    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t


class ProcessCpu:
    """CPU seconds (user + system) spent by this process and by each of its descendants (the local
    stand-ins and whatever they spawned) while the block runs, read from Linux /proc, by command name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start: dict[int, tuple[str, float]] = {}

    def __enter__(self) -> ProcessCpu:
        self._start = _tree_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        end = _tree_cpu()
        totals: dict[str, float] = {}
        for pid, (name, cpu) in end.items():
            before = self._start.get(pid, (name, 0.0))[1]
            totals[name] = totals.get(name, 0.0) + cpu - before
        self.seconds = {name: round(cpu, 2) for name, cpu in sorted(totals.items()) if cpu >= 0.005}


def _tree_cpu() -> dict[int, tuple[str, float]]:
    """{pid: (role, cpu seconds)} for this process ("engine") and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    stats: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        stats[int(entry)] = (_role(cmdline), (int(fields[11]) + int(fields[12])) / tick)
    me = os.getpid()
    tree = {me}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return {pid: ("engine" if pid == me else stats[pid][0], stats[pid][1]) for pid in tree if pid in stats}


def _role(cmdline: str) -> str:
    roles = (
        ("azurite", "azurite"),
        ("emulators.crm", "crm"),
        ("emulators.graph", "graph"),
        ("emulators.dataverse", "dataverse"),
    )
    for marker, role in roles:
        if marker in cmdline:
            return role
    return "other"
