"""One CRM record per global key, however many mailboxes hold the item (SyncKeys).

A journal or appointment may be seen by several synced mailboxes at once. Each writer reads the key's
row, merges its view into what is recorded, upserts the merged record in the CRM (idempotent by key)
and writes the row back conditionally on its ETag. A writer that loses the race merges again with
what the winner wrote, so the last CRM write always holds every mailbox's contribution.
`write_keyed_many` does the same for a page of records in a few round trips.

Keys come from outside: anyone who can send mail chooses a message's Message-ID or a meeting's
iCalUId, and anyone on a thread knows them. So a key's row records the identity of the item that
first took it (`KeyedKind.identity`: for mail the sender and the sent time, for meetings the
organizer). A copy with another identity is another item: it is written under a key of its own,
derived from the key and its identity (`collision_key`), and the writer reports the collision. A copy
with the same identity merges; where the kind says so (`keep_content`, mail), the first capture's
content stands and a later copy only adds its mailbox and people.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from shared.errors import ConcurrencyError, CrmError, CrmRetryableError
from shared.model import CrmRef, KeyRecord, PersonRef, fingerprint
from shared.ports.state import KeyStore


class Keyed(Protocol):
    @property
    def key(self) -> str: ...


R = TypeVar("R", bound=Keyed)
ATTEMPTS = 8
COLLISION_MARK = "#"  # between a key and the identity of the other item written under it


@dataclass(frozen=True)
class KeyedKind(Generic[R]):
    """How one kind of keyed record (journals, appointments) merges across mailboxes."""

    # (row, this mailbox's record, mailbox) → (the record to write, whether a write is needed)
    merge: Callable[[KeyRecord | None, R, str], tuple[R, bool]]
    # (row, the merged record written, its CRM id) → the row to save
    key_record_after: Callable[[KeyRecord | None, R, str], KeyRecord]
    # who the item is, as a fingerprint: copies of one item agree on it, another item does not
    identity: Callable[[R], str]
    # the record under another key
    rekey: Callable[[R, str], R]
    # the identity a row written before identities were recorded stands for ("" = unknown)
    legacy_identity: Callable[[KeyRecord], str] = lambda row: ""
    # (merged, what the CRM holds) → what to write: the first capture's content stands (None: the
    # newest copy's content is written)
    keep_content: Callable[[R, R], R] | None = None


@dataclass(frozen=True)
class Written:
    """What became of one record: written (or nothing new), under which key, and whether its key was
    taken by another item (so it went under a key of its own)."""

    changed: bool
    key: str
    collided: bool = False


def identity_of(*parts: object) -> str:
    return fingerprint(list(parts))


def collision_key(key: str, identity: str) -> str:
    """The key of an item whose key another item took first: the key and the item's identity."""
    return f"{key}{COLLISION_MARK}{identity[:16]}"


def _row_identity(kind: KeyedKind[R], row: KeyRecord) -> str:
    return row.identity or kind.legacy_identity(row)


def own_key(kind: KeyedKind[R], row: KeyRecord | None, key: str, identity: str) -> str:
    """`key` when its row (if any) is the item with this identity; else the key of the item's own."""
    if row is None:
        return key
    theirs = _row_identity(kind, row)
    return key if not theirs or theirs == identity else collision_key(key, identity)


def _elsewhere(kind: KeyedKind[R], row: KeyRecord | None, record: R) -> R | None:
    """The record under its own key when the row is another item's; None when it is this item's."""
    own = own_key(kind, row, record.key, kind.identity(record))
    if own == record.key:
        return None
    if row is not None and own == row.key:  # cannot happen unless two identities share 64 bits
        raise ConcurrencyError(f"two items claim the same derived key: {own[:40]}")
    return kind.rekey(record, own)


def _legacy_of_another(kind: KeyedKind[R], row: KeyRecord, stored: R | None, record: R) -> bool:
    """A row from before identities were recorded, whose item (as the CRM holds it) is another one."""
    return (
        stored is not None and not _row_identity(kind, row) and kind.identity(stored) != kind.identity(record)
    )


def _with_identity(kind: KeyedKind[R], after: KeyRecord, merged: R) -> KeyRecord:
    return replace(after, identity=kind.identity(merged))


async def write_keyed(
    keys: KeyStore,
    record: R,
    mailbox: str,
    kind: KeyedKind[R],
    *,
    upsert: Callable[[R], Awaitable[CrmRef]],
    load: Callable[[str], Awaitable[R | None]] | None = None,
    doubt_first: bool = False,
) -> Written:
    """Merge `record` (this mailbox's view) with the key's row and write both.

    `load` reads what the CRM holds under a key; it is needed where the kind keeps the first capture's
    content. With `doubt_first`, an existing row first loses its fingerprint, so it no longer vouches
    for what the CRM holds: a write the CRM applied whose answer was lost (a timeout, a 5xx after the
    write, a worker that died) is written again when the item comes back to what the row held (a
    meeting moved and moved back), instead of being taken for nothing new. Costs one row write per
    rewrite."""
    collided = False
    for _ in range(ATTEMPTS):
        row = await keys.get_key(record.key)
        own = _elsewhere(kind, row, record)
        if own is not None:
            record, collided = own, True
            continue
        merged, needed = kind.merge(row, record, mailbox)
        if not needed:
            return Written(False, record.key, collided)
        if row is not None and kind.keep_content is not None and load is not None:
            stored = await load(record.key)
            if _legacy_of_another(kind, row, stored, record):
                record, collided = kind.rekey(record, collision_key(row.key, kind.identity(record))), True
                continue
            merged = kind.keep_content(merged, stored) if stored is not None else merged
        if doubt_first and row is not None and row.fingerprint:
            try:
                row = await keys.put_key(replace(row, fingerprint=""))
            except ConcurrencyError:
                continue
        ref = await upsert(merged)
        try:
            await keys.put_key(_with_identity(kind, kind.key_record_after(row, merged, ref.id), merged))
            return Written(True, record.key, collided)
        except ConcurrencyError:
            continue  # another mailbox wrote this key meanwhile: merge again with what it wrote
    raise ConcurrencyError(f"key kept changing under concurrent writers: {record.key[:40]}")


