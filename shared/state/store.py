"""Every state port, written once over `EntityTables` (Azure Table Storage or its in-memory twin).

The rows and columns written here are described in docs/state.md §2 (keys are made by
`shared/state/keys.py`; every row also keeps its original values; mappings and tuples are stored as
JSON strings, datetimes as UTC).

Leases behave as docs/state.md §5 says: one row per user+stream, changed only by ETag-conditional
writes after a fresh read, retried when another writer got in between; release and the pending write
are conditional on the same row's ETag, so one of them always sees the other.

The texts the service writes from error messages (`LastError`, `ReviewPending`, `Warnings` on
SyncUsers; `Reason` of issues and decisions) are stored `printable()`, at most `STORED_TEXT_CHARS`: one
line, no control characters, whatever text a CRM or Graph put in the error, and never past what a
table column holds.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from shared.errors import ConcurrencyError
from shared.model import (
    Cursor,
    Decision,
    Issue,
    KeyRecord,
    Lease,
    Link,
    LinkKind,
    Outcome,
    SubscriptionRecord,
    UserRow,
)
from shared.printable import printable
from shared.state.entities import (
    KEY_COLUMNS,
    MAX_BATCH,
    Entity,
    EntityTables,
    Row,
    from_json,
    to_column,
    to_json,
    utc,
)
from shared.state.extras import cursor_extra, cursor_parts, key_extra, key_parts, link_extra, link_parts
from shared.state.keys import decode_key, encode_key, join_key, key_partition, prefix_range

Clock = Callable[[], datetime]

USERS, CURSORS, LEASES, LINKS = "SyncUsers", "SyncCursors", "SyncLeases", "SyncLinks"
KEYS, SUBSCRIPTIONS, ISSUES, DECISIONS = "SyncKeys", "SyncSubscriptions", "SyncIssues", "SyncDecisions"
TABLES = (USERS, CURSORS, LEASES, LINKS, KEYS, SUBSCRIPTIONS, ISSUES, DECISIONS)

USER_PARTITION = "user"
INDEX_PARTITION = "%id"  # SyncSubscriptions rows keyed by subscription id (never an encoded user)
MAX_ATTEMPTS = 10  # optimistic-concurrency retries before a ConcurrencyError
MAX_BATCH_BYTES = 3_500_000  # a transaction's body must stay under 4 MiB
POINT_READS = 16  # concurrent point reads in get_links
KEY_REQUESTS = 8  # partitions read / transactions written at once in get_keys and put_keys

_T = TypeVar("_T")


def system_clock() -> datetime:
    return datetime.now(UTC)


class EntityStateStore:
    """`StateStore` over any `EntityTables` backend. Build it through `TableStateStore` or
    `InMemoryStateStore`; `table_prefix` gives each test (or tenant) its own set of tables."""

    def __init__(self, tables: EntityTables, *, clock: Clock | None = None, table_prefix: str = "") -> None:
        self._tables = tables
        self._clock = clock or system_clock
        self._prefix = table_prefix

    def _name(self, table: str) -> str:
        return self._prefix + table

    def _now(self) -> datetime:
        return utc(self._clock())

    async def ensure_tables(self) -> None:
        await self._tables.create_tables([self._name(t) for t in TABLES])

    async def aclose(self) -> None:
        await self._tables.aclose()

    # -- users ----------------------------------------------------------------------------------

    async def list_users(self) -> list[UserRow]:
        rows = await self._tables.query(self._name(USERS), USER_PARTITION)
        return [_user(row) for row in rows]

    async def get_user(self, upn: str) -> UserRow | None:
        row = await self._tables.get(self._name(USERS), USER_PARTITION, encode_key(upn))
        return UserRow(upn=upn, columns=row.columns(), etag=row.etag) if row else None

    async def put_config(self, upn: str, columns: Mapping[str, Any]) -> None:
        await self._merge_user(upn, columns)

    async def update_status(self, upn: str, columns: Mapping[str, Any]) -> None:
        await self._merge_user(
            upn, {k: _stored_text(v) if k in STATUS_TEXTS else v for k, v in columns.items()}
        )

    async def delete_user(self, upn: str) -> None:
        await self._tables.delete(self._name(USERS), USER_PARTITION, encode_key(upn))

    async def _merge_user(self, upn: str, columns: Mapping[str, Any]) -> None:
        """Merge `columns` into the row; a None value removes that column."""

        values = {name: to_column(value) for name, value in columns.items() if name not in KEY_COLUMNS}
        keys = {"PartitionKey": USER_PARTITION, "RowKey": encode_key(upn)}
        kept = {k: v for k, v in values.items() if v is not None}
        if len(kept) == len(values):
            await self._tables.upsert(self._name(USERS), {**keys, **kept}, merge=True)
            return

        async def attempt() -> None:
            row = await self._tables.get(self._name(USERS), *keys.values())
            if row is None:
                await self._tables.insert(self._name(USERS), {**keys, **kept})
                return
            entity = {k: v for k, v in row.entity.items() if values.get(k, "") is not None}
            await self._tables.replace(self._name(USERS), {**entity, **kept}, row.etag)

        await _retry(attempt)

    # -- cursors --------------------------------------------------------------------------------

    async def get_cursor(self, user: str, stream: str) -> Cursor:
        row = await self._tables.get(self._name(CURSORS), encode_key(user), encode_key(stream))
        return _cursor(row) if row else Cursor()

    async def save_cursor(self, user: str, stream: str, cursor: Cursor) -> Cursor:
        entity: Entity = {
            "PartitionKey": encode_key(user),
            "RowKey": encode_key(stream),
            "User": user,
            "Stream": stream,
            "Link": cursor.link,
            "LinkKind": str(cursor.link_kind),
            "Extra": to_json(cursor_extra(stream, cursor)),
        }
        _put_times(
            entity,
            RoundStarted=cursor.round_started,
            WindowStart=cursor.window_start,
            WindowEnd=cursor.window_end,
        )
        if cursor.etag:
            etag = await self._tables.replace(self._name(CURSORS), entity, cursor.etag)
        else:
            etag = await self._tables.insert(self._name(CURSORS), entity)
        return _cursor(Row(entity, etag))

    async def list_cursors(self, user: str) -> dict[str, Cursor]:
        rows = await self._tables.query(self._name(CURSORS), encode_key(user))
        return {_text(row, "Stream") or decode_key(row.row_key): _cursor(row) for row in rows}

    async def delete_cursor(self, user: str, stream: str) -> None:
        await self._tables.delete(self._name(CURSORS), encode_key(user), encode_key(stream))

    # -- leases ---------------------------------------------------------------------------------

    async def acquire(
        self, user: str, stream: str, owner: str, ttl_seconds: float, holder: str = ""
    ) -> Lease | None:
        if not owner:
            raise ValueError("a lease owner id must not be empty")
        table, keys = self._name(LEASES), _lease_keys(user, stream)

        async def attempt() -> Lease | None:
            row = await self._tables.get(table, *keys)
            now = self._now()
            taken: Entity = {
                "PartitionKey": keys[0],
                "RowKey": keys[1],
                "User": user,
                "Stream": stream,
                "Owner": owner,
                "Expires": now + timedelta(seconds=ttl_seconds),
                "Ttl": float(ttl_seconds),
                "Pending": False,
                "Holder": holder,
                "Acquired": now,
            }
            if row is None:
                return _lease(Row(taken, await self._tables.insert(table, taken)))
            current = _text(row, "Owner")
            if current == owner:  # a retried acquire that had succeeded: keep any pending flag
                entity = {**row.entity, **taken, "Pending": row.get("Pending") is True}
                return _lease(Row(entity, await self._tables.replace(table, entity, row.etag)))
            if not current or _expired(row, now):
                entity = {**row.entity, **taken}
                return _lease(Row(entity, await self._tables.replace(table, entity, row.etag)))
            if row.get("Pending") is not True:
                await self._tables.replace(table, {**row.entity, "Pending": True}, row.etag)
            return None

        return await _retry(attempt)

    async def get_lease(self, user: str, stream: str) -> Lease | None:
        row = await self._tables.get(self._name(LEASES), *_lease_keys(user, stream))
        return _lease(row) if row is not None and _text(row, "Owner") else None

    async def break_lease(self, lease: Lease) -> None:
        table, keys = self._name(LEASES), _lease_keys(lease.user, lease.stream)
        row = await self._tables.get(table, *keys)
        if row is None or row.etag != lease.etag:
            raise ConcurrencyError("the lease changed since it was read")
        entity = {**row.entity, "Owner": "", "Pending": False, "Expires": self._now(), "Holder": ""}
        await self._tables.replace(table, entity, row.etag)

    async def renew(self, lease: Lease, ttl_seconds: float) -> Lease:
        table, keys = self._name(LEASES), _lease_keys(lease.user, lease.stream)

        async def attempt() -> Lease:
            row = await self._tables.get(table, *keys)
            if row is None or _text(row, "Owner") != lease.owner:
                raise _LeaseLost
            entity = {
                **row.entity,
                "Expires": self._now() + timedelta(seconds=ttl_seconds),
                "Ttl": float(ttl_seconds),
            }
            return _lease(Row(entity, await self._tables.replace(table, entity, row.etag)))

        try:
            return await _retry(attempt)
        except _LeaseLost:
            raise ConcurrencyError("the lease was lost: it expired and another job took it") from None

    async def release(self, lease: Lease) -> bool:
        table, keys = self._name(LEASES), _lease_keys(lease.user, lease.stream)

        async def attempt() -> bool:
            row = await self._tables.get(table, *keys)
            if row is None or _text(row, "Owner") != lease.owner:
                return True  # already lost to someone else: nothing of ours to let go
            now = self._now()
            if row.get("Pending") is True:  # run again, with a fresh expiry for that run
                ttl = row.get("Ttl")
                expires = now + timedelta(seconds=float(ttl)) if isinstance(ttl, int | float) else now
                prior = row.get("Expires")
                if isinstance(prior, datetime):
                    expires = max(expires, prior)
                entity = {**row.entity, "Pending": False, "Expires": expires}
                await self._tables.replace(table, entity, row.etag)
                return False
            entity = {**row.entity, "Owner": "", "Pending": False, "Expires": now}
            await self._tables.replace(table, entity, row.etag)
            return True

        return await _retry(attempt)

    async def mark_queued(self, user: str, stream: str, within_seconds: float) -> bool:
        table, keys = self._name(LEASES), _lease_keys(user, stream)

        async def attempt() -> bool:
            row = await self._tables.get(table, *keys)
            now = self._now()
            if row is None:
                entity: Entity = {
                    "PartitionKey": keys[0],
                    "RowKey": keys[1],
                    "User": user,
                    "Stream": stream,
                    "Owner": "",
                    "Expires": now,
                    "Pending": False,
                    "QueuedAt": now,
                }
                await self._tables.insert(table, entity)
                return True
            queued = row.get("QueuedAt")
            if isinstance(queued, datetime) and now - queued < timedelta(seconds=within_seconds):
                return False
            await self._tables.replace(table, {**row.entity, "QueuedAt": now}, row.etag)
            return True

        return await _retry(attempt)

    async def clear_queued(self, user: str, stream: str) -> None:
        table, keys = self._name(LEASES), _lease_keys(user, stream)

        async def attempt() -> None:
            row = await self._tables.get(table, *keys)
            if row is None or "QueuedAt" not in row.entity:
                return
            entity = {k: v for k, v in row.entity.items() if k != "QueuedAt"}
            await self._tables.replace(table, entity, row.etag)

        await _retry(attempt)

    # -- links ----------------------------------------------------------------------------------

    async def get_link(self, user: str, stream: str, item_id: str) -> Link | None:
        row = await self._tables.get(self._name(LINKS), encode_key(user), join_key(stream, item_id))
        return _link(row) if row else None

    async def get_links(self, user: str, stream: str, item_ids: Sequence[str]) -> dict[str, Link]:
        gate = asyncio.Semaphore(POINT_READS)

        async def read(item_id: str) -> Link | None:
            async with gate:
                return await self.get_link(user, stream, item_id)

        found = await asyncio.gather(*(read(i) for i in dict.fromkeys(item_ids)))
        return {link.item_id: link for link in found if link is not None}

    async def list_links(self, user: str, stream: str) -> list[Link]:
        rows = await self._tables.query(self._name(LINKS), encode_key(user), *prefix_range(stream))
        return [_link(row) for row in rows]

    async def put_links(self, links: Sequence[Link]) -> None:
        await self._upsert_batched(self._name(LINKS), (_link_entity(link) for link in links))

    async def delete_link(self, user: str, stream: str, item_id: str) -> None:
        await self._tables.delete(self._name(LINKS), encode_key(user), join_key(stream, item_id))

    # -- global keys ----------------------------------------------------------------------------

    async def get_key(self, key: str) -> KeyRecord | None:
        row = await self._tables.get(self._name(KEYS), key_partition(key), encode_key(key))
        return _key_record(row) if row else None

    async def get_keys(self, keys: Sequence[str]) -> dict[str, KeyRecord]:
        partitions: dict[str, list[str]] = {}
        for key in dict.fromkeys(keys):
            partitions.setdefault(key_partition(key), []).append(encode_key(key))
        gate = asyncio.Semaphore(KEY_REQUESTS)

        async def read(partition: str, row_keys: list[str]) -> list[Row]:
            async with gate:
                return await self._tables.get_many(self._name(KEYS), partition, row_keys)

        found = await asyncio.gather(*(read(p, rows) for p, rows in partitions.items()))
        records = (_key_record(row) for rows in found for row in rows)
        return {record.key: record for record in records}

    async def put_key(self, record: KeyRecord) -> KeyRecord:
        entity = _key_entity(record)
        if record.etag:
            etag = await self._tables.replace(self._name(KEYS), entity, record.etag)
        else:
            etag = await self._tables.insert(self._name(KEYS), entity)
        return _key_record(Row(entity, etag))

    async def put_keys(self, records: Sequence[KeyRecord]) -> list[KeyRecord | ConcurrencyError]:
        if len({r.key for r in records}) != len(records):
            raise ValueError("put_keys takes each key once")
        table = self._name(KEYS)
        outcomes: list[KeyRecord | ConcurrencyError | None] = [None] * len(records)
        partitions: dict[str, list[tuple[int, Entity]]] = {}
        for n, record in enumerate(records):
            entity = _key_entity(record)
            partitions.setdefault(entity["PartitionKey"], []).append((n, entity))
        gate = asyncio.Semaphore(KEY_REQUESTS)

        async def one(n: int) -> None:
            try:
                outcomes[n] = await self.put_key(records[n])
            except ConcurrencyError as lost:
                outcomes[n] = lost

        async def write(chunk: list[tuple[int, Entity]]) -> None:
            async with gate:
                try:
                    etags = await self._tables.transact(table, [(e, records[n].etag) for n, e in chunk])
                except ConcurrencyError:  # nothing written: each row on its own, so only the lost ones fail
                    for n, _ in chunk:
                        await one(n)
                    return
            for (n, entity), etag in zip(chunk, etags, strict=True):
                outcomes[n] = _key_record(Row(entity, etag))

        chunks = [c for rows in partitions.values() for c in _chunks(rows, lambda row: row[1])]
        await asyncio.gather(*(write(chunk) for chunk in chunks))
        assert all(o is not None for o in outcomes)
        return [o for o in outcomes if o is not None]

    # -- subscriptions --------------------------------------------------------------------------

    async def list_subscriptions(self, user: str | None = None) -> list[SubscriptionRecord]:
        table = self._name(SUBSCRIPTIONS)
        rows = await self._tables.query(table, encode_key(user) if user is not None else None)
        return [_subscription(row) for row in rows if row.partition_key != INDEX_PARTITION]

    async def get_subscription(self, subscription_id: str) -> SubscriptionRecord | None:
        row = await self._tables.get(self._name(SUBSCRIPTIONS), INDEX_PARTITION, encode_key(subscription_id))
        return _subscription(row) if row else None

    async def put_subscription(self, record: SubscriptionRecord) -> None:
        table = self._name(SUBSCRIPTIONS)
        keys = (encode_key(record.user), encode_key(record.resource))
        before = await self._tables.get(table, *keys)
        columns: Entity = {
            "User": record.user,
            "Resource": record.resource,
            "Stream": record.stream,
            "SubscriptionId": record.subscription_id,
            "ClientState": record.client_state,
            "Expires": utc(record.expires),
        }
        # The index row first: every listed subscription can then be looked up by its id.
        index_key = encode_key(record.subscription_id)
        await self._tables.upsert(
            table, {"PartitionKey": INDEX_PARTITION, "RowKey": index_key, **columns}, merge=False
        )
        await self._tables.upsert(table, {"PartitionKey": keys[0], "RowKey": keys[1], **columns}, merge=False)
        old_id = _text(before, "SubscriptionId") if before else ""
        if old_id and old_id != record.subscription_id:
            await self._tables.delete(table, INDEX_PARTITION, encode_key(old_id))

    async def delete_subscription(self, user: str, resource: str) -> None:
        table = self._name(SUBSCRIPTIONS)
        keys = (encode_key(user), encode_key(resource))
        row = await self._tables.get(table, *keys)
        if row is None:
            return
        await self._tables.delete(table, *keys)
        await self._tables.delete(table, INDEX_PARTITION, encode_key(_text(row, "SubscriptionId")))

    # -- issues ---------------------------------------------------------------------------------

    async def record_issue(self, issue: Issue) -> Issue:
        table = self._name(ISSUES)
        keys = (encode_key(issue.user), encode_key(issue.item_key))

        async def attempt() -> Issue:
            row = await self._tables.get(table, *keys)
            now = self._now()
            last_seen = utc(issue.last_seen) if issue.last_seen else now
            entity: Entity = {
                "PartitionKey": keys[0],
                "RowKey": keys[1],
                "User": issue.user,
                "ItemKey": issue.item_key,
                "Stream": issue.stream,
                "Reason": _stored_text(issue.reason),
                "ItemId": issue.item_id,
                "LastSeen": last_seen,
            }
            if row is None:
                first = utc(issue.first_seen) if issue.first_seen else last_seen
                entity.update(Attempts=max(1, issue.attempts), FirstSeen=first)
                return _issue(Row(entity, await self._tables.insert(table, entity)))
            attempts = row.get("Attempts")
            entity["Attempts"] = (attempts if isinstance(attempts, int) else 0) + 1
            first_seen = row.get("FirstSeen")
            entity["FirstSeen"] = first_seen if isinstance(first_seen, datetime) else last_seen
            if not issue.item_id:
                entity["ItemId"] = _text(row, "ItemId")
            return _issue(Row(entity, await self._tables.replace(table, entity, row.etag)))

        return await _retry(attempt)

    async def list_issues(self, user: str, stream: str | None = None) -> list[Issue]:
        rows = await self._tables.query(self._name(ISSUES), encode_key(user))
        issues = [_issue(row) for row in rows]
        return [i for i in issues if stream is None or i.stream == stream]

    async def resolve_issue(self, user: str, item_key: str) -> None:
        await self._tables.delete(self._name(ISSUES), encode_key(user), encode_key(item_key))

    # -- decisions ------------------------------------------------------------------------------

    async def record_decisions(self, decisions: Sequence[Decision]) -> None:
        await self._upsert_batched(self._name(DECISIONS), (_decision_entity(d) for d in decisions))

    async def get_decision(self, user: str, item_key: str) -> Decision | None:
        row = await self._tables.get(self._name(DECISIONS), encode_key(user), encode_key(item_key))
        return _decision(row) if row else None

    # -- batches --------------------------------------------------------------------------------

    async def _upsert_batched(self, table: str, entities: Iterable[Entity]) -> None:
        """Group by partition (the last write of a row wins), then one transaction per chunk."""

        partitions: dict[str, dict[str, Entity]] = {}
        for entity in entities:
            partitions.setdefault(entity["PartitionKey"], {})[entity["RowKey"]] = entity
        for rows in partitions.values():
            for chunk in _chunks(list(rows.values()), lambda entity: entity):
                await self._tables.upsert_batch(table, chunk)


# -------------------------------------------------------------------------------------------------
# Helpers: retries, chunks, row <-> record


class _LeaseLost(Exception):
    pass


async def _retry(attempt: Callable[[], Awaitable[_T]]) -> _T:
    """Run `attempt` again while an ETag condition fails (someone wrote between our read and write),
    after a short random pause that grows, so racing writers spread out instead of colliding again."""

    for n in range(MAX_ATTEMPTS - 1):
        try:
            return await attempt()
        except ConcurrencyError:
            await asyncio.sleep(random.uniform(0, 0.004 * 2 ** min(n, 5)))
    return await attempt()


def _chunks(items: list[_T], entity_of: Callable[[_T], Entity]) -> Iterable[list[_T]]:
    """`items` (entities, or values holding one) cut into transactions: at most MAX_BATCH rows and
    about MAX_BATCH_BYTES of request body each."""

    chunk: list[_T] = []
    size = 0
    for item in items:
        weight = _wire_bytes(entity_of(item))
        if chunk and (len(chunk) == MAX_BATCH or size + weight > MAX_BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += weight
    if chunk:
        yield chunk


def _wire_bytes(entity: Entity) -> int:
    """An upper estimate of one operation's share of a transaction body: the SDK sends JSON with
    non-ASCII escaped (up to 12 bytes a character), plus the operation's own headers and URL."""

    body = json.dumps({k: str(v) for k, v in entity.items()}, ensure_ascii=True)
    return len(body) + 2 * (len(entity["PartitionKey"]) + len(entity["RowKey"])) * 3 + 600


