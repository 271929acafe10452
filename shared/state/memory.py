"""The state ports in memory, with the rules of the real thing: ETags that change on every write,
conditional writes that conflict, Azure's key and value limits, a queue that honours delays.

Used by unit tests, the model-based tests and anything that needs state without Azurite. The store
logic is the same `EntityStateStore` the Table adapter uses; only the rows live in dicts here.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.errors import ConcurrencyError, StateError
from shared.model import Job
from shared.state.entities import (
    KEY_COLUMNS,
    MAX_BATCH,
    MAX_STRING_CHARS,
    Entity,
    Row,
    utc,
)
from shared.state.store import TABLES, Clock, EntityStateStore, system_clock

_FORBIDDEN_IN_KEYS = re.compile(r"[\x00-\x1f\x7f-\x9f/\\#?]")
_PROPERTY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
MAX_KEY_UNITS = 512  # the stricter reading of Azure's "1 KiB" (UTF-16)
MAX_PROPERTIES = 252
MAX_INT64 = 2**63


class MemoryTables:
    """`EntityTables` in dicts. Rows are copied in and out, so callers never share state with it."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[tuple[str, str], tuple[Entity, str]]] = {}
        self._etags = itertools.count(1)

    def _table(self, name: str) -> dict[tuple[str, str], tuple[Entity, str]]:
        table = self._tables.get(name.lower())
        if table is None:
            raise StateError(f"table {name} does not exist (run ensure_tables)")
        return table

    def _store(self, table: dict[tuple[str, str], tuple[Entity, str]], entity: Entity) -> str:
        etag = f'W/"{next(self._etags)}"'
        table[(entity["PartitionKey"], entity["RowKey"])] = (dict(entity), etag)
        return etag

    async def create_tables(self, names: Sequence[str]) -> None:
        self.create(names)

    def create(self, names: Sequence[str]) -> None:
        for name in names:
            if not _TABLE_NAME.match(name):
                raise StateError(f"invalid table name {name!r}")
            self._tables.setdefault(name.lower(), {})

    async def get(self, table: str, partition_key: str, row_key: str) -> Row | None:
        await _io()
        found = self._table(table).get((partition_key, row_key))
        return Row(dict(found[0]), found[1]) if found else None

    async def insert(self, table: str, entity: Entity) -> str:
        await _io()
        rows = self._table(table)
        _validate(entity)
        if (entity["PartitionKey"], entity["RowKey"]) in rows:
            raise ConcurrencyError("the row exists already")
        return self._store(rows, entity)

    async def replace(self, table: str, entity: Entity, etag: str) -> str:
        await _io()
        rows = self._table(table)
        _validate(entity)
        found = rows.get((entity["PartitionKey"], entity["RowKey"]))
        if found is None or found[1] != etag:
            raise ConcurrencyError("the row was changed or deleted by someone else")
        return self._store(rows, entity)

    async def upsert(self, table: str, entity: Entity, *, merge: bool) -> str:
        await _io()
        rows = self._table(table)
        _validate(entity)
        found = rows.get((entity["PartitionKey"], entity["RowKey"]))
        if merge and found is not None:
            entity = {**found[0], **entity}
            _validate(entity)
        return self._store(rows, entity)

    async def delete(self, table: str, partition_key: str, row_key: str, etag: str = "") -> None:
        await _io()
        rows = self._table(table)
        found = rows.get((partition_key, row_key))
        if found is None:
            return
        if etag and found[1] != etag:
            raise ConcurrencyError("the row was changed by someone else")
        del rows[(partition_key, row_key)]

    async def query(
        self,
        table: str,
        partition_key: str | None = None,
        row_from: str | None = None,
        row_to: str | None = None,
    ) -> list[Row]:
        await _io()
        return [
            Row(dict(entity), etag)
            for (pk, rk), (entity, etag) in sorted(self._table(table).items())
            if (partition_key is None or pk == partition_key)
            and (row_from is None or rk >= row_from)
            and (row_to is None or rk < row_to)
        ]

    async def upsert_batch(self, table: str, entities: Sequence[Entity]) -> None:
        await _io()
        rows = self._table(table)
        if not entities:
            return
        if len(entities) > MAX_BATCH:
            raise StateError(f"a transaction holds at most {MAX_BATCH} operations")
        keys = [(e["PartitionKey"], e["RowKey"]) for e in entities]
        if len({pk for pk, _ in keys}) != 1 or len(set(keys)) != len(keys):
            raise StateError("a transaction covers one partition and each row once")
        for entity in entities:
            _validate(entity)
        for entity in entities:
            self._store(rows, entity)

    async def get_many(self, table: str, partition_key: str, row_keys: Sequence[str]) -> list[Row]:
        rows = self._table(table)
        found: list[Row] = []
        for row_key in dict.fromkeys(row_keys):
            await _io()  # a point read each, as the Table adapter makes them
            hit = rows.get((partition_key, row_key))
            if hit is not None:
                found.append(Row(dict(hit[0]), hit[1]))
        return found

    async def transact(self, table: str, writes: Sequence[tuple[Entity, str]]) -> list[str]:
        await _io()
        rows = self._table(table)
        if not writes:
            return []
        if len(writes) > MAX_BATCH:
            raise StateError(f"a transaction holds at most {MAX_BATCH} operations")
        keys = [(e["PartitionKey"], e["RowKey"]) for e, _ in writes]
        if len({pk for pk, _ in keys}) != 1 or len(set(keys)) != len(keys):
            raise StateError("a transaction covers one partition and each row once")
        for entity, etag in writes:
            _validate(entity)
            found = rows.get((entity["PartitionKey"], entity["RowKey"]))
            if (found is not None) if not etag else (found is None or found[1] != etag):
                raise ConcurrencyError("a row of the transaction was changed by someone else")
        return [self._store(rows, entity) for entity, _ in writes]

    async def aclose(self) -> None:
        return None


