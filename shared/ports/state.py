"""The state ports: what the engine, the sweep and the functions keep in Table and Queue Storage.

The tables, their keys and columns, and which record each row holds: docs/state.md §2 (the one
description of the schema). Keys are encoded by `shared/state/keys.py` (docs/state.md §3), so any UPN,
folder id or internetMessageId is accepted.

Every port here has two implementations that pass the same contract suite
(`tests/contract/test_state_port.py`): the in-memory one (`shared/state/memory.py`) and the
Table/Queue Storage one (`shared/state/tables.py`), run against Azurite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from shared.errors import ConcurrencyError
from shared.model import (
    Cursor,
    Decision,
    Issue,
    Job,
    KeyRecord,
    Lease,
    Link,
    SubscriptionRecord,
    UserRow,
)


class UserStore(Protocol):
    async def list_users(self) -> list[UserRow]: ...

    async def get_user(self, upn: str) -> UserRow | None: ...

    async def put_config(self, upn: str, columns: Mapping[str, Any]) -> None:
        """Create the row or merge these admin columns into it."""
        ...

    async def update_status(self, upn: str, columns: Mapping[str, Any]) -> None:
        """Merge service-written status columns (State, LastSyncUtc, LastError, counts ...)."""
        ...

    async def delete_user(self, upn: str) -> None: ...


class CursorStore(Protocol):
    async def get_cursor(self, user: str, stream: str) -> Cursor:
        """The saved cursor, or an empty `Cursor()` (etag "") when none was saved."""
        ...

    async def save_cursor(self, user: str, stream: str, cursor: Cursor) -> Cursor:
        """Write conditionally on `cursor.etag` ("" = the row must not exist yet). Returns the cursor
        with its new etag. Raises ConcurrencyError when someone else wrote first."""
        ...

    async def list_cursors(self, user: str) -> dict[str, Cursor]: ...

    async def delete_cursor(self, user: str, stream: str) -> None: ...


class LeaseStore(Protocol):
    async def acquire(
        self, user: str, stream: str, owner: str, ttl_seconds: float, holder: str = ""
    ) -> Lease | None:
        """Take the lease if it is free or expired, recording who takes it (`holder`: host and process).
        If another live holder has it, set its pending flag (so the holder runs again before letting
        go) and return None."""
        ...

    async def get_lease(self, user: str, stream: str) -> Lease | None:
        """The lease as it stands, when a job holds it (expired or not); None when it is free."""
        ...

    async def break_lease(self, lease: Lease) -> None:
        """Free a lease whose holder is gone (an admin's take-over), conditionally on `lease.etag`:
        raises ConcurrencyError when it changed since it was read (renewed, released, taken)."""
        ...

    async def renew(self, lease: Lease, ttl_seconds: float) -> Lease:
        """Extend the expiry. Raises ConcurrencyError if the lease was lost (expired and taken)."""
        ...

    async def release(self, lease: Lease) -> bool:
        """Let go. Returns False, keeping the lease and clearing the flag, when another job set the
        pending flag meanwhile: the holder must run again and call release again. Returns True
        when released (or when the lease had already been lost to someone else)."""
        ...

    async def mark_queued(self, user: str, stream: str, within_seconds: float) -> bool:
        """Coalescing for the notification path: True if the caller should enqueue a job (no job was
        marked queued for this user+stream in the last `within_seconds`), False if one already is."""
        ...

    async def clear_queued(self, user: str, stream: str) -> None:
        """Called by the worker when it starts a job, before it reads Graph."""
        ...


class LinkStore(Protocol):
    async def get_link(self, user: str, stream: str, item_id: str) -> Link | None: ...

    async def get_links(self, user: str, stream: str, item_ids: Sequence[str]) -> dict[str, Link]: ...

    async def list_links(self, user: str, stream: str) -> list[Link]: ...

    async def put_links(self, links: Sequence[Link]) -> None:
        """Upsert (unconditional). Batched in entity-group transactions per partition."""
        ...

    async def delete_link(self, user: str, stream: str, item_id: str) -> None: ...


class KeyStore(Protocol):
    async def get_key(self, key: str) -> KeyRecord | None: ...

    async def get_keys(self, keys: Sequence[str]) -> dict[str, KeyRecord]:
        """The rows of these keys that exist, by key: `get_key` for many, read side by side."""
        ...

    async def put_key(self, record: KeyRecord) -> KeyRecord:
        """Conditional on `record.etag` ("" = must not exist). Raises ConcurrencyError on a lost race."""
        ...

    async def put_keys(self, records: Sequence[KeyRecord]) -> list[KeyRecord | ConcurrencyError]:
        """`put_key` for many records with distinct keys, each conditional on its own etag, written in
        entity-group transactions per partition. Returns one outcome per record, in order: the record
        with its new etag, or the `ConcurrencyError` of a record whose condition failed (a transaction
        with a failed condition is redone row by row, so a lost race costs only its own row)."""
        ...


class SubscriptionStore(Protocol):
    async def list_subscriptions(self, user: str | None = None) -> list[SubscriptionRecord]: ...

    async def get_subscription(self, subscription_id: str) -> SubscriptionRecord | None:
        """By Graph subscription id (the notification path's lookup; must be one point read)."""
        ...

    async def put_subscription(self, record: SubscriptionRecord) -> None: ...

    async def delete_subscription(self, user: str, resource: str) -> None: ...


class IssueStore(Protocol):
    async def record_issue(self, issue: Issue) -> Issue:
        """Create, or bump attempts/last_seen/reason of an existing issue for the same item."""
        ...

    async def list_issues(self, user: str, stream: str | None = None) -> list[Issue]: ...

    async def resolve_issue(self, user: str, item_key: str) -> None: ...


class DecisionStore(Protocol):
    async def record_decisions(self, decisions: Sequence[Decision]) -> None:
        """Upsert; batched in entity-group transactions per partition."""
        ...

    async def get_decision(self, user: str, item_key: str) -> Decision | None: ...


class JobQueue(Protocol):
    async def enqueue(self, job: Job, delay_seconds: float = 0) -> None: ...


class StateStore(
    UserStore,
    CursorStore,
    LeaseStore,
    LinkStore,
    KeyStore,
    SubscriptionStore,
    IssueStore,
    DecisionStore,
    Protocol,
):
    """All the tables together (one object per deployment; built by `shared/wiring.py`)."""

    async def ensure_tables(self) -> None: ...

    async def aclose(self) -> None: ...