def _lease_keys(user: str, stream: str) -> tuple[str, str]:
    return encode_key(user), encode_key(stream)


def _expired(row: Row, now: datetime) -> bool:
    expires = row.get("Expires")
    return not isinstance(expires, datetime) or expires <= now


def _put_times(entity: Entity, **times: datetime | None) -> None:
    for name, value in times.items():
        if value is not None:
            entity[name] = utc(value)


STORED_TEXT_CHARS = 4_000
STATUS_TEXTS = frozenset({"LastError", "ReviewPending", "Warnings"})


def _stored_text(value: Any) -> Any:
    return printable(value, STORED_TEXT_CHARS) if isinstance(value, str) else value


def _text(row: Row | None, column: str) -> str:
    value = row.get(column) if row else None
    return value if isinstance(value, str) else ""


def _time(row: Row, column: str) -> datetime | None:
    value = row.get(column)
    return value if isinstance(value, datetime) else None


def _mapping(row: Row, column: str) -> dict[str, Any]:
    value = from_json(row.get(column), {})
    return value if isinstance(value, dict) else {}


def _strings(row: Row, column: str) -> tuple[str, ...]:
    value = from_json(row.get(column), [])
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _user(row: Row) -> UserRow:
    return UserRow(upn=decode_key(row.row_key), columns=row.columns(), etag=row.etag)


