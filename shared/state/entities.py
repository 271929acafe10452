"""The few entity operations the state store needs, as a port with two backends.

`EntityTables` is the narrow slice of Azure Table Storage that `shared/state/store.py` builds every
state port on: point reads, ETag-conditional inserts and replaces, upserts, deletes, range queries and
entity-group transactions. `shared/state/tables.py` implements it over `azure.data.tables.aio`,
`shared/state/memory.py` in memory with the same ETag and key rules, so the store logic (leases,
cursors, indexes) is written once and the contract suite checks both backends.

Column values cross this port as plain Python values: `str`, `bool`, `int` (64-bit), `float`,
`bytes` and timezone-aware UTC `datetime`. `to_column` turns anything else a caller may hand us
(mappings, sequences, enums, naive datetimes) into one of those.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any, Protocol

from shared.errors import StateError

Entity = dict[str, Any]
KEY_COLUMNS = ("PartitionKey", "RowKey")
MAX_STRING_CHARS = 32 * 1024  # 64 KiB of UTF-16
MAX_BATCH = 100  # operations per entity-group transaction (Azure's limit)


@dataclass(frozen=True)
class Row:
    """One stored entity: its columns (PartitionKey and RowKey included) and its ETag."""

    entity: Mapping[str, Any]
    etag: str

    @property
    def partition_key(self) -> str:
        return str(self.entity["PartitionKey"])

    @property
    def row_key(self) -> str:
        return str(self.entity["RowKey"])

    def get(self, column: str, default: Any = None) -> Any:
        return self.entity.get(column, default)

    def columns(self) -> dict[str, Any]:
        """Every column but the keys."""
        return {k: v for k, v in self.entity.items() if k not in KEY_COLUMNS}


class EntityTables(Protocol):
    """Raises `ConcurrencyError` when a condition fails, `StateError` for any other storage failure."""

    async def create_tables(self, names: Sequence[str]) -> None: ...

    async def get(self, table: str, partition_key: str, row_key: str) -> Row | None: ...

    async def insert(self, table: str, entity: Entity) -> str:
        """Create the row; ConcurrencyError if it exists. Returns the new ETag."""
        ...

    async def replace(self, table: str, entity: Entity, etag: str) -> str:
        """Replace the row if its ETag is still `etag`; ConcurrencyError if it changed or is gone."""
        ...

    async def upsert(self, table: str, entity: Entity, *, merge: bool) -> str:
        """Create, or replace / merge the row unconditionally. Returns the new ETag."""
        ...

    async def delete(self, table: str, partition_key: str, row_key: str, etag: str = "") -> None:
        """Delete the row (no error if it is gone). With `etag`: only if unchanged, else ConcurrencyError."""
        ...

    async def query(
        self,
        table: str,
        partition_key: str | None = None,
        row_from: str | None = None,
        row_to: str | None = None,
    ) -> list[Row]:
        """Rows of one partition (or all) with `row_from <= RowKey < row_to`, in key order."""
        ...

    async def upsert_batch(self, table: str, entities: Sequence[Entity]) -> None:
        """Replace-upsert up to MAX_BATCH rows of one partition in one entity-group transaction."""
        ...

    async def get_many(self, table: str, partition_key: str, row_keys: Sequence[str]) -> list[Row]:
        """The rows of one partition with these row keys (those that exist), read side by side."""
        ...

    async def transact(self, table: str, writes: Sequence[tuple[Entity, str]]) -> list[str]:
        """Up to MAX_BATCH conditional writes to distinct rows of one partition, all or nothing, in one
        entity-group transaction: `(entity, "")` inserts a row that must not exist, `(entity, etag)`
        replaces a row whose ETag is still `etag`. Returns the new ETags in order; raises
        ConcurrencyError (and writes nothing) when any condition fails."""
        ...

    async def aclose(self) -> None: ...


def to_column(value: Any) -> Any:
    """A value a table column can hold (None stays None: the store treats it as "remove")."""

    if isinstance(value, Enum):
        return to_column(value.value)
    if value is None or isinstance(value, str | bool | int | float | bytes):
        return value
    if isinstance(value, datetime):
        return utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        return to_json(value)
    raise StateError(f"a table column cannot hold a {type(value).__name__}")


def to_json(value: Any) -> str:
    if isinstance(value, set | frozenset):
        value = sorted(value, key=str)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def from_json(text: Any, default: Any) -> Any:
    """The JSON value a column holds, or `default` when the column is absent or not JSON."""

    if not isinstance(text, str) or not text:
        return default
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # not JSON, a number too long, nested too deeply
        return default


def utc(value: datetime) -> datetime:
    """A plain timezone-aware UTC datetime (naive values are taken as UTC already)."""

    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return datetime(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        tzinfo=UTC,
    )
