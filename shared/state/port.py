"""The state ports: what the engine and the functions keep in Azure Table Storage and Queue Storage.

The tables, their keys and columns, and which record each row holds: docs/state.md §2 (the one
description of the schema). Keys are encoded by `shared/state/keys.py` (docs/state.md §3), so any UPN,
folder id or internetMessageId is accepted.

Every port here has two implementations that pass the same contract suite
(`tests/contract/test_state_port.py`): the in-memory one (`shared/state/memory.py`) and the
Table/Queue Storage one (`shared/state/tables.py`), run against Azurite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from shared.errors import ConcurrencyError
from shared.model import Job

# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class UserRow:
    """A raw SyncUsers row: every column as stored (admin config and service status), plus its ETag.
    Parsing and validation of the config columns happen in `shared/users.py`, not here."""

    upn: str
    columns: Mapping[str, Any]
    etag: str = ""


@dataclass(frozen=True)
class Cursor:
    """Where a stream's delta reading stands."""

    link: str = ""  # the last saved nextLink or deltaLink ("" = start a new initial round)
    link_kind: str = ""  # "next" | "delta" | ""
    round_started: datetime | None = None  # when the current initial round began
    window_start: datetime | None = None  # calendar: the window frozen into this round's token
    window_end: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # stream-specific (e.g. CRM feed cursor)
    etag: str = ""  # set by the store on read/save; "" means "no row yet"


@dataclass(frozen=True)
class Lease:
    user: str
    stream: str
    owner: str  # a random id of the job holding it
    expires: datetime
    etag: str = ""


@dataclass(frozen=True)
class Link:
    """What one Graph item became in the CRM, and what we last knew of both sides."""

    user: str
    stream: str
    item_id: str  # Graph id (immutable)
    crm_key: str = ""  # the CRM-side key (journal / appointment key, or contact ref id)
    change_key: str = ""  # Graph changeKey we last wrote or read
    local_fingerprint: str = ""  # fingerprint of the Outlook side's mapped fields
    crm_fingerprint: str = ""  # fingerprint of the CRM side's mapped fields
    extra: Mapping[str, Any] = field(default_factory=dict)
    etag: str = ""


@dataclass(frozen=True)
class KeyRecord:
    """A global key (internetMessageId / appointment key) and what it became, across mailboxes."""

    key: str
    crm_ref: str = ""
    mailboxes: tuple[str, ...] = ()
    people: tuple[str, ...] = ()  # CRM person ids linked so far
    fingerprint: str = ""  # fingerprint of the last record written to the CRM
    extra: Mapping[str, Any] = field(default_factory=dict)
    etag: str = ""


@dataclass(frozen=True)
class SubscriptionRecord:
    user: str
    resource: str  # e.g. "users/{id}/mailFolders('inbox')/messages"
    stream: str  # the stream a notification on it wakes
    subscription_id: str
    client_state: str  # random per subscription, compared in constant time
    expires: datetime
    etag: str = ""


@dataclass(frozen=True)
class Issue:
    """An item that could not be written, with its reason; retried by later runs."""

    user: str
    item_key: str
    stream: str
    reason: str
    attempts: int = 1
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    item_id: str = ""  # Graph id, so the item can be fetched again on retry


@dataclass(frozen=True)
class Decision:
    """Why an item did or did not become a CRM record (`crmsync explain`)."""

    user: str
    item_key: str  # internetMessageId (or Graph id when there is none)
    stream: str
    outcome: str  # "synced" | "skipped" | "failed" | "removed"
    reason: str
    at: datetime
    crm_key: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Ports


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
    async def acquire(self, user: str, stream: str, owner: str, ttl_seconds: float) -> Lease | None:
        """Take the lease if it is free or expired. If another live holder has it, set its pending
        flag (so the holder runs again before letting go) and return None."""
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