def _cursor(row: Row) -> Cursor:
    kind = _text(row, "LinkKind")
    return Cursor(
        link=_text(row, "Link"),
        link_kind=LinkKind(kind) if kind in LinkKind.__members__.values() else LinkKind.NONE,
        round_started=_time(row, "RoundStarted"),
        window_start=_time(row, "WindowStart"),
        window_end=_time(row, "WindowEnd"),
        **cursor_parts(_text(row, "Stream") or decode_key(row.row_key), _mapping(row, "Extra")),
        etag=row.etag,
    )


def _lease(row: Row) -> Lease:
    expires = _time(row, "Expires")
    assert expires is not None
    return Lease(
        user=_text(row, "User"),
        stream=_text(row, "Stream"),
        owner=_text(row, "Owner"),
        expires=expires,
        holder=_text(row, "Holder"),
        acquired=_time(row, "Acquired"),
        renewed=expires - timedelta(seconds=float(ttl))
        if isinstance(ttl := row.get("Ttl"), int | float)
        else None,
        etag=row.etag,
    )


def _link_entity(link: Link) -> Entity:
    return {
        "PartitionKey": encode_key(link.user),
        "RowKey": join_key(link.stream, link.item_id),
        "User": link.user,
        "Stream": link.stream,
        "ItemId": link.item_id,
        "CrmKey": link.crm_key,
        "ChangeKey": link.change_key,
        "LocalFingerprint": link.local_fingerprint,
        "CrmFingerprint": link.crm_fingerprint,
        "Extra": to_json(link_extra(link)),
    }