def _utf16_units(text: str) -> int:
    return len(text) if len(text) * 2 <= MAX_KEY_UNITS else len(text.encode("utf-16-le")) // 2


async def _io() -> None:
    """Every operation yields to the event loop, as a network call would: concurrent callers
    (asyncio.gather) interleave between a read and the conditional write that follows it."""
    await asyncio.sleep(0)


def _validate(entity: Entity) -> None:
    """Reject what Azure Table Storage would reject, so the in-memory tests catch it too."""

    for name in KEY_COLUMNS:
        key = entity.get(name)
        if not isinstance(key, str):
            raise StateError(f"{name} must be a string")
        if _FORBIDDEN_IN_KEYS.search(key):
            raise StateError(f"{name} holds a character Azure does not allow in keys")
        if _utf16_units(key) > MAX_KEY_UNITS:
            raise StateError(f"{name} is longer than Azure allows")
    if len(entity) - len(KEY_COLUMNS) > MAX_PROPERTIES:
        raise StateError(f"an entity holds at most {MAX_PROPERTIES} properties")
    for name, value in entity.items():
        if name in KEY_COLUMNS:
            continue
        if not _PROPERTY_NAME.match(name) or name in {"Timestamp", "etag"}:
            raise StateError(f"invalid column name {name!r}")
        if isinstance(value, str) and _utf16_units(value) > MAX_STRING_CHARS:
            raise StateError(f"column {name} is longer than Azure allows (32K characters)")
        if isinstance(value, bytes) and len(value) > 2 * MAX_STRING_CHARS:
            raise StateError(f"column {name} is longer than Azure allows (64 KiB)")
        if isinstance(value, bool | str | float | bytes):
            continue
        if isinstance(value, int):
            if not -MAX_INT64 <= value < MAX_INT64:
                raise StateError(f"column {name} is out of the 64-bit range")
            continue
        if isinstance(value, datetime) and value.tzinfo is not None:
            continue
        raise StateError(f"column {name} holds a {type(value).__name__}, which a table cannot store")


class InMemoryStateStore(EntityStateStore):
    """`StateStore` in memory. Unlike Azure, its tables exist from the start (`ensure_tables` is a
    harmless no-op), so a unit test can use it straight away."""

    def __init__(self, *, clock: Clock | None = None, tables: MemoryTables | None = None) -> None:
        self.tables = tables or MemoryTables()  # the rows, for tests that look underneath
        self.tables.create(TABLES)
        super().__init__(self.tables, clock=clock)


@dataclass(frozen=True)
class QueuedMessage:
    text: str  # exactly what the Storage queue would carry (Job.to_json())
    visible_at: datetime


class InMemoryJobQueue:
    """`JobQueue` in memory: messages become visible after their delay, on the injectable clock."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or system_clock
        self.messages: list[QueuedMessage] = []

    async def enqueue(self, job: Job, delay_seconds: float = 0) -> None:
        visible_at = utc(self._clock()) + timedelta(seconds=max(0.0, delay_seconds))
        self.messages.append(QueuedMessage(job.to_json(), visible_at))

    def receive(self, max_messages: int = 32) -> list[Job]:
        """Take up to `max_messages` visible jobs, oldest first (and remove them)."""

        now = utc(self._clock())
        ready = [m for m in self.messages if m.visible_at <= now][:max_messages]
        for message in ready:
            self.messages.remove(message)
        return [Job.from_json(m.text) for m in ready]

    def __len__(self) -> int:
        return len(self.messages)
