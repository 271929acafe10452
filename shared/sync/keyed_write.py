"""One CRM record per global key, however many mailboxes hold the item (SyncKeys).

A journal or appointment may be seen by several synced mailboxes at once. Each writer reads the key's
row, merges its view into what is recorded, upserts the merged record in the CRM (idempotent by key)
and writes the row back conditionally on its ETag. A writer that loses the race merges again with
what the winner wrote, so the last CRM write always holds every mailbox's contribution.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from shared.errors import ConcurrencyError
from shared.model import CrmRef
from shared.state.port import KeyRecord, KeyStore


class Keyed(Protocol):
    @property
    def key(self) -> str: ...


R = TypeVar("R", bound=Keyed)
ATTEMPTS = 8


async def write_keyed(
    keys: KeyStore,
    record: R,
    mailbox: str,
    *,
    merge: Callable[[KeyRecord | None, R, str], tuple[R, bool]],
    upsert: Callable[[R], Awaitable[CrmRef]],
    key_record_after: Callable[[KeyRecord | None, R, str], KeyRecord],
) -> bool:
    """Merge `record` (this mailbox's view) with the key's row and write both. False: nothing new."""
    for _ in range(ATTEMPTS):
        row = await keys.get_key(record.key)
        merged, needed = merge(row, record, mailbox)
        if not needed:
            return False
        ref = await upsert(merged)
        try:
            await keys.put_key(key_record_after(row, merged, ref.id))
            return True
        except ConcurrencyError:
            continue  # another mailbox wrote this key meanwhile: merge again with what it wrote
    raise ConcurrencyError(f"key kept changing under concurrent writers: {record.key[:40]}")