def _link(row: Row) -> Link:
    return Link(
        user=_text(row, "User"),
        stream=_text(row, "Stream"),
        item_id=_text(row, "ItemId"),
        crm_key=_text(row, "CrmKey"),
        change_key=_text(row, "ChangeKey"),
        local_fingerprint=_text(row, "LocalFingerprint"),
        crm_fingerprint=_text(row, "CrmFingerprint"),
        **link_parts(_mapping(row, "Extra")),
        etag=row.etag,
    )


def _key_entity(record: KeyRecord) -> Entity:
    return {
        "PartitionKey": key_partition(record.key),
        "RowKey": encode_key(record.key),
        "Key": record.key,
        "CrmRef": record.crm_ref,
        "Mailboxes": to_json(list(record.mailboxes)),
        "People": to_json([p.id for p in record.people]),
        "Fingerprint": record.fingerprint,
        "Extra": to_json(key_extra(record)),
    }


def _key_record(row: Row) -> KeyRecord:
    return KeyRecord(
        key=_text(row, "Key"),
        crm_ref=_text(row, "CrmRef"),
        mailboxes=_strings(row, "Mailboxes"),
        fingerprint=_text(row, "Fingerprint"),
        **key_parts(_strings(row, "People"), _mapping(row, "Extra")),
        etag=row.etag,
    )


