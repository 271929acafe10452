"""The state port contract: one suite, run against the in-memory store and the Table store on Azurite.

A fake that does not pass this suite is not used anywhere (docs/architecture.md §9).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import inspect
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from azure.data.tables.aio import TableServiceClient
from azure.storage.queue.aio import QueueClient
from hypothesis import given
from hypothesis import strategies as st

from emulators.azurite import AzuriteStack, azurite
from emulators.process import free_port
from shared.errors import ConcurrencyError, StateError
from shared.model import (
    Backfill,
    ContactFields,
    ContactLink,
    Cursor,
    Decision,
    EventLink,
    Held,
    Issue,
    Job,
    KeyRecord,
    Link,
    MailProgress,
    PendingWrite,
    PersonRef,
    PostalAddress,
    PushLink,
    SubscriptionRecord,
)
from shared.ports.state import StateStore
from shared.state.entities import EntityTables
from shared.state.keys import (
    MAX_KEY_UNITS,
    SEPARATOR,
    decode_key,
    encode_key,
    join_key,
    key_partition,
    prefix_range,
)
from shared.state.memory import InMemoryJobQueue, InMemoryStateStore, MemoryTables
from shared.state.queue import JOBS_QUEUE, POISON_QUEUE, StorageJobQueue
from shared.state.store import STORED_TEXT_CHARS, TABLES, EntityStateStore
from shared.state.tables import AzureTables, TableStateStore
from tests.contract.state_fixtures import HOSTILE, ManualClock, table_prefix, unique

# -------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def state_azurite() -> Iterator[AzuriteStack]:
    with azurite() as stack:
        yield stack


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


class Backend:
    """The store under test plus raw access to the same rows (what an admin or another job sees)."""

    def __init__(self, kind: str, store: EntityStateStore, raw: EntityTables, prefix: str) -> None:
        self.kind = kind
        self.store = store
        self.raw = raw
        self.prefix = prefix

    def table(self, name: str) -> str:
        return self.prefix + name


@pytest.fixture(params=["memory", "tables"])
async def backend(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Backend]:
    if request.param == "memory":
        rows = MemoryTables()
        yield Backend("memory", InMemoryStateStore(clock=clock, tables=rows), rows, "")
        return
    stack: AzuriteStack = request.getfixturevalue("state_azurite")
    prefix = table_prefix()
    store = TableStateStore.from_connection_string(stack.connection_string, clock=clock, table_prefix=prefix)
    raw = AzureTables(TableServiceClient.from_connection_string(stack.connection_string))
    await store.ensure_tables()
    try:
        yield Backend("tables", store, raw, prefix)
    finally:
        await store.aclose()
        await raw.aclose()


@pytest.fixture
def store(backend: Backend) -> StateStore:
    return backend.store


@pytest.mark.parametrize("implementation", [InMemoryStateStore, TableStateStore])
def test_both_stores_implement_every_port_method_with_its_signature(implementation: type) -> None:
    port_methods = {
        name: member
        for cls in StateStore.__mro__
        if cls.__module__ == "shared.ports.state"
        for name, member in vars(cls).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }
    assert len(port_methods) > 30
    for name, declared in port_methods.items():
        actual = getattr(implementation, name)
        assert inspect.iscoroutinefunction(actual), name
        assert list(inspect.signature(actual).parameters) == list(inspect.signature(declared).parameters), (
            name
        )


# -------------------------------------------------------------------------------------------------
# Key encoding (pure)


@pytest.mark.parametrize("value", HOSTILE)
def test_encoded_keys_are_legal_and_reversible(value: str) -> None:
    key = encode_key(value)
    assert not any(ch in key for ch in "/\\#?" + SEPARATOR)
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in key)
    assert len(key.encode("utf-16-le")) // 2 <= MAX_KEY_UNITS
    if "%~" not in key:
        assert decode_key(key) == value


@given(st.text(max_size=80))
def test_any_short_text_round_trips_through_a_key(value: str) -> None:
    key = encode_key(value)
    assert decode_key(key) == value
    assert SEPARATOR not in key


@given(st.text(min_size=1, max_size=400), st.text(min_size=1, max_size=400))
def test_distinct_values_get_distinct_keys(a: str, b: str) -> None:
    if a != b:
        assert encode_key(a) != encode_key(b)


def test_plain_upns_are_their_own_keys() -> None:
    for upn in [
        "alice@contoso.com",
        "o'brien@contoso.com",
        "first.last-x_y@sub.contoso.co.uk",
        "a~b!c^d@x.io",
    ]:
        assert encode_key(upn) == upn


def test_prefix_range_spans_one_stream_only() -> None:
    low, high = prefix_range("mail:a")
    assert low <= join_key("mail:a", "anything") < high
    for other in ["mail:ab", "mail:a|x", "mail:", "mail:a%7C"]:
        assert not low <= join_key(other, "anything") < high


# -------------------------------------------------------------------------------------------------
# Users


async def test_user_config_round_trips_every_column_as_stored(store: StateStore) -> None:
    upn = unique() + "@contoso.com"
    when = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    await store.put_config(
        upn,
        {
            "Enabled": True,
            "MailFolders": ["inbox", "sentitems"],
            "Policy": {"b": 2, "a": 1},
            "WindowDays": 30,
            "Big": 2**40,
            "Ratio": 0.5,
            "Since": when,
            "Note": "",
        },
    )
    row = await store.get_user(upn)
    assert row is not None and row.upn == upn and row.etag
    assert dict(row.columns) == {
        "Enabled": True,
        "MailFolders": '["inbox","sentitems"]',
        "Policy": '{"a":1,"b":2}',
        "WindowDays": 30,
        "Big": 2**40,
        "Ratio": 0.5,
        "Since": datetime(2030, 5, 6, 5, 8, 9, 123456, tzinfo=UTC),
        "Note": "",
    }
    assert upn in [u.upn for u in await store.list_users()]


async def test_status_merges_into_config_and_none_removes_a_column(store: StateStore) -> None:
    upn = unique() + "@contoso.com"
    await store.put_config(upn, {"Enabled": True, "Folders": "inbox"})
    first = await store.get_user(upn)
    await store.update_status(upn, {"State": "error", "LastError": "boom"})
    await store.update_status(upn, {"State": "ok", "LastError": None})
    await store.put_config(upn, {"Folders": "inbox,archive"})
    row = await store.get_user(upn)
    assert row is not None and first is not None
    assert dict(row.columns) == {"Enabled": True, "Folders": "inbox,archive", "State": "ok"}
    assert row.etag != first.etag


async def test_status_for_a_user_without_a_row_creates_it(store: StateStore) -> None:
    upn = unique() + "@contoso.com"
    await store.update_status(upn, {"State": "ok", "LastError": None})
    row = await store.get_user(upn)
    assert row is not None and dict(row.columns) == {"State": "ok"}


async def test_deleted_and_unknown_users_read_as_none(store: StateStore) -> None:
    upn = unique() + "@contoso.com"
    await store.put_config(upn, {"Enabled": True})
    await store.delete_user(upn)
    await store.delete_user(upn)  # deleting twice is harmless
    assert await store.get_user(upn) is None
    assert upn not in [u.upn for u in await store.list_users()]


async def test_a_row_an_admin_typed_by_hand_is_found_by_its_upn(backend: Backend) -> None:
    upn = unique("o'hand") + "@contoso.com"
    await backend.raw.upsert(
        backend.table("SyncUsers"),
        {"PartitionKey": "user", "RowKey": upn, "Enabled": True, "Streams": "mail,contacts"},
        merge=False,
    )
    row = await backend.store.get_user(upn)
    assert row is not None and dict(row.columns) == {"Enabled": True, "Streams": "mail,contacts"}


async def test_a_column_value_a_table_cannot_hold_is_refused(store: StateStore) -> None:
    with pytest.raises(StateError):
        await store.put_config(unique() + "@contoso.com", {"Bad": object()})


# -------------------------------------------------------------------------------------------------
# Cursors


async def test_a_missing_cursor_is_empty(store: StateStore) -> None:
    assert await store.get_cursor(unique(), "mail:inbox") == Cursor()


async def test_cursor_round_trips_with_utc_times(store: StateStore) -> None:
    user, stream = unique(), "mail:AAMk/abc=="
    plus2 = timezone(timedelta(hours=2))
    saved = await store.save_cursor(
        user,
        stream,
        Cursor(
            link="https://graph/v1.0/delta?$deltatoken=abc&x=1",
            link_kind="delta",
            round_started=datetime(2030, 1, 1, 10, 0, tzinfo=plus2),
            window_start=datetime(2029, 12, 1, tzinfo=UTC),
            window_end=datetime(2030, 3, 1, tzinfo=UTC),
            crm_cursor="c-17",
            totals={"journaled": 3},
            mail=MailProgress(
                backfill=Backfill(datetime(2029, 12, 1, tzinfo=UTC), link="next-1"),
                round_filtered=True,
                round_items=7,
            ),
        ),
    )
    assert saved.etag
    read = await store.get_cursor(user, stream)
    assert read == saved
    assert read.round_started == datetime(2030, 1, 1, 8, 0, tzinfo=UTC)
    assert read.round_started is not None and read.round_started.utcoffset() == timedelta(0)
    assert (read.crm_cursor, read.totals, read.mail.round_items) == ("c-17", {"journaled": 3}, 7)
    assert read.mail.backfill == Backfill(datetime(2029, 12, 1, tzinfo=UTC), link="next-1")
    assert await store.list_cursors(user) == {stream: read}


async def test_cursor_saves_are_conditional_so_a_cursor_never_goes_backwards(store: StateStore) -> None:
    user, stream = unique(), "contacts"
    first = await store.save_cursor(user, stream, Cursor(link="page-1", link_kind="next"))
    with pytest.raises(ConcurrencyError):  # "" means "must not exist yet"
        await store.save_cursor(user, stream, Cursor(link="page-0", link_kind="next"))
    second = await store.save_cursor(user, stream, Cursor(link="page-2", link_kind="next", etag=first.etag))
    assert second.etag != first.etag
    with pytest.raises(ConcurrencyError):  # a stale writer (old etag) loses
        await store.save_cursor(user, stream, Cursor(link="page-1b", link_kind="next", etag=first.etag))
    assert (await store.get_cursor(user, stream)).link == "page-2"


async def test_two_writers_racing_on_one_cursor_one_wins(store: StateStore) -> None:
    user, stream = unique(), "calendar"
    base = await store.save_cursor(user, stream, Cursor(link="start"))
    results = await asyncio.gather(
        store.save_cursor(user, stream, Cursor(link="a", etag=base.etag)),
        store.save_cursor(user, stream, Cursor(link="b", etag=base.etag)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Cursor)]
    assert len(winners) == 1
    assert sum(isinstance(r, ConcurrencyError) for r in results) == 1
    assert (await store.get_cursor(user, stream)).link == winners[0].link


async def test_deleted_cursor_starts_over(store: StateStore) -> None:
    user = unique()
    saved = await store.save_cursor(user, "mail:x", Cursor(link="l"))
    await store.delete_cursor(user, "mail:x")
    await store.delete_cursor(user, "mail:x")
    assert await store.get_cursor(user, "mail:x") == Cursor()
    with pytest.raises(ConcurrencyError):  # a writer holding the deleted row's etag
        await store.save_cursor(user, "mail:x", Cursor(link="stale", etag=saved.etag))
    assert (await store.save_cursor(user, "mail:x", Cursor(link="again"))).etag


# -------------------------------------------------------------------------------------------------
# Leases


async def test_a_free_lease_is_taken_and_released(store: StateStore, clock: ManualClock) -> None:
    user = unique()
    lease = await store.acquire(user, "mail:inbox", "job-1", 60)
    assert lease is not None
    assert (lease.user, lease.stream, lease.owner) == (user, "mail:inbox", "job-1")
    assert lease.expires == clock.now + timedelta(seconds=60)
    assert await store.release(lease) is True
    again = await store.acquire(user, "mail:inbox", "job-2", 60)
    assert again is not None and again.owner == "job-2"


async def test_a_job_that_finds_the_lease_held_makes_the_holder_run_again(store: StateStore) -> None:
    user = unique()
    lease = await store.acquire(user, "contacts", "holder", 60)
    assert lease is not None
    assert await store.acquire(user, "contacts", "late-1", 60) is None
    assert await store.acquire(user, "contacts", "late-2", 60) is None
    assert await store.release(lease) is False  # pending: run again before letting go
    assert await store.acquire(user, "contacts", "late-3", 60) is None  # still held for that run
    assert await store.release(lease) is False
    assert await store.release(lease) is True
    assert await store.acquire(user, "contacts", "next", 60) is not None


async def test_racing_acquirers_get_exactly_one_lease(store: StateStore) -> None:
    user = unique()
    results = await asyncio.gather(*(store.acquire(user, "calendar", f"job-{i}", 60) for i in range(6)))
    held = [r for r in results if r is not None]
    assert len(held) == 1
    assert await store.release(held[0]) is False  # the losers left the pending flag
    assert await store.release(held[0]) is True


async def test_release_racing_a_new_acquirer_never_loses_the_wake_up(store: StateStore) -> None:
    user = unique()
    for i in range(12):
        lease = await store.acquire(user, "mail:inbox", f"holder-{i}", 60)
        assert lease is not None
        released, other = await asyncio.gather(
            store.release(lease), store.acquire(user, "mail:inbox", f"other-{i}", 60)
        )
        # Either the newcomer got the lease, or the holder was told to run again: never neither.
        assert (released, other is None) in {(True, False), (False, True)}
        if other is not None:
            assert await store.release(other) is True
        else:
            assert await store.release(lease) is True


async def test_many_jobs_one_runner_at_a_time_and_no_lost_wake_up(store: StateStore) -> None:
    """Jobs arrive concurrently; each either runs (until release says done) or leaves a wake-up.
    At most one runs at a time, and every wake-up left is followed by a run that starts later."""

    user, stream = unique(), "mail:inbox"
    ticks = iter(range(1_000_000))
    running: list[str] = []
    wakeups: list[int] = []
    run_starts: list[int] = []

    async def job(name: str) -> None:
        lease = await store.acquire(user, stream, name, 300)
        if lease is None:
            wakeups.append(next(ticks))
            return
        while True:
            running.append(name)
            assert running == [name]  # exclusive
            run_starts.append(next(ticks))
            await asyncio.sleep(0)
            running.remove(name)
            if await store.release(lease):
                return

    for _ in range(3):
        await asyncio.gather(*(job(unique("job")) for _ in range(8)))
    assert run_starts and all(any(start > w for start in run_starts) for w in wakeups)


async def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_renew(
    store: StateStore, clock: ManualClock
) -> None:
    user = unique()
    old = await store.acquire(user, "mail:inbox", "old", 30)
    assert old is not None
    clock.advance(31)
    new = await store.acquire(user, "mail:inbox", "new", 30)
    assert new is not None and new.owner == "new"
    with pytest.raises(ConcurrencyError):
        await store.renew(old, 30)
    assert await store.release(old) is True  # harmless: it is not old's any more
    assert await store.acquire(user, "mail:inbox", "third", 30) is None  # new still holds it
    assert await store.release(new) is False  # third's pending reached the new holder


async def test_an_expired_lease_nobody_took_can_still_be_renewed(
    store: StateStore, clock: ManualClock
) -> None:
    user = unique()
    lease = await store.acquire(user, "contacts", "slow", 30)
    assert lease is not None
    clock.advance(45)
    renewed = await store.renew(lease, 30)
    assert renewed.expires == clock.now + timedelta(seconds=30)
    assert await store.acquire(user, "contacts", "other", 30) is None


async def test_renew_extends_the_expiry(store: StateStore, clock: ManualClock) -> None:
    user = unique()
    lease = await store.acquire(user, "calendar", "a", 30)
    assert lease is not None
    clock.advance(20)
    renewed = await store.renew(lease, 30)
    assert renewed.expires == clock.now + timedelta(seconds=30) and renewed.etag != lease.etag
    clock.advance(20)  # past the first expiry, within the renewed one
    assert await store.acquire(user, "calendar", "b", 30) is None
    clock.advance(11)
    assert await store.acquire(user, "calendar", "b", 30) is not None


async def test_renew_keeps_a_pending_flag(store: StateStore) -> None:
    user = unique()
    lease = await store.acquire(user, "calendar", "a", 30)
    assert lease is not None
    assert await store.acquire(user, "calendar", "b", 30) is None
    await store.renew(lease, 30)
    assert await store.release(lease) is False


async def test_a_pending_release_gives_the_holder_a_fresh_expiry(
    store: StateStore, clock: ManualClock
) -> None:
    user = unique()
    lease = await store.acquire(user, "calendar", "a", 30)
    assert lease is not None
    clock.advance(25)
    assert await store.acquire(user, "calendar", "b", 30) is None
    assert await store.release(lease) is False
    clock.advance(20)  # 45 s after acquire: the re-run still holds it
    assert await store.acquire(user, "calendar", "c", 30) is None


async def test_acquire_by_the_same_owner_is_idempotent(store: StateStore) -> None:
    user = unique()
    first = await store.acquire(user, "contacts", "job", 30)
    second = await store.acquire(user, "contacts", "job", 30)
    assert first is not None and second is not None and second.owner == "job"
    assert await store.release(second) is True
    assert await store.acquire(user, "contacts", "other", 30) is not None


async def test_release_of_a_lease_that_was_never_taken_is_harmless(store: StateStore) -> None:
    user = unique()
    lease = await store.acquire(user, "contacts", "job", 30)
    assert lease is not None
    await store.release(lease)
    assert await store.release(lease) is True
    with pytest.raises(ConcurrencyError):
        await store.renew(lease, 30)


async def test_mark_queued_coalesces_within_the_window(store: StateStore, clock: ManualClock) -> None:
    user = unique()
    assert await store.mark_queued(user, "mail:inbox", 30) is True
    assert await store.mark_queued(user, "mail:inbox", 30) is False
    assert await store.mark_queued(user, "mail:sent", 30) is True  # per stream
    clock.advance(29)
    assert await store.mark_queued(user, "mail:inbox", 30) is False
    clock.advance(2)
    assert await store.mark_queued(user, "mail:inbox", 30) is True


async def test_clear_queued_lets_the_next_notification_enqueue(store: StateStore) -> None:
    user = unique()
    await store.clear_queued(user, "contacts")  # nothing queued: harmless
    assert await store.mark_queued(user, "contacts", 60) is True
    await store.clear_queued(user, "contacts")
    assert await store.mark_queued(user, "contacts", 60) is True
    assert await store.mark_queued(user, "contacts", 60) is False


async def test_racing_notifications_enqueue_once(store: StateStore) -> None:
    user = unique()
    results = await asyncio.gather(*(store.mark_queued(user, "calendar", 60) for _ in range(6)))
    assert results.count(True) == 1


async def test_lease_and_queued_marker_do_not_disturb_each_other(store: StateStore) -> None:
    user = unique()
    assert await store.mark_queued(user, "mail:inbox", 60) is True
    lease = await store.acquire(user, "mail:inbox", "job", 30)
    assert lease is not None
    assert await store.mark_queued(user, "mail:inbox", 60) is False
    await store.clear_queued(user, "mail:inbox")
    assert await store.release(lease) is True  # clearing the marker is not a pending run
    assert await store.mark_queued(user, "mail:inbox", 60) is True


async def test_a_lease_says_who_holds_it_and_an_admin_can_break_it(
    store: StateStore, clock: ManualClock
) -> None:
    user = unique()
    assert await store.get_lease(user, "contacts") is None
    lease = await store.acquire(user, "contacts", "job-1", 300, "host-a:4242")
    assert lease is not None
    clock.advance(30)
    lease = await store.renew(lease, 300)
    held = await store.get_lease(user, "contacts")
    assert held is not None and (held.owner, held.holder) == ("job-1", "host-a:4242")
    assert held.acquired == clock.now - timedelta(seconds=30) and held.renewed == clock.now
    assert held.expires == clock.now + timedelta(seconds=300)
    await store.renew(lease, 300)  # the holder shows it is alive: the admin's reading is stale
    with pytest.raises(ConcurrencyError):
        await store.break_lease(held)
    await store.break_lease(await store.get_lease(user, "contacts") or held)
    assert await store.get_lease(user, "contacts") is None
    with pytest.raises(ConcurrencyError):  # the old holder lost it for good
        await store.renew(lease, 300)
    assert await store.acquire(user, "contacts", "job-2", 300, "host-b:1") is not None


async def test_an_empty_owner_is_refused(store: StateStore) -> None:
    with pytest.raises(ValueError):
        await store.acquire(unique(), "contacts", "", 30)


# -------------------------------------------------------------------------------------------------
# Links


def _link(user: str, stream: str, item_id: str, crm_key: str = "c", note: str = "") -> Link:
    return Link(user, stream, item_id, crm_key=crm_key, change_key="ck", event=EventLink(series=note))


async def test_links_round_trip_and_list_by_stream(store: StateStore) -> None:
    user = unique()
    streams = ["mail:a", "mail:ab", "mail:a|x", "mail:a%7C", "contacts"]
    await store.put_links([_link(user, s, f"id-{i}", crm_key=s) for s in streams for i in range(3)])
    await store.put_links([_link(unique(), "mail:a", "id-0")])  # another user's
    for s in streams:
        listed = await store.list_links(user, s)
        assert sorted(link.item_id for link in listed) == ["id-0", "id-1", "id-2"]
        assert {link.crm_key for link in listed} == {s}
    one = await store.get_link(user, "mail:a", "id-1")
    assert one is not None and one.etag
    assert one == Link(user, "mail:a", "id-1", crm_key="mail:a", change_key="ck", etag=one.etag)


async def test_put_links_upserts_and_delete_removes(store: StateStore) -> None:
    user = unique()
    await store.put_links([Link(user, "contacts", "x", crm_key="1", local_fingerprint="f1")])
    await store.put_links([Link(user, "contacts", "x", crm_key="2", contact=ContactLink(crm_version="v1"))])
    link = await store.get_link(user, "contacts", "x")
    assert link is not None
    assert (link.crm_key, link.local_fingerprint, link.contact.crm_version) == ("2", "", "v1")
    await store.delete_link(user, "contacts", "x")
    await store.delete_link(user, "contacts", "x")
    assert await store.get_link(user, "contacts", "x") is None


async def test_put_links_batches_beyond_one_transaction(store: StateStore) -> None:
    users = [unique(), unique()]
    links = [_link(u, "mail:inbox", f"m{i:04}", crm_key=str(i)) for u in users for i in range(250)]
    links.append(_link(users[0], "mail:inbox", "m0007", crm_key="last-wins"))
    await store.put_links(links)
    for u in users:
        assert len(await store.list_links(u, "mail:inbox")) == 250
    found = await store.get_links(users[0], "mail:inbox", ["m0007", "m0249", "missing", "m0007"])
    assert set(found) == {"m0007", "m0249"}
    assert found["m0007"].crm_key == "last-wins"


async def test_put_links_splits_transactions_that_would_be_too_large(store: StateStore) -> None:
    user = unique()
    bulky = "ü" * 12_000  # 24 KB of UTF-8 per row: 100 rows would not fit one 4 MiB transaction
    await store.put_links([_link(user, "contacts", f"c{i:03}", note=bulky) for i in range(180)])
    listed = await store.list_links(user, "contacts")
    assert len(listed) == 180 and all(link.event.series == bulky for link in listed)


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_hostile_ids_work_everywhere(store: StateStore, hostile: str) -> None:
    user = unique() + hostile
    stream = "mail:" + hostile
    await store.put_links([_link(user, stream, hostile)])
    assert [link.item_id for link in await store.list_links(user, stream)] == [hostile]
    assert (await store.get_links(user, stream, [hostile]))[hostile].user == user
    saved = await store.save_cursor(user, stream, Cursor(link=hostile))
    assert await store.get_cursor(user, stream) == saved
    await store.put_config(user, {"Enabled": True})
    row = await store.get_user(user)
    assert row is not None and row.upn == user and dict(row.columns) == {"Enabled": True}
    record = await store.put_key(KeyRecord(key=unique("k") + hostile, crm_ref=hostile))
    assert await store.get_key(record.key) == record
    await store.put_subscription(_subscription(user, hostile, hostile))
    got = await store.get_subscription(hostile)
    assert got is not None and (got.user, got.resource) == (user, hostile)
    await store.record_issue(Issue(user, hostile, stream, "r"))
    assert [i.item_key for i in await store.list_issues(user)] == [hostile]
    await store.record_decisions([_decision(user, hostile)])
    assert (await store.get_decision(user, hostile)) == _decision(user, hostile)
    lease = await store.acquire(user, stream, "job", 30)
    assert lease is not None and lease.stream == stream and await store.release(lease)
    await store.delete_subscription(user, hostile)
    assert await store.get_subscription(hostile) is None


# -------------------------------------------------------------------------------------------------
# Global keys


async def test_keys_are_created_once_then_updated_conditionally(store: StateStore) -> None:
    key = unique("<msg") + "@host>"
    created = await store.put_key(
        KeyRecord(key, crm_ref="J-1", mailboxes=("a@x",), people=(PersonRef("p1"),))
    )
    assert created.etag and await store.get_key(key) == created
    with pytest.raises(ConcurrencyError):
        await store.put_key(KeyRecord(key, crm_ref="J-2"))
    updated = await store.put_key(
        KeyRecord(key, crm_ref="J-1", mailboxes=("a@x", "b@x"), owner="u-2", etag=created.etag)
    )
    assert updated.mailboxes == ("a@x", "b@x") and updated.owner == "u-2"
    with pytest.raises(ConcurrencyError):
        await store.put_key(KeyRecord(key, crm_ref="stale", etag=created.etag))
    assert await store.get_key(key) == updated
    assert await store.get_key(unique("<none")) is None


async def test_two_mailboxes_racing_to_create_a_key_one_wins(store: StateStore) -> None:
    key = unique("<race") + "@host>"
    results = await asyncio.gather(
        store.put_key(KeyRecord(key, crm_ref="A", mailboxes=("a",))),
        store.put_key(KeyRecord(key, crm_ref="B", mailboxes=("b",))),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, KeyRecord)]
    assert len(winners) == 1 and sum(isinstance(r, ConcurrencyError) for r in results) == 1
    assert await store.get_key(key) == winners[0]


def _keys_in_one_partition(count: int) -> list[str]:
    """`count` fresh keys that share a SyncKeys partition (so they go in one transaction)."""
    keys: list[str] = []
    partition = ""
    while len(keys) < count:
        key = unique("<batch") + "@host>"
        partition = partition or key_partition(key)
        if key_partition(key) == partition:
            keys.append(key)
    return keys


async def test_many_keys_are_written_and_read_back_together(store: StateStore) -> None:
    keys = [unique("<many") + f"-{n}@host>" for n in range(130)] + [unique("k") + h for h in HOSTILE]
    records = [
        KeyRecord(k, crm_ref=f"J-{n}", mailboxes=("a@x",), people=(PersonRef("p1"),))
        for n, k in enumerate(keys)
    ]

    written = await store.put_keys(records)

    assert all(isinstance(w, KeyRecord) and w.etag for w in written)
    assert [w.key for w in written if isinstance(w, KeyRecord)] == keys
    missing = unique("<missing") + "@host>"
    found = await store.get_keys([*keys, missing, keys[0]])
    assert set(found) == set(keys)
    assert [found[k] for k in keys] == written
    assert [await store.get_key(k) for k in keys[:3]] == written[:3]
    assert await store.get_keys([]) == {} and await store.put_keys([]) == []


async def test_put_keys_keeps_each_row_conditional_and_a_lost_race_costs_only_that_row(
    store: StateStore,
) -> None:
    keys = _keys_in_one_partition(5)
    first = [
        r for r in await store.put_keys([KeyRecord(k, crm_ref="J") for k in keys]) if isinstance(r, KeyRecord)
    ]
    assert len(first) == 5
    meanwhile = await store.put_key(dataclasses.replace(first[1], mailboxes=("b@x",)))  # another mailbox
    fresh = unique("<fresh") + "@host>"

    outcomes = await store.put_keys(
        [dataclasses.replace(r, mailboxes=("a@x",)) for r in first[:4]]  # row 1 holds a stale etag
        + [KeyRecord(keys[4], crm_ref="again"), KeyRecord(fresh, crm_ref="new")]  # keys[4] exists
    )

    lost = [isinstance(o, ConcurrencyError) for o in outcomes]
    assert lost == [False, True, False, False, True, False]
    rows = await store.get_keys([*keys, fresh])
    assert rows[keys[1]] == meanwhile  # the other mailbox's write stands
    assert [rows[k].mailboxes for k in (keys[0], keys[2], keys[3])] == [("a@x",)] * 3
    assert rows[keys[4]] == first[4] and rows[fresh] == outcomes[5]


async def test_two_writers_racing_on_the_same_keys_in_batches_win_each_row_once(store: StateStore) -> None:
    keys = _keys_in_one_partition(3) + [unique("<other") + "@host>"]
    one, two = await asyncio.gather(
        store.put_keys([KeyRecord(k, crm_ref="A") for k in keys]),
        store.put_keys([KeyRecord(k, crm_ref="B") for k in keys]),
    )
    for key, a, b in zip(keys, one, two, strict=True):
        assert isinstance(a, KeyRecord) != isinstance(b, KeyRecord), key
        winner = a if isinstance(a, KeyRecord) else b
        assert await store.get_key(key) == winner


async def test_put_keys_takes_each_key_once(store: StateStore) -> None:
    key = unique("<twice") + "@host>"
    with pytest.raises(ValueError):
        await store.put_keys([KeyRecord(key, crm_ref="A"), KeyRecord(key, crm_ref="B")])
    assert await store.get_key(key) is None


# -------------------------------------------------------------------------------------------------
# Subscriptions


def _subscription(user: str, resource: str, sid: str, stream: str = "mail:inbox") -> SubscriptionRecord:
    return SubscriptionRecord(
        user=user,
        resource=resource,
        stream=stream,
        subscription_id=sid,
        client_state="secret-" + sid[:8],
        expires=datetime(2030, 1, 3, tzinfo=UTC),
    )


async def test_subscriptions_are_found_by_id_and_listed_by_user(store: StateStore) -> None:
    a, b = unique(), unique()
    inbox = "users/x/mailFolders('inbox')/messages"
    await store.put_subscription(_subscription(a, inbox, sid_a := unique("sub")))
    await store.put_subscription(_subscription(a, "users/x/contacts", unique("sub"), "contacts"))
    await store.put_subscription(_subscription(b, inbox, unique("sub")))
    got = await store.get_subscription(sid_a)
    assert got is not None and got.etag
    assert dataclasses.replace(got, etag="") == _subscription(a, inbox, sid_a)
    assert sorted(s.resource for s in await store.list_subscriptions(a)) == sorted(
        [inbox, "users/x/contacts"]
    )
    everyone = await store.list_subscriptions()
    assert {(s.user, s.resource) for s in everyone} >= {(a, inbox), (b, inbox)}
    assert all(s.subscription_id for s in everyone)
    assert await store.get_subscription(unique("nope")) is None


async def test_a_renewed_subscription_with_a_new_id_replaces_the_old_lookup(store: StateStore) -> None:
    user, resource = unique(), "users/x/events"
    old, new = unique("sub"), unique("sub")
    await store.put_subscription(_subscription(user, resource, old, "calendar"))
    await store.put_subscription(_subscription(user, resource, new, "calendar"))
    assert await store.get_subscription(old) is None
    found = await store.get_subscription(new)
    assert found is not None and found.resource == resource
    assert [s.subscription_id for s in await store.list_subscriptions(user)] == [new]
    await store.delete_subscription(user, resource)
    await store.delete_subscription(user, resource)
    assert await store.get_subscription(new) is None and await store.list_subscriptions(user) == []


# -------------------------------------------------------------------------------------------------
# Issues and decisions


async def test_issues_are_bumped_listed_and_resolved(store: StateStore, clock: ManualClock) -> None:
    user = unique()
    first = await store.record_issue(Issue(user, "<m1@x>", "mail:inbox", "CRM said 400", item_id="g1"))
    assert (first.attempts, first.first_seen, first.last_seen) == (1, clock.now, clock.now)
    start = clock.now
    clock.advance(300)
    again = await store.record_issue(Issue(user, "<m1@x>", "mail:inbox", "CRM said 422"))
    assert (again.attempts, again.reason, again.item_id) == (2, "CRM said 422", "g1")
    assert (again.first_seen, again.last_seen) == (start, clock.now)
    await store.record_issue(Issue(user, "c-9", "contacts", "bad phone"))
    assert [i.item_key for i in await store.list_issues(user)] == sorted(["<m1@x>", "c-9"])
    assert await store.list_issues(user, "mail:inbox") == [again]
    await store.resolve_issue(user, "<m1@x>")
    await store.resolve_issue(user, "<m1@x>")
    assert [i.item_key for i in await store.list_issues(user)] == ["c-9"]


# A CRM's error text as it may come: terminal escapes, a line break, a bidirectional override, NUL,
# and far longer than anyone reads (Table Storage refuses a string column over 32K characters).
RAW_ERROR = "CRM 422: \x1b[2J\x1b[31mred\x1b[0m\nforged line\r\u202eevil\x00" + "x" * 40_000


async def test_error_texts_are_stored_on_one_printable_line_and_capped(store: StateStore) -> None:
    user = unique() + "@contoso.com"
    await store.update_status(user, {"State": "error", "LastError": RAW_ERROR, "ReviewPending": RAW_ERROR})
    await store.record_issue(Issue(user, "<m@x>", "mail:inbox", RAW_ERROR))
    await store.record_decisions([dataclasses.replace(_decision(user, "<m@x>"), reason=RAW_ERROR)])

    row = await store.get_user(user)
    [issue] = await store.list_issues(user)
    decision = await store.get_decision(user, "<m@x>")
    assert row is not None and decision is not None
    for text in (row.columns["LastError"], row.columns["ReviewPending"], issue.reason, decision.reason):
        assert text.startswith("CRM 422: [2J[31mred[0m forged line evil")  # no ESC, NUL, override
        assert text.isprintable() and len(text) == STORED_TEXT_CHARS and text.endswith("…")
    assert row.columns["State"] == "error"  # other columns as given


def _decision(user: str, key: str, outcome: str = "synced", n: int = 0) -> Decision:
    return Decision(
        user=user,
        item_key=key,
        stream="mail:inbox",
        outcome=outcome,
        reason=f"reason {n}",
        at=datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=n),
        crm_key=f"J-{n}",
        details={"people": ["p1"], "n": n},
    )


async def test_decisions_are_batched_and_upserted(store: StateStore) -> None:
    a, b = unique(), unique()
    decisions = [_decision(a, f"<m{i}@x>", n=i) for i in range(230)] + [_decision(b, "<m1@x>")]
    decisions.append(_decision(a, "<m5@x>", outcome="skipped", n=999))
    await store.record_decisions(decisions)
    assert await store.get_decision(a, "<m229@x>") == _decision(a, "<m229@x>", n=229)
    assert await store.get_decision(a, "<m5@x>") == _decision(a, "<m5@x>", outcome="skipped", n=999)
    assert await store.get_decision(b, "<m1@x>") == _decision(b, "<m1@x>")
    assert await store.get_decision(b, "<m2@x>") is None
    await store.record_decisions([_decision(b, "<m1@x>", outcome="removed", n=3)])
    got = await store.get_decision(b, "<m1@x>")
    assert got is not None and got.outcome == "removed"


# -------------------------------------------------------------------------------------------------
# Storage-specific behaviour


async def test_the_table_store_without_its_tables_raises_state_error(state_azurite: AzuriteStack) -> None:
    store = TableStateStore.from_connection_string(
        state_azurite.connection_string, table_prefix=table_prefix()
    )
    try:
        for call in (
            lambda: store.get_user("a@b"),
            lambda: store.save_cursor("a@b", "contacts", Cursor(link="x")),
            lambda: store.put_key(KeyRecord("k")),
            lambda: store.acquire("a@b", "contacts", "job", 30),
            lambda: store.list_links("a@b", "contacts"),
        ):
            with pytest.raises(StateError) as caught:
                await call()
            assert not isinstance(caught.value, ConcurrencyError)
        await store.ensure_tables()
        await store.ensure_tables()  # twice is harmless
        assert await store.get_user("a@b") is None
    finally:
        await store.aclose()


async def test_an_unreachable_table_service_raises_state_error() -> None:
    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"TableEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;"
    )
    store = TableStateStore(TableServiceClient.from_connection_string(conn, retry_total=0))
    try:
        with pytest.raises(StateError):
            await store.list_users()
    finally:
        await store.aclose()


def test_the_store_knows_every_table() -> None:
    assert set(TABLES) == {
        "SyncUsers",
        "SyncCursors",
        "SyncLeases",
        "SyncLinks",
        "SyncKeys",
        "SyncSubscriptions",
        "SyncIssues",
        "SyncDecisions",
    }


# -------------------------------------------------------------------------------------------------
# Job queue


async def test_in_memory_queue_delivers_jobs_after_their_delay(clock: ManualClock) -> None:
    queue = InMemoryJobQueue(clock=clock)
    await queue.enqueue(Job("a@x", "contacts", reason="notification"))
    await queue.enqueue(Job("b@x", "mail:inbox"), delay_seconds=60)
    assert queue.receive() == [Job("a@x", "contacts", reason="notification")]
    assert queue.receive() == [] and len(queue) == 1
    clock.advance(60)
    assert queue.receive() == [Job("b@x", "mail:inbox")]


async def test_storage_queue_carries_base64_job_json(state_azurite: AzuriteStack) -> None:
    name = unique("jobs")
    queue = StorageJobQueue.from_connection_string(state_azurite.connection_string, queue_name=name)
    reader = QueueClient.from_connection_string(state_azurite.connection_string, name)
    poison = QueueClient.from_connection_string(state_azurite.connection_string, f"{name}-poison")
    try:
        await queue.ensure_queue()
        await queue.ensure_queue()
        await poison.get_queue_properties()  # exists
        job = Job("o'brien@contoso.com", "mail:AAMk/x==", reason="notification", fresh_round=True)
        await queue.enqueue(job)
        await queue.enqueue(Job("later@x", "contacts"), delay_seconds=3600)
        messages = [m async for m in reader.receive_messages(max_messages=32)]
        assert len(messages) == 1
        text = base64.b64decode(messages[0].content).decode("utf-8")
        assert text == job.to_json() and Job.from_json(text) == job
    finally:
        await queue.aclose()
        await reader.close()
        await poison.close()


def test_queue_names_match_the_functions_host() -> None:
    assert (JOBS_QUEUE, POISON_QUEUE) == ("sync-jobs", "sync-jobs-poison")


# -------------------------------------------------------------------------------------------------
# Rows written before state was typed


async def test_rows_written_before_typed_state_read_as_they_are(backend: Backend) -> None:
    """The Extra columns as the version before typed state wrote them (its store put `extra` dicts
    there as JSON): every stream's keys read into the typed parts, and a save writes the same keys
    (but those holding an empty value)."""
    store, user = backend.store, unique()
    old_cursors = {
        "mail:inbox": {
            "totals": {"journaled": 12, "skipped": 3, "failed": 0},
            "lastPageUtc": "2026-11-30T10:00:00+00:00",
            "backfill": {
                "link": "https://graph/list?$skiptoken=9",
                "since": "2026-11-01T00:00:00+00:00",
                "until": "2026-11-20T08:00:00+00:00",
            },
            "roundFiltered": True,
            "roundItems": 5000,
            "roundOldest": "2026-11-20T08:00:00+00:00",
        },
        "calendar": {
            "round": "r-7",
            "reconciledRound": "r-6",
            "seriesCheckedUtc": "2026-11-30T09:00:00+00:00",
            "seriesLinked": 2,
            "crmCursor": "a-41",
            "totals": {"captured": 4},
        },
        "contacts": {
            "folderId": "AAMkF",
            "folderName": "CRM Contacts",
            "crmCursor": "c-9",
            "held": {"since": "2026-11-30T11:00:00+00:00", "changes": 14},
        },
    }
    for stream, extra in old_cursors.items():
        entity = {
            "PartitionKey": encode_key(user),
            "RowKey": encode_key(stream),
            "User": user,
            "Stream": stream,
            "Link": "https://graph/delta?$deltatoken=x",
            "LinkKind": "delta",
            "Extra": json.dumps(extra),
        }
        await backend.raw.insert(backend.table("SyncCursors"), entity)
    mail = await store.get_cursor(user, "mail:inbox")
    assert mail.link_kind == "delta" and mail.totals == {"journaled": 12, "skipped": 3, "failed": 0}
    assert mail.last_page == datetime(2026, 11, 30, 10, tzinfo=UTC)
    assert mail.mail == MailProgress(
        backfill=Backfill(
            datetime(2026, 11, 1, tzinfo=UTC),
            datetime(2026, 11, 20, 8, tzinfo=UTC),
            "https://graph/list?$skiptoken=9",
        ),
        round_filtered=True,
        round_items=5000,
        round_oldest=datetime(2026, 11, 20, 8, tzinfo=UTC),
    )
    calendar = await store.get_cursor(user, "calendar")
    assert (
        calendar.calendar.round_id,
        calendar.calendar.reconciled_round,
        calendar.calendar.series_linked,
    ) == (
        "r-7",
        "r-6",
        2,
    )
    assert calendar.crm_cursor == "a-41" and calendar.calendar.series_checked == datetime(
        2026, 11, 30, 9, tzinfo=UTC
    )
    contacts = await store.get_cursor(user, "contacts")
    assert (contacts.contacts.folder_id, contacts.contacts.folder_name, contacts.crm_cursor) == (
        "AAMkF",
        "CRM Contacts",
        "c-9",
    )
    assert contacts.contacts.held == Held(datetime(2026, 11, 30, 11, tzinfo=UTC), 14)
    for stream, extra in old_cursors.items():  # saved again: the same keys and values
        saved = await store.save_cursor(user, stream, await store.get_cursor(user, stream))
        row = await backend.raw.get(backend.table("SyncCursors"), encode_key(user), encode_key(stream))
        assert row is not None and json.loads(row.entity["Extra"]) == extra, stream
        assert saved == await store.get_cursor(user, stream)

    base = {
        "given_name": "Ada",
        "surname": "Lee",
        "display_name": "",
        "emails": ["ada@x.example"],
        "business_phones": [],
        "mobile_phone": "",
        "company": "",
        "job_title": "",
        "department": "",
        "business_address": {"street": "", "city": "Oslo", "state": "", "postal_code": "", "country": ""},
        "notes": "",
    }
    old_links = {
        ("calendar", "ev-1"): {
            "series": "m-1",
            "start": "2026-12-01T09:00:00+00:00",
            "end": "2026-12-01T10:00:00+00:00",
            "round": "r-7",
            "pendingKey": "UID|2026",
        },
        ("calendar", "ev-2"): {"origin": "crm", "crmId": "A-3"},
        ("calendar", "m-1"): {"kind": "seriesMaster", "round": "r-7"},
        ("calendar:push", "A-3"): {"eventId": "ev-2"},
        ("calendar:push", "A-4"): {"eventId": "", "pending": True},
        ("contacts", "ct-1"): {
            "base": base,
            "crmVersion": "7",
            "removing": True,
            "pendingWrite": {"side": "crm", "crm": "p1", "local": "p2", "changeKey": "ck", "base": base},
        },
    }
    for (stream, item), extra in old_links.items():
        entity = {
            "PartitionKey": encode_key(user),
            "RowKey": join_key(stream, item),
            "User": user,
            "Stream": stream,
            "ItemId": item,
            "CrmKey": "k",
            "ChangeKey": "",
            "LocalFingerprint": "",
            "CrmFingerprint": "",
            "Extra": json.dumps(extra),
        }
        await backend.raw.insert(backend.table("SyncLinks"), entity)
    event = await store.get_link(user, "calendar", "ev-1")
    assert event is not None and event.event == EventLink(
        series="m-1",
        start=datetime(2026, 12, 1, 9, tzinfo=UTC),
        end=datetime(2026, 12, 1, 10, tzinfo=UTC),
        round_id="r-7",
        pending_key="UID|2026",
    )
    pushed = await store.get_link(user, "calendar", "ev-2")
    assert pushed is not None and pushed.event.from_crm and pushed.event.crm_id == "A-3"
    master = await store.get_link(user, "calendar", "m-1")
    assert master is not None and master.event.master
    push = await store.get_link(user, "calendar:push", "A-4")
    assert push is not None and push.push == PushLink(pending=True)
    contact = await store.get_link(user, "contacts", "ct-1")
    fields = ContactFields(
        given_name="Ada",
        surname="Lee",
        emails=("ada@x.example",),
        business_address=PostalAddress(city="Oslo"),
    )
    assert contact is not None and contact.contact == ContactLink(
        base=fields,
        crm_version="7",
        pending_write=PendingWrite("crm", "p1", "p2", "ck", fields),
        removing=True,
    )
    for stream, item in old_links:
        link = await store.get_link(user, stream, item)
        assert link is not None
        await store.put_links([link])
        row = await backend.raw.get(backend.table("SyncLinks"), encode_key(user), join_key(stream, item))
        wanted = {k: v for k, v in old_links[(stream, item)].items() if v != ""}
        assert row is not None and json.loads(row.entity["Extra"]) == wanted, (stream, item)

    key = unique("<old") + "@x>"
    extra = {
        "owner": "u-ann",
        "direction": "inbound",
        "organizer": "zoe@x.example",
        "cancelled": True,
        "people": {"p1": {"kind": "contact", "name": "Bob", "email": "bob@x.example"}},
    }
    entity = {
        "PartitionKey": key_partition(key),
        "RowKey": encode_key(key),
        "Key": key,
        "CrmRef": "J-1",
        "Mailboxes": json.dumps(["ann@x"]),
        "People": json.dumps(["p1"]),
        "Fingerprint": "f",
        "Extra": json.dumps(extra),
    }
    await backend.raw.insert(backend.table("SyncKeys"), entity)
    record = await store.get_key(key)
    assert record is not None and record.people == (PersonRef("p1", "contact", "Bob", "bob@x.example"),)
    assert (record.owner, record.direction, record.organizer, record.cancelled, record.identity) == (
        "u-ann",
        "inbound",
        "zoe@x.example",
        True,
        "",
    )
