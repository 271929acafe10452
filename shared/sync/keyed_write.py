"""One CRM record per global key, however many mailboxes hold the item (SyncKeys).

A journal or appointment may be seen by several synced mailboxes at once. Each writer reads the key's
row, merges its view into what is recorded, upserts the merged record in the CRM (idempotent by key)
and writes the row back conditionally on its ETag. A writer that loses the race merges again with
what the winner wrote, so the last CRM write always holds every mailbox's contribution.
`write_keyed_many` does the same for a page of records in a few round trips.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Protocol, TypeVar

from shared.errors import ConcurrencyError, CrmError, CrmRetryableError
from shared.model import CrmRef, KeyRecord, PersonRef
from shared.ports.state import KeyStore


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
    doubt_first: bool = False,
) -> bool:
    """Merge `record` (this mailbox's view) with the key's row and write both. False: nothing new.

    With `doubt_first`, an existing row first loses its fingerprint, so it no longer vouches for what
    the CRM holds: a write the CRM applied whose answer was lost (a timeout, a 5xx after the write, a
    worker that died) is written again when the item comes back to what the row held (a meeting moved
    and moved back), instead of being taken for nothing new. Costs one row write per rewrite."""
    for _ in range(ATTEMPTS):
        row = await keys.get_key(record.key)
        merged, needed = merge(row, record, mailbox)
        if not needed:
            return False
        if doubt_first and row is not None and row.fingerprint:
            try:
                row = await keys.put_key(replace(row, fingerprint=""))
            except ConcurrencyError:
                continue
        ref = await upsert(merged)
        try:
            await keys.put_key(key_record_after(row, merged, ref.id))
            return True
        except ConcurrencyError:
            continue  # another mailbox wrote this key meanwhile: merge again with what it wrote
    raise ConcurrencyError(f"key kept changing under concurrent writers: {record.key[:40]}")


async def write_keyed_many(
    keys: KeyStore,
    records: Sequence[R],
    mailbox: str,
    *,
    merge: Callable[[KeyRecord | None, R, str], tuple[R, bool]],
    upsert_many: Callable[[Sequence[R]], Awaitable[Sequence[CrmRef | CrmError]]],
    upsert: Callable[[R], Awaitable[CrmRef]],
    key_record_after: Callable[[KeyRecord | None, R, str], KeyRecord],
) -> list[bool | CrmError]:
    """`write_keyed` for many records in a few round trips: the keys' rows read together
    (`get_keys`), the merged records written in one bulk CRM call, the rows written in transactions
    (`put_keys`), each row still conditional on its ETag. A row another mailbox changed meanwhile, and
    a key repeated in `records`, go through `write_keyed`'s merge loop one at a time afterwards.

    Returns per record: True (written), False (nothing new), or the `CrmError` that stopped that record
    (a CRM call that failed as a whole stops every record it carried). Raises what the state store
    raises, and `ConcurrencyError` as `write_keyed` does."""
    first: dict[str, int] = {}
    again: list[int] = []  # records whose key came earlier in `records`, or whose row write lost a race
    for n, record in enumerate(records):
        if record.key in first:
            again.append(n)
        else:
            first[record.key] = n
    outcomes: list[bool | CrmError] = [False] * len(records)
    rows = await keys.get_keys(list(first)) if first else {}
    due: list[tuple[int, KeyRecord | None, R]] = []
    for key, n in first.items():
        merged, needed = merge(rows.get(key), records[n], mailbox)
        if needed:
            due.append((n, rows.get(key), merged))
    refs: Sequence[CrmRef | CrmError]
    try:
        refs = await upsert_many([merged for _, _, merged in due]) if due else []
    except CrmError as error:
        refs = [error] * len(due)
    if len(refs) != len(due):
        raise CrmRetryableError(f"the CRM answered {len(refs)} results for {len(due)} journals")
    written: list[tuple[int, KeyRecord]] = []
    for (n, row, merged), ref in zip(due, refs, strict=True):
        if isinstance(ref, CrmError):
            outcomes[n] = ref
        else:
            written.append((n, key_record_after(row, merged, ref.id)))
    saved = await keys.put_keys([after for _, after in written]) if written else []
    for (n, _), result in zip(written, saved, strict=True):
        if isinstance(result, ConcurrencyError):
            again.append(n)  # another mailbox wrote this key meanwhile: merge again with what it wrote
        else:
            outcomes[n] = True
    for n in sorted(again):
        try:
            outcomes[n] = await write_keyed(
                keys, records[n], mailbox, merge=merge, upsert=upsert, key_record_after=key_record_after
            )
        except CrmError as error:
            outcomes[n] = error
    return outcomes


def merged_people(record: KeyRecord, mine: Sequence[PersonRef], looked_up: set[str]) -> tuple[PersonRef, ...]:
    """The people linked under a key once this mailbox's (`mine`) are added. A person another mailbox
    linked is kept unless this mailbox looked the same address up (`looked_up`, normalized) and the CRM
    no longer matches it (deleted or changed there): linking it again would be refused on every run."""
    stored = record.extra.get("people", {})
    found = {p.id for p in mine}
    people = {
        pid: PersonRef(id=pid, **stored[pid])
        for pid in record.people
        if pid in stored and (pid in found or str(stored[pid].get("email") or "").lower() not in looked_up)
    }
    for person in mine:
        people.setdefault(person.id, person)
    return tuple(people.values())