def _subscription(row: Row) -> SubscriptionRecord:
    expires = _time(row, "Expires")
    return SubscriptionRecord(
        user=_text(row, "User"),
        resource=_text(row, "Resource"),
        stream=_text(row, "Stream"),
        subscription_id=_text(row, "SubscriptionId"),
        client_state=_text(row, "ClientState"),
        expires=expires or datetime.min.replace(tzinfo=UTC),
        etag=row.etag,
    )


def _issue(row: Row) -> Issue:
    attempts = row.get("Attempts")
    return Issue(
        user=_text(row, "User"),
        item_key=_text(row, "ItemKey"),
        stream=_text(row, "Stream"),
        reason=_text(row, "Reason"),
        attempts=attempts if isinstance(attempts, int) else 1,
        first_seen=_time(row, "FirstSeen"),
        last_seen=_time(row, "LastSeen"),
        item_id=_text(row, "ItemId"),
    )


def _decision_entity(decision: Decision) -> Entity:
    return {
        "PartitionKey": encode_key(decision.user),
        "RowKey": encode_key(decision.item_key),
        "User": decision.user,
        "ItemKey": decision.item_key,
        "Stream": decision.stream,
        "Outcome": str(decision.outcome),
        "Reason": _stored_text(decision.reason),
        "At": utc(decision.at),
        "CrmKey": decision.crm_key,
        "Details": to_json(dict(decision.details)),
    }


def _outcome(text: str) -> Outcome:
    return Outcome(text) if text in Outcome.__members__.values() else Outcome.FAILED


def _decision(row: Row) -> Decision:
    return Decision(
        user=_text(row, "User"),
        item_key=_text(row, "ItemKey"),
        stream=_text(row, "Stream"),
        outcome=_outcome(_text(row, "Outcome")),
        reason=_text(row, "Reason"),
        at=_time(row, "At") or datetime.min.replace(tzinfo=UTC),
        crm_key=_text(row, "CrmKey"),
        details=_mapping(row, "Details"),
    )