async def write_keyed_many(
    keys: KeyStore,
    records: Sequence[R],
    mailbox: str,
    kind: KeyedKind[R],
    *,
    upsert_many: Callable[[Sequence[R]], Awaitable[Sequence[CrmRef | CrmError]]],
    upsert: Callable[[R], Awaitable[CrmRef]],
    load: Callable[[str], Awaitable[R | None]] | None = None,
) -> list[Written | CrmError]:
    """`write_keyed` for many records in a few round trips: the keys' rows read together
    (`get_keys`), the merged records written in one bulk CRM call, the rows written in transactions
    (`put_keys`), each row still conditional on its ETag. A row another mailbox changed meanwhile, a
    key repeated in `records`, and a record whose key turns out to be another item's after the CRM
    was read, go through `write_keyed` one at a time afterwards.

    Returns per record: its `Written`, or the `CrmError` that stopped that record (a CRM call that
    failed as a whole stops every record it carried). Raises what the state store raises, and
    `ConcurrencyError` as `write_keyed` does."""
    todo = list(records)
    collided = [False] * len(todo)
    rows = await keys.get_keys(sorted({r.key for r in todo})) if todo else {}
    moved: list[int] = []
    for n, record in enumerate(todo):
        own = _elsewhere(kind, rows.get(record.key), record)
        if own is not None:
            todo[n], collided[n] = own, True
            moved.append(n)
    if moved:
        rows.update(await keys.get_keys(sorted({todo[n].key for n in moved})))

    first: dict[str, int] = {}
    again: list[int] = []  # records whose key came earlier, whose row write lost a race, or re-keyed late
    for n, record in enumerate(todo):
        if record.key in first or _elsewhere(kind, rows.get(record.key), record) is not None:
            again.append(n)
        else:
            first[record.key] = n
    outcomes: list[Written | CrmError] = [
        Written(False, r.key, c) for r, c in zip(todo, collided, strict=True)
    ]
    due: list[tuple[int, KeyRecord | None, R]] = []
    for key, n in first.items():
        merged, needed = kind.merge(rows.get(key), todo[n], mailbox)
        if not needed:
            continue
        row = rows.get(key)
        if row is not None and kind.keep_content is not None and load is not None:
            stored = await load(key)
            if _legacy_of_another(kind, row, stored, todo[n]):
                again.append(n)  # write_keyed puts it under a key of its own
                continue
            merged = kind.keep_content(merged, stored) if stored is not None else merged
        due.append((n, row, merged))
    refs: Sequence[CrmRef | CrmError]
    try:
        refs = await upsert_many([merged for _, _, merged in due]) if due else []
    except CrmError as error:
        refs = [error] * len(due)
    if len(refs) != len(due):
        raise CrmRetryableError(f"the CRM answered {len(refs)} results for {len(due)} records")
    written: list[tuple[int, KeyRecord]] = []
    for (n, row, merged), ref in zip(due, refs, strict=True):
        if isinstance(ref, CrmError):
            outcomes[n] = ref
        else:
            written.append((n, _with_identity(kind, kind.key_record_after(row, merged, ref.id), merged)))
    saved = await keys.put_keys([after for _, after in written]) if written else []
    for (n, _), result in zip(written, saved, strict=True):
        if isinstance(result, ConcurrencyError):
            again.append(n)  # another mailbox wrote this key meanwhile: merge again with what it wrote
        else:
            outcomes[n] = Written(True, todo[n].key, collided[n])
    for n in sorted(again):
        try:
            done = await write_keyed(keys, todo[n], mailbox, kind, upsert=upsert, load=load)
            outcomes[n] = replace(done, collided=done.collided or collided[n])
        except CrmError as error:
            outcomes[n] = error
    return outcomes


def merged_people(record: KeyRecord, mine: Sequence[PersonRef], looked_up: set[str]) -> tuple[PersonRef, ...]:
    """The people linked under a key once this mailbox's (`mine`) are added. A person another mailbox
    linked is kept unless this mailbox looked the same address up (`looked_up`, normalized) and the CRM
    no longer matches it (deleted or changed there): linking it again would be refused on every run."""
    found = {p.id for p in mine}
    people = {p.id: p for p in record.people if p.id in found or p.email.lower() not in looked_up}
    for person in mine:
        people.setdefault(person.id, person)
    return tuple(people.values())
