"""The state ports over Azure Table Storage (`azure.data.tables.aio`), one `TableServiceClient` for all.

    store = TableStateStore.from_connection_string(conn)            # Azurite, or a key-based account
    store = TableStateStore.from_service_uri(uri, credential)       # identity-based (managed identity)
    await store.ensure_tables()

SDK exceptions never leave this module: a lost ETag condition (412, or 409 on create) becomes
`ConcurrencyError`, any other storage failure `StateError`. Messages name the operation and the
status, never a key (keys carry UPNs and message ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import EdmType, EntityProperty, TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.errors import ConcurrencyError, StateError
from shared.state.entities import MAX_BATCH, Entity, Row, utc
from shared.state.store import Clock, EntityStateStore

_INT32 = 2**31
# Seconds to connect, and to wait for an answer, on every Tables request. azure-core's defaults are 300 and
# 300, and a read that timed out is retried three times: storage that accepts connections and never
# answers would hold a job some 20 minutes, past the function timeout, and the sweep with it. The service
# ends a table operation within 30 s (a query answers with a continuation), so 35 s of silence means no
# answer is coming. A refused connection fails after about 5 s (the client's own retries) either way.
TIMEOUTS = (10.0, 35.0)
POINT_READS = 16  # concurrent point reads in get_many
# A transaction refused for one of its conditions (the row exists, its ETag changed, it was deleted).
_LOST_RACE = {"EntityAlreadyExists", "UpdateConditionNotSatisfied", "ResourceNotFound"}


class AzureTables:
    """`EntityTables` over one `TableServiceClient` (its table clients share its connection pool)."""

    def __init__(self, service: TableServiceClient) -> None:
        self._service = service
        self._clients: dict[str, TableClient] = {}

    def _client(self, table: str) -> TableClient:
        client = self._clients.get(table)
        if client is None:
            client = self._clients[table] = self._service.get_table_client(table)
        return client

    async def create_tables(self, names: Sequence[str]) -> None:
        async def create(name: str) -> None:
            with _storage_errors("create table"):
                await self._service.create_table_if_not_exists(name)

        await asyncio.gather(*(create(name) for name in names))

    async def get(self, table: str, partition_key: str, row_key: str) -> Row | None:
        try:
            with _storage_errors("read"):
                entity = await self._client(table).get_entity(partition_key, row_key)
        except _RowMissing:
            return None
        return _row(entity)

    async def insert(self, table: str, entity: Entity) -> str:
        with _storage_errors("create", missing_is_conflict=True):
            meta = await self._client(table).create_entity(_to_sdk(entity))
        return _etag(meta)

    async def replace(self, table: str, entity: Entity, etag: str) -> str:
        with _storage_errors("conditional write", missing_is_conflict=True):
            meta = await self._client(table).update_entity(
                _to_sdk(entity),
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        return _etag(meta)

    async def upsert(self, table: str, entity: Entity, *, merge: bool) -> str:
        with _storage_errors("upsert"):
            meta = await self._client(table).upsert_entity(
                _to_sdk(entity), mode=UpdateMode.MERGE if merge else UpdateMode.REPLACE
            )
        return _etag(meta)

    async def delete(self, table: str, partition_key: str, row_key: str, etag: str = "") -> None:
        condition = MatchConditions.IfNotModified if etag else MatchConditions.Unconditionally
        with _storage_errors("delete", missing_is_conflict=bool(etag)):
            await self._client(table).delete_entity(
                partition_key, row_key, etag=etag or None, match_condition=condition
            )

    async def query(
        self,
        table: str,
        partition_key: str | None = None,
        row_from: str | None = None,
        row_to: str | None = None,
    ) -> list[Row]:
        clauses: list[str] = []
        parameters: dict[str, Any] = {}
        for clause, name, value in (
            ("PartitionKey eq @pk", "pk", partition_key),
            ("RowKey ge @lo", "lo", row_from),
            ("RowKey lt @hi", "hi", row_to),
        ):
            if value is not None:
                clauses.append(clause)
                parameters[name] = value
        client = self._client(table)
        with _storage_errors("query"):
            if clauses:
                pages = client.query_entities(" and ".join(clauses), parameters=parameters)
            else:
                pages = client.list_entities()
            return [_row(entity) async for entity in pages]

    async def upsert_batch(self, table: str, entities: Sequence[Entity]) -> None:
        if entities:
            await self._transaction(table, [(entity, None) for entity in entities])

    async def get_many(self, table: str, partition_key: str, row_keys: Sequence[str]) -> list[Row]:
        # Point reads side by side, not one query with `RowKey eq a or RowKey eq b ...`: Azure runs such
        # an `or` filter as a scan of the whole partition, and SyncKeys partitions only ever grow.
        gate = asyncio.Semaphore(POINT_READS)

        async def read(row_key: str) -> Row | None:
            async with gate:
                return await self.get(table, partition_key, row_key)

        found = await asyncio.gather(*(read(key) for key in dict.fromkeys(row_keys)))
        return [row for row in found if row is not None]

    async def transact(self, table: str, writes: Sequence[tuple[Entity, str]]) -> list[str]:
        if not writes:
            return []
        return await self._transaction(table, list(writes))

    async def _transaction(self, table: str, writes: Sequence[tuple[Entity, str | None]]) -> list[str]:
        """One entity-group transaction: `(entity, None)` upserts (replace), `(entity, "")` inserts,
        `(entity, etag)` replaces if the ETag is still `etag`. Returns the new ETags in order."""
        if len(writes) > MAX_BATCH:
            raise StateError(f"a transaction holds at most {MAX_BATCH} operations")
        operations: list[Any] = []
        for entity, etag in writes:
            if etag is None:
                operations.append(("upsert", _to_sdk(entity), {"mode": UpdateMode.REPLACE}))
            elif etag == "":
                operations.append(("create", _to_sdk(entity)))
            else:
                condition = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
                operations.append(("update", _to_sdk(entity), {"mode": UpdateMode.REPLACE, **condition}))
        with _storage_errors("transaction"):
            try:
                results = await self._client(table).submit_transaction(operations)
            except TableTransactionError as exc:  # one operation's condition failed: nothing was written
                if _error_code(exc) in _LOST_RACE:
                    raise ConcurrencyError(
                        f"table transaction: someone else wrote first ({exc.status_code})"
                    ) from exc
                raise
        return [_etag(result) for result in results]

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        await self._service.close()


class TableStateStore(EntityStateStore):
    """`StateStore` over Azure Table Storage. Owns `service` (closed by `aclose`), not the credential."""

    def __init__(
        self, service: TableServiceClient, *, clock: Clock | None = None, table_prefix: str = ""
    ) -> None:
        super().__init__(AzureTables(service), clock=clock, table_prefix=table_prefix)

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str,
        *,
        clock: Clock | None = None,
        table_prefix: str = "",
        timeouts: tuple[float, float] = TIMEOUTS,
    ) -> TableStateStore:
        """`timeouts`: seconds to connect and to wait for an answer, per request (tests shorten them)."""
        service = TableServiceClient.from_connection_string(connection_string, **_client_options(timeouts))
        return cls(service, clock=clock, table_prefix=table_prefix)

    @classmethod
    def from_service_uri(
        cls,
        table_service_uri: str,
        credential: AsyncTokenCredential,
        *,
        clock: Clock | None = None,
        table_prefix: str = "",
        timeouts: tuple[float, float] = TIMEOUTS,
    ) -> TableStateStore:
        service = TableServiceClient(
            endpoint=table_service_uri, credential=credential, **_client_options(timeouts)
        )
        return cls(service, clock=clock, table_prefix=table_prefix)


def _client_options(timeouts: tuple[float, float]) -> dict[str, Any]:
    connect, read = timeouts
    return {"use_env_settings": proxy_settings_in_env(), "connection_timeout": connect, "read_timeout": read}


def proxy_settings_in_env() -> bool:
    """Whether a proxy or netrc is configured in the environment. Only then does the SDK's aiohttp
    session read the environment (`trust_env`): it looks it up on every request, two thread hops each
    (about a third of a millisecond), for settings that an Azure Functions host rarely has."""

    names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "WS_PROXY", "WSS_PROXY", "NETRC")
    if any(os.environ.get(name) or os.environ.get(name.lower()) for name in names):
        return True
    return any((Path.home() / name).exists() for name in (".netrc", "_netrc"))


class _RowMissing(Exception):
    pass


@contextlib.contextmanager
def _storage_errors(operation: str, *, missing_is_conflict: bool = False) -> Iterator[None]:
    try:
        yield
    except (ResourceModifiedError, ResourceExistsError) as exc:
        raise ConcurrencyError(f"table {operation}: someone else wrote first ({exc.status_code})") from exc
    except ResourceNotFoundError as exc:
        if _error_code(exc) == "TableNotFound":
            raise StateError(f"table {operation}: the table does not exist (run ensure_tables)") from exc
        if missing_is_conflict:
            raise ConcurrencyError(f"table {operation}: the row was deleted meanwhile") from exc
        raise _RowMissing from exc
    except HttpResponseError as exc:
        raise StateError(f"table {operation} failed: {exc.status_code} {_error_code(exc)}") from exc
    except AzureError as exc:
        raise StateError(f"table {operation} failed: {type(exc).__name__}") from exc


def _error_code(exc: HttpResponseError) -> str:
    code = getattr(exc, "error_code", None)
    if isinstance(code, Enum):
        code = code.value
    headers = getattr(exc.response, "headers", None) or {}
    if not code:
        code = headers.get("x-ms-error-code")
    return str(code or "")


def _to_sdk(entity: Entity) -> dict[str, Any]:
    """Our plain values as the SDK wants them (big ints must be typed Int64 explicitly)."""

    out: dict[str, Any] = {}
    for name, value in entity.items():
        if isinstance(value, int) and not isinstance(value, bool) and not -_INT32 <= value < _INT32:
            out[name] = EntityProperty(value, EdmType.INT64)
        elif isinstance(value, str):
            out[name] = str(value)  # a str subclass (a StreamId) as the plain text the SDK takes
        else:
            out[name] = value
    return out


def _row(entity: Mapping[str, Any]) -> Row:
    values: Entity = {}
    for name, value in entity.items():
        if isinstance(value, EntityProperty):  # Int64, Guid and the like come wrapped
            value = value.value
        if isinstance(value, datetime):  # the SDK's datetime subclass, as a plain UTC datetime
            value = utc(value)
        values[name] = value
    metadata = getattr(entity, "metadata", {})
    return Row(values, str(metadata.get("etag") or ""))


def _etag(metadata: Mapping[str, Any]) -> str:
    etag = metadata.get("etag")
    if not etag:
        raise StateError("the table service returned no ETag")
    return str(etag)
