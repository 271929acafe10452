"""The CRM port contract: every connector (see `conftest.py`) must pass it.

Each test reads `crm.connector.capabilities` where the port allows a CRM to differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulators.crm.launcher import ReferenceCrm
from shared.errors import CrmRejectedError, CrmRetryableError
from shared.model import (
    Address,
    Appointment,
    Attachment,
    Attendee,
    ContactFields,
    CrmContact,
    CrmContactRemoved,
    CrmRef,
    CrmTask,
    CrmTaskRemoved,
    Direction,
    Journal,
    PersonRef,
    PostalAddress,
    TaskFields,
    TaskImportance,
    TaskStatus,
)
from tests.contract.conftest import CrmHarness, MemoryHarness, ReferenceHarness

T0 = datetime(2024, 5, 6, 9, 30, tzinfo=UTC)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def journal(
    key: str, *, people: tuple[PersonRef, ...] = (), seen_by: tuple[str, ...] = ("a@contoso.test",)
) -> Journal:
    return Journal(
        key=key, subject="Quarterly review – Ünïcode ✓", body="Hello <b>not html</b>\nLine 2",
        direction=Direction.INBOUND, sender=Address("Ann.Lee@Example.test", "Ann Lee"),
        to=(Address("a@contoso.test", "Alice"),), cc=(Address("x@elsewhere.test"),),
        sent_at=T0, received_at=T0 + timedelta(seconds=3), conversation_id="conv-1",
        attachments=(Attachment("deck.pdf", 12345),), owner="a@contoso.test", seen_by=seen_by, people=people,
    )  # fmt: skip


def appointment(key: str, owner: str = "a@contoso.test", **changes: object) -> Appointment:
    value = Appointment(
        key=key, subject="Kick-off", start=T0, end=T0 + timedelta(hours=1), is_all_day=False,
        start_date=None, end_date=None, location="Room 1", organizer=Address("a@contoso.test", "Alice"),
        attendees=(Attendee(Address("ann.lee@example.test", "Ann"), "required", "accepted"),),
        online_meeting_url="https://meet.example.test/x", body="Agenda", owner=owner,
        seen_by=(owner,), people=(),
    )  # fmt: skip
    return dataclasses.replace(value, **changes)  # type: ignore[arg-type]


def contact(owner: str, key: str = "", ref: CrmRef | None = None, **fields: object) -> CrmContact:
    base = ContactFields(
        given_name="Ann", surname="Lee", display_name="Ann Lee", emails=("ann.lee@example.test",),
        business_phones=("+44 20 7946 0000",), mobile_phone="+44 7700 900000", company="Example Ltd",
        job_title="Buyer", department="Purchasing",
        business_address=PostalAddress("1 High St", "London", "", "N1 1AA", "UK"), notes="met at expo",
    )  # fmt: skip
    return CrmContact(ref=ref, owner=owner, fields=dataclasses.replace(base, **fields), key=key)  # type: ignore[arg-type]


def task(owner: str, key: str = "", ref: CrmRef | None = None, **fields: object) -> CrmTask:
    base = TaskFields(
        title="Call Ann about the renewal – ✓", body="Bring the price list\nand the contract",
        due=date(2024, 5, 10), reminder=T0, importance=TaskImportance.HIGH, status=TaskStatus.IN_PROGRESS,
        categories=("Renewals", "Q2"),
    )  # fmt: skip
    return CrmTask(ref=ref, owner=owner, fields=dataclasses.replace(base, **fields), key=key)  # type: ignore[arg-type]


def held(crm: CrmHarness, fields: TaskFields) -> TaskFields:
    """The fields as this CRM holds them (`Capabilities.task_fields`: the others read empty)."""
    names = crm.connector.capabilities.task_fields
    if names is None:
        return fields
    empty = TaskFields()
    return dataclasses.replace(
        fields, **{n: getattr(empty, n) for n in TaskFields.__dataclass_fields__ if n not in names}
    )


def needs_tasks(crm: CrmHarness) -> None:
    if not crm.connector.capabilities.tasks:
        pytest.skip("this CRM has no tasks (Capabilities.tasks is False)")


def ids(refs: list[PersonRef]) -> list[str]:
    return [r.id for r in refs]


# ---------------------------------------------------------------------------------------------
# People


async def test_find_people_matches_any_address_exactly_and_case_insensitively(crm: CrmHarness) -> None:
    ann = crm.add_person(["Ann.Lee@Example.test", "ann@private.test"], name="Ann Lee")
    crm.add_person("ann.lee@example.test.evil", name="Not Ann")

    found = await crm.connector.find_people(
        ["ann.lee@example.test", "ANN@PRIVATE.TEST", " Ann.Lee@EXAMPLE.test "]
    )

    assert set(found) == {"ann.lee@example.test", "ann@private.test"}
    assert ids(found["ann.lee@example.test"]) == [ann]
    assert ids(found["ann@private.test"]) == [ann]
    assert found["ann.lee@example.test"][0].name == "Ann Lee"


async def test_find_people_never_returns_a_company(crm: CrmHarness) -> None:
    crm.add_person("info@acme.test", name="Acme Ltd", kind="company")
    bob = crm.add_person("bob@acme.test", name="Bob")

    found = await crm.connector.find_people(["info@acme.test", "bob@acme.test"])

    assert found["info@acme.test"] == []
    assert ids(found["bob@acme.test"]) == [bob]


async def test_find_people_maps_unknown_addresses_to_empty_lists(crm: CrmHarness) -> None:
    assert await crm.connector.find_people(["nobody@nowhere.test"]) == {"nobody@nowhere.test": []}
    assert await crm.connector.find_people([]) == {}


async def test_find_people_returns_everyone_sharing_an_address_and_forgets_the_deleted(
    crm: CrmHarness,
) -> None:
    first = crm.add_person("desk@shared.test", name="First")
    second = crm.add_person("desk@shared.test", name="Second", kind="lead")
    assert sorted(ids((await crm.connector.find_people(["desk@shared.test"]))["desk@shared.test"])) == sorted(
        [first, second]
    )

    crm.delete_person(first)

    assert ids((await crm.connector.find_people(["desk@shared.test"]))["desk@shared.test"]) == [second]


# ---------------------------------------------------------------------------------------------
# Journals


async def test_journal_round_trips_with_an_awkward_key(crm: CrmHarness) -> None:
    ann = crm.add_person("ann.lee@example.test", name="Ann Lee")
    key = f"<{unique('m')}/a%2Fb?c#d e+f@mail.example.test>"
    written = journal(key, people=(PersonRef(ann, "contact", "Ann Lee", "ann.lee@example.test"),))

    await crm.connector.upsert_journal(written)

    assert await crm.connector.get_journal(key) == written
    assert crm.journal_keys() == [key]


async def test_journal_upsert_twice_is_one_record_and_the_second_replaces_seen_by_and_people(
    crm: CrmHarness,
) -> None:
    ann = PersonRef(crm.add_person("ann@example.test", name="Ann"), "contact", "Ann", "ann@example.test")
    bob = PersonRef(crm.add_person("bob@example.test", name="Bob"), "contact", "Bob", "bob@example.test")
    key = f"<{unique('m')}@example.test>"
    # One person per journal: the engine keys it `<internetMessageId>|<person id>`, so its person stays.
    second_people = (ann, bob) if crm.connector.capabilities.multi_person_journal else (ann,)

    first = await crm.connector.upsert_journal(journal(key, people=(ann,), seen_by=("a@contoso.test",)))
    again = await crm.connector.upsert_journal(
        journal(key, people=second_people, seen_by=("a@contoso.test", "b@contoso.test"))
    )

    assert again.id == first.id
    assert crm.journal_keys() == [key]
    stored = await crm.connector.get_journal(key)
    assert stored is not None
    assert stored.seen_by == ("a@contoso.test", "b@contoso.test")
    assert [p.id for p in stored.people] == [p.id for p in second_people]


async def test_unknown_journal_is_none(crm: CrmHarness) -> None:
    assert await crm.connector.get_journal("<never-written@example.test>") is None


async def test_journal_linking_an_unknown_person_is_rejected_with_the_reason(crm: CrmHarness) -> None:
    key = f"<{unique('m')}@example.test>"

    with pytest.raises(CrmRejectedError) as caught:
        await crm.connector.upsert_journal(journal(key, people=(PersonRef("p-does-not-exist"),)))

    assert "p-does-not-exist" in str(caught.value)
    assert crm.journal_keys() == []


async def test_journals_written_together_answer_per_journal_and_a_refused_one_stops_only_itself(
    crm: CrmHarness,
) -> None:
    ann = PersonRef(crm.add_person("ann@example.test", name="Ann"), "contact", "Ann", "ann@example.test")
    keys = [f"<{unique('bulk')}-{n}@example.test>" for n in range(3)]
    batch = [
        journal(keys[0], people=(ann,)),
        journal(keys[1], people=(PersonRef("p-does-not-exist"),)),
        journal(keys[2]),
    ]

    outcomes = await crm.connector.upsert_journals(batch)

    assert [type(o) for o in outcomes] == [CrmRef, CrmRejectedError, CrmRef]
    assert "p-does-not-exist" in str(outcomes[1])
    assert sorted(crm.journal_keys()) == sorted([keys[0], keys[2]])
    assert await crm.connector.get_journal(keys[0]) == batch[0]
    assert await crm.connector.get_journal(keys[2]) == batch[2]


async def test_journals_written_together_twice_are_one_record_each_with_the_latest_content(
    crm: CrmHarness,
) -> None:
    keys = [f"<{unique('bulk')}-{n}@example.test>" for n in range(4)]
    first = await crm.connector.upsert_journals([journal(k) for k in keys])
    latest = [journal(k, seen_by=("a@contoso.test", "b@contoso.test")) for k in keys]

    again = await crm.connector.upsert_journals(latest)

    assert all(isinstance(r, CrmRef) for r in [*first, *again]), [str(r) for r in [*first, *again]]
    assert [r.id for r in again if isinstance(r, CrmRef)] == [r.id for r in first if isinstance(r, CrmRef)]
    assert sorted(crm.journal_keys()) == sorted(keys)
    assert [await crm.connector.get_journal(k) for k in keys] == latest
    assert await crm.connector.upsert_journals([]) == []


async def test_a_key_given_twice_in_one_bulk_write_is_one_record_with_the_later_content(
    crm: CrmHarness,
) -> None:
    key = f"<{unique('bulk')}@example.test>"
    later = journal(key, seen_by=("a@contoso.test", "b@contoso.test"))

    outcomes = await crm.connector.upsert_journals([journal(key), later])

    assert all(isinstance(o, CrmRef) for o in outcomes)
    assert crm.journal_keys() == [key]
    assert await crm.connector.get_journal(key) == later


async def test_a_bulk_write_failing_past_the_retries_is_retryable_and_a_later_one_succeeds(
    crm: CrmHarness,
) -> None:
    keys = [f"<{unique('bulk')}-{n}@example.test>" for n in range(3)]
    crm.fail("upsert_journals", status=503, times=crm.retry_budget + 1)

    try:
        outcomes = await crm.connector.upsert_journals([journal(k) for k in keys])
    except CrmRetryableError as error:  # the whole request failed: nothing is known of any journal
        assert error.status == 503
    else:  # or a connector without a bulk API answers per journal (the faults spread over them)
        assert all(isinstance(o, CrmRef | CrmRetryableError) for o in outcomes)
        written = [k for k, o in zip(keys, outcomes, strict=True) if isinstance(o, CrmRef)]
        assert set(written) <= set(crm.journal_keys())

    again = await crm.connector.upsert_journals([journal(k) for k in keys])
    assert all(isinstance(o, CrmRef) for o in again)
    assert sorted(crm.journal_keys()) == sorted(keys)


async def test_an_ambiguous_bulk_write_repeated_leaves_one_record_each(crm: CrmHarness) -> None:
    keys = [f"<{unique('bulk')}-{n}@example.test>" for n in range(2)]
    crm.fail("upsert_journals", status=502, times=crm.retry_budget + 1, apply_then_fail=True)

    with contextlib.suppress(CrmRetryableError):
        await crm.connector.upsert_journals([journal(k) for k in keys])
    await crm.connector.upsert_journals([journal(k) for k in keys])

    assert sorted(crm.journal_keys()) == sorted(keys)


# Keys a sender chooses (a Message-ID, an iCalUId) that a URL could read as something else: dot
# segments ("." and ".." are removed by HTTP clients, so `PUT /journals/..` became `PUT /`), an
# escape that must stay literal, a slash.
PATH_LIKE_KEYS = [".", "..", "%2e", "%2E%2E", "/", "../..", "a/../b", "./", "<..@..>"]


@pytest.mark.parametrize("key", PATH_LIKE_KEYS)
async def test_a_journal_key_that_looks_like_a_path_is_a_record_of_its_own(crm: CrmHarness, key: str) -> None:
    bystander = f"<{unique('m')}@example.test>"
    await crm.connector.upsert_journal(journal(bystander))

    await crm.connector.upsert_journal(journal(key))
    await crm.connector.upsert_journal(journal(key, seen_by=("a@contoso.test", "b@contoso.test")))

    assert await crm.connector.get_journal(key) == journal(key, seen_by=("a@contoso.test", "b@contoso.test"))
    assert await crm.connector.get_journal(bystander) == journal(bystander)
    assert sorted(crm.journal_keys()) == sorted([bystander, key])


@pytest.mark.parametrize("key", PATH_LIKE_KEYS)
async def test_an_appointment_key_that_looks_like_a_path_is_a_record_of_its_own(
    crm: CrmHarness, key: str
) -> None:
    bystander = unique("ical")
    await crm.connector.upsert_appointment(appointment(bystander))

    await crm.connector.upsert_appointment(appointment(key, location="Room 9"))
    stored = await crm.connector.get_appointment(key)
    assert stored is not None and (stored.key, stored.location) == (key, "Room 9")
    await crm.connector.cancel_appointment(key)
    stored = await crm.connector.get_appointment(key)
    assert stored is not None and stored.cancelled
    await crm.connector.delete_appointment(key)
    assert await crm.connector.get_appointment(key) is None

    untouched = await crm.connector.get_appointment(bystander)
    assert untouched is not None and (untouched.location, untouched.cancelled) == ("Room 1", False)


# ---------------------------------------------------------------------------------------------
# Appointments


async def test_appointment_upsert_twice_is_one_record_with_the_latest_content(crm: CrmHarness) -> None:
    key = f"{unique('ical')}|2024-05-06T09:30:00+00:00"
    first = await crm.connector.upsert_appointment(appointment(key))
    moved = appointment(
        key, start=T0 + timedelta(days=1), end=T0 + timedelta(days=1, hours=2), location="Room 2"
    )

    again = await crm.connector.upsert_appointment(moved)

    assert again.id == first.id
    stored = await crm.connector.get_appointment(key)
    assert stored is not None
    assert (stored.location, stored.subject, stored.cancelled) == ("Room 2", "Kick-off", False)
    if crm.connector.capabilities.appointment_times:
        assert stored == moved
    else:
        assert stored.start.date() == moved.start.date()


async def test_all_day_appointment_keeps_its_dates(crm: CrmHarness) -> None:
    key = unique("ical")
    day = datetime(2024, 12, 24, tzinfo=UTC)
    all_day = appointment(
        key, start=day, end=day + timedelta(days=1), is_all_day=True,
        start_date=day.date(), end_date=(day + timedelta(days=1)).date(),
    )  # fmt: skip

    await crm.connector.upsert_appointment(all_day)

    stored = await crm.connector.get_appointment(key)
    assert stored is not None
    assert (stored.is_all_day, stored.start_date, stored.end_date) == (True, day.date(), all_day.end_date)


async def test_cancel_is_idempotent_and_unknown_keys_are_ignored(crm: CrmHarness) -> None:
    key = unique("ical")
    await crm.connector.upsert_appointment(appointment(key))

    await crm.connector.cancel_appointment(key)
    await crm.connector.cancel_appointment(key)
    await crm.connector.cancel_appointment(unique("never-written"))

    stored = await crm.connector.get_appointment(key)
    assert stored is not None and stored.cancelled
    assert await crm.connector.get_appointment(unique("never-written")) is None


async def test_delete_is_idempotent_and_a_later_upsert_creates_it_anew(crm: CrmHarness) -> None:
    key = unique("ical")
    await crm.connector.upsert_appointment(appointment(key))

    await crm.connector.delete_appointment(key)
    await crm.connector.delete_appointment(key)
    await crm.connector.delete_appointment(unique("never-written"))

    assert await crm.connector.get_appointment(key) is None
    await crm.connector.upsert_appointment(appointment(key))
    stored = await crm.connector.get_appointment(key)
    assert stored is not None and not stored.cancelled


async def test_appointment_ending_before_it_starts_is_rejected(crm: CrmHarness) -> None:
    key = unique("ical")
    with pytest.raises(CrmRejectedError):
        await crm.connector.upsert_appointment(appointment(key, end=T0 - timedelta(hours=1)))
    assert await crm.connector.get_appointment(key) is None


async def test_appointment_change_feed_reports_changes_after_the_cursor_for_the_owner(
    crm: CrmHarness,
) -> None:
    if not crm.connector.capabilities.appointment_change_feed:
        pytest.skip("this connector declares no appointment change feed")
    owner, other = unique("alice") + "@contoso.test", unique("bob") + "@contoso.test"
    made = crm.create_appointment(owner=owner, subject="Lunch", start=T0, end=T0 + timedelta(hours=1))
    crm.create_appointment(owner=other, subject="Not mine", start=T0, end=T0 + timedelta(hours=1))

    changes, cursor = await crm.connector.appointment_changes(owner, None)
    assert [(c.ref.id, c.key, c.subject, c.cancelled) for c in changes] == [(made, "", "Lunch", False)]

    assert (await crm.connector.appointment_changes(owner, cursor))[0] == []

    crm.edit_appointment(made, subject="Lunch (moved)")
    key = unique("ical")
    await crm.connector.upsert_appointment(appointment(key, owner=owner))
    await crm.connector.cancel_appointment(key)
    changes, cursor = await crm.connector.appointment_changes(owner, cursor)

    assert sorted((c.ref.id == made, c.key, c.subject, c.cancelled) for c in changes) == [
        (False, key, "Kick-off", True),
        (True, "", "Lunch (moved)", False),
    ]
    assert (await crm.connector.appointment_changes(owner, cursor))[0] == []


# ---------------------------------------------------------------------------------------------
# Contacts


async def test_contact_upsert_by_key_twice_is_one_contact_with_the_latest_fields(crm: CrmHarness) -> None:
    owner, key = unique("alice") + "@contoso.test", unique("link")

    first = await crm.connector.upsert_contact(contact(owner, key=key))
    again = await crm.connector.upsert_contact(contact(owner, key=key, job_title="Head Buyer"))

    assert again.id == first.id
    assert crm.contact_ids(owner) == [first.id]
    stored = await crm.connector.get_contact(first)
    assert stored is not None
    assert stored.fields == contact(owner, job_title="Head Buyer").fields
    assert (stored.owner, stored.key) == (owner, key)


async def test_contact_upsert_by_ref_updates_that_contact(crm: CrmHarness) -> None:
    owner = unique("alice") + "@contoso.test"
    person = crm.add_person("old@example.test", name="Old Name", owner=owner)

    ref = await crm.connector.upsert_contact(contact(owner, ref=CrmRef(person), display_name="New Name"))

    assert ref.id == person
    assert crm.contact_ids(owner) == [person]
    stored = await crm.connector.get_contact(ref)
    assert stored is not None and stored.fields.display_name == "New Name"


async def test_contact_deleted_in_the_crm_is_not_brought_back_by_an_update(crm: CrmHarness) -> None:
    owner, key = unique("alice") + "@contoso.test", unique("link")
    ref = await crm.connector.upsert_contact(contact(owner, key=key))
    crm.delete_person(ref.id)

    with pytest.raises(CrmRejectedError):
        await crm.connector.upsert_contact(contact(owner, ref=ref))
    assert crm.contact_ids(owner) == []
    if crm.connector.capabilities.contact_tombstones:
        with pytest.raises(CrmRejectedError):
            await crm.connector.upsert_contact(contact(owner, key=key))
        assert crm.contact_ids(owner) == []


async def test_contact_delete_is_idempotent(crm: CrmHarness) -> None:
    owner = unique("alice") + "@contoso.test"
    ref = await crm.connector.upsert_contact(contact(owner, key=unique("link")))

    await crm.connector.delete_contact(ref, owner)
    await crm.connector.delete_contact(ref, owner)
    await crm.connector.delete_contact(CrmRef("p-never-existed"), owner)

    assert await crm.connector.get_contact(ref) is None
    assert crm.contact_ids(owner) == []


# Ownership: a user's sync never takes over another owner's contact (README: "Only contacts assigned
# to the same CRM owner are ever linked"). A CRM holding one contact per address refuses; others make
# the user a contact of their own. Either way the other owner's contact keeps its fields and owners.


async def test_a_new_contact_never_takes_over_another_owners_contact_with_its_address(
    crm: CrmHarness,
) -> None:
    ann, carol = unique("ann") + "@contoso.test", unique("carol") + "@contoso.test"
    carols = crm.add_person("shared.person@example.test", name="Carol Kept", owner=carol)
    before = await crm.connector.get_contact(CrmRef(carols))
    from_ann = contact(ann, key=unique("link"), emails=("Shared.Person@example.test",), display_name="Ann's")

    try:
        ref = await crm.connector.upsert_contact(from_ann)
    except CrmRejectedError as refused:  # one contact per address: the write is refused, readably
        assert carols in str(refused) and "assigned to another" in str(refused)
        assert crm.contact_ids(ann) == []
    else:
        assert ref.id != carols and crm.contact_ids(ann) == [ref.id]
    assert await crm.connector.get_contact(CrmRef(carols)) == before
    assert crm.contact_ids(carol) == [carols]


async def test_a_write_never_takes_over_a_contact_reassigned_to_another_owner(crm: CrmHarness) -> None:
    ann, carol = unique("ann") + "@contoso.test", unique("carol") + "@contoso.test"
    key = unique("link")
    ref = await crm.connector.upsert_contact(contact(ann, key=key))
    crm.edit_person(ref.id, owner=carol)  # a CRM user gives it to Carol
    before = await crm.connector.get_contact(ref)

    for write in (
        contact(ann, ref=ref, key=key, job_title="By Ann"),
        contact(ann, key=key, job_title="By Ann"),
    ):
        with pytest.raises(CrmRejectedError, match="assigned to another"):
            await crm.connector.upsert_contact(write)

    assert await crm.connector.get_contact(ref) == before
    assert (crm.contact_ids(ann), crm.contact_ids(carol)) == ([], [ref.id])


async def test_a_contact_other_owners_share_is_never_deleted(crm: CrmHarness) -> None:
    ann, carol = unique("ann") + "@contoso.test", unique("carol") + "@contoso.test"
    ref = await crm.connector.upsert_contact(contact(ann, key=unique("link")))
    if not crm.share_person(ref.id, carol):
        pytest.skip("this CRM assigns a contact to one owner only")

    with pytest.raises(CrmRejectedError, match="not deleted"):
        await crm.connector.delete_contact(ref, ann)

    assert await crm.connector.get_contact(ref) is not None
    assert (crm.contact_ids(ann), crm.contact_ids(carol)) == ([ref.id], [ref.id])


async def test_a_delete_never_takes_a_contact_reassigned_to_another_owner(crm: CrmHarness) -> None:
    """Ann's Outlook delete of a contact a CRM user gave to Carol meanwhile (between the run's reading
    of the feed and its delete) leaves Carol's contact alone."""
    ann, carol = unique("ann") + "@contoso.test", unique("carol") + "@contoso.test"
    ref = await crm.connector.upsert_contact(contact(ann, key=unique("link")))
    crm.edit_person(ref.id, owner=carol)
    before = await crm.connector.get_contact(ref)

    with pytest.raises(CrmRejectedError):
        await crm.connector.delete_contact(ref, ann)

    assert await crm.connector.get_contact(ref) == before
    assert crm.contact_ids(carol) == [ref.id]


async def test_contact_with_too_many_addresses_is_rejected(crm: CrmHarness) -> None:
    owner = unique("alice") + "@contoso.test"
    many = tuple(f"a{i}@example.test" for i in range(50))
    with pytest.raises(CrmRejectedError):
        await crm.connector.upsert_contact(contact(owner, key=unique("link"), emails=many))
    assert crm.contact_ids(owner) == []


async def test_contact_feed_reports_changes_and_removals_after_the_cursor(crm: CrmHarness) -> None:
    owner, other = unique("alice") + "@contoso.test", unique("bob") + "@contoso.test"
    kept = crm.add_person("kept@example.test", name="Kept", owner=owner)
    moved = crm.add_person("moved@example.test", name="Moved", owner=owner)
    gone = crm.add_person("gone@example.test", name="Gone", owner=owner)
    crm.add_person("theirs@example.test", name="Theirs", owner=other)
    feed = crm.connector

    first = await feed.contact_changes(owner, None)
    assert sorted(c.ref.id for c in first.changes if isinstance(c, CrmContact) and c.ref) == sorted(
        [kept, moved, gone]
    )
    assert not [c for c in first.changes if isinstance(c, CrmContactRemoved)]

    quiet = await feed.contact_changes(owner, first.cursor)
    if crm.connector.capabilities.contact_change_feed:
        assert quiet.changes == ()

    crm.edit_person(kept, job_title="CFO")
    crm.edit_person(moved, owner=other)
    crm.delete_person(gone)
    later = await feed.contact_changes(owner, quiet.cursor)

    if crm.connector.capabilities.contact_change_feed:
        assert not later.snapshot
        changed = [c for c in later.changes if isinstance(c, CrmContact)]
        assert [(c.ref.id if c.ref else "", c.fields.job_title) for c in changed] == [(kept, "CFO")]
        removed = sorted(c.ref.id for c in later.changes if isinstance(c, CrmContactRemoved))
        assert removed == sorted([moved, gone])
    else:
        assert later.snapshot
        assert sorted(c.ref.id for c in later.changes if isinstance(c, CrmContact) and c.ref) == [kept]
    theirs = await feed.contact_changes(other, None)
    assert moved in [c.ref.id for c in theirs.changes if isinstance(c, CrmContact) and c.ref]
    if crm.connector.capabilities.contact_change_feed:
        assert (await feed.contact_changes(owner, later.cursor)).changes == ()


async def test_contact_feed_shows_our_own_writes_for_the_owner(crm: CrmHarness) -> None:
    owner = unique("alice") + "@contoso.test"
    start = await crm.connector.contact_changes(owner, None)

    ref = await crm.connector.upsert_contact(contact(owner, key=unique("link")))

    page = await crm.connector.contact_changes(owner, start.cursor)
    assert [c.ref.id for c in page.changes if isinstance(c, CrmContact) and c.ref] == [ref.id]


# ---------------------------------------------------------------------------------------------
# Tasks


async def test_task_upsert_by_key_twice_is_one_task_with_the_latest_fields(crm: CrmHarness) -> None:
    needs_tasks(crm)
    owner, key = unique("alice") + "@contoso.test", unique("todo")

    first = await crm.connector.upsert_task(task(owner, key=key))
    again = await crm.connector.upsert_task(
        task(owner, key=key, status=TaskStatus.COMPLETED, completed=date(2024, 5, 9))
    )

    assert again.id == first.id
    assert crm.task_ids(owner) == [first.id]
    stored = await crm.connector.get_task(first)
    assert stored is not None
    want = task(owner, status=TaskStatus.COMPLETED, completed=date(2024, 5, 9)).fields
    assert stored.fields == held(crm, want)
    assert (stored.owner, stored.key) == (owner, key)
    assert stored.url  # where a person opens it in the CRM (To Do's linkedResource)


async def test_task_upsert_by_ref_updates_that_task(crm: CrmHarness) -> None:
    needs_tasks(crm)
    owner = unique("alice") + "@contoso.test"
    made = crm.add_task(owner=owner, title="Old title", due=date(2024, 6, 1))

    ref = await crm.connector.upsert_task(task(owner, ref=CrmRef(made), title="New title", due=None))

    assert ref.id == made
    assert crm.task_ids(owner) == [made]
    stored = await crm.connector.get_task(ref)
    assert stored is not None and (stored.fields.title, stored.fields.due) == ("New title", None)


async def test_task_about_a_crm_person_keeps_the_link(crm: CrmHarness) -> None:
    needs_tasks(crm)
    owner = unique("alice") + "@contoso.test"
    person = crm.add_person(unique("ann") + "@example.test", name="Ann", owner=owner)

    ref = await crm.connector.upsert_task(
        dataclasses.replace(task(owner, key=unique("todo")), regarding=person)
    )

    stored = await crm.connector.get_task(ref)
    assert stored is not None and stored.regarding == person


async def test_task_deleted_in_the_crm_is_not_brought_back_by_an_update(crm: CrmHarness) -> None:
    needs_tasks(crm)
    owner, key = unique("alice") + "@contoso.test", unique("todo")
    ref = await crm.connector.upsert_task(task(owner, key=key))
    crm.delete_task(ref.id)

    with pytest.raises(CrmRejectedError):
        await crm.connector.upsert_task(task(owner, ref=ref))
    with pytest.raises(CrmRejectedError):
        await crm.connector.upsert_task(task(owner, key=key))
    assert crm.task_ids(owner) == []


async def test_task_delete_is_idempotent(crm: CrmHarness) -> None:
    needs_tasks(crm)
    owner = unique("alice") + "@contoso.test"
    ref = await crm.connector.upsert_task(task(owner, key=unique("todo")))

    await crm.connector.delete_task(ref)
    await crm.connector.delete_task(ref)
    await crm.connector.delete_task(CrmRef("t-never-existed"))

    assert await crm.connector.get_task(ref) is None
    assert crm.task_ids(owner) == []


async def test_task_feed_reports_changes_and_removals_after_the_cursor(crm: CrmHarness) -> None:
    needs_tasks(crm)
    owner, other = unique("alice") + "@contoso.test", unique("bob") + "@contoso.test"
    kept = crm.add_task(owner=owner, title="Kept")
    moved = crm.add_task(owner=owner, title="Moved")
    gone = crm.add_task(owner=owner, title="Gone")
    crm.add_task(owner=other, title="Theirs")
    feed = crm.connector
    live = crm.connector.capabilities.task_change_feed

    first = await feed.task_changes(owner, None)
    assert sorted(t.ref.id for t in first.changes if isinstance(t, CrmTask) and t.ref) == sorted(
        [kept, moved, gone]
    )
    assert not [t for t in first.changes if isinstance(t, CrmTaskRemoved)]
    quiet = await feed.task_changes(owner, first.cursor)
    if live:
        assert quiet.changes == ()

    crm.edit_task(kept, done=True)
    crm.edit_task(moved, owner=other)
    crm.delete_task(gone)
    later = await feed.task_changes(owner, quiet.cursor)

    changed = [(t.ref.id, t.fields.status) for t in later.changes if isinstance(t, CrmTask) and t.ref]
    assert changed == [(kept, TaskStatus.COMPLETED)]
    if live:
        assert not later.snapshot
        removed = sorted(t.ref.id for t in later.changes if isinstance(t, CrmTaskRemoved))
        assert removed == sorted([moved, gone])
        assert (await feed.task_changes(owner, later.cursor)).changes == ()
    else:
        assert later.snapshot
    theirs = await feed.task_changes(other, None)
    assert moved in [t.ref.id for t in theirs.changes if isinstance(t, CrmTask) and t.ref]


async def test_task_feed_shows_our_own_writes_for_the_owner(crm: CrmHarness) -> None:
    needs_tasks(crm)
    owner = unique("alice") + "@contoso.test"
    start = await crm.connector.task_changes(owner, None)

    ref = await crm.connector.upsert_task(task(owner, key=unique("todo")))

    page = await crm.connector.task_changes(owner, start.cursor)
    assert [t.ref.id for t in page.changes if isinstance(t, CrmTask) and t.ref] == [ref.id]


async def test_an_ambiguous_task_write_repeated_leaves_one_task(crm: CrmHarness) -> None:
    needs_tasks(crm)
    owner, key = unique("alice") + "@contoso.test", unique("todo")
    crm.fail("upsert_task", status=500, times=crm.retry_budget + 1, apply_then_fail=True)

    with pytest.raises(CrmRetryableError):
        await crm.connector.upsert_task(task(owner, key=key))
    await crm.connector.upsert_task(task(owner, key=key))

    assert len(crm.task_ids(owner)) == 1


# ---------------------------------------------------------------------------------------------
# Failures


async def test_failure_outlasting_the_retries_raises_retryable_and_a_later_run_succeeds(
    crm: CrmHarness,
) -> None:
    key = f"<{unique('m')}@example.test>"
    crm.fail("upsert_journal", status=503, times=crm.retry_budget + 1)

    with pytest.raises(CrmRetryableError) as caught:
        await crm.connector.upsert_journal(journal(key))

    assert caught.value.status == 503
    assert crm.journal_keys() == []
    await crm.connector.upsert_journal(journal(key))
    assert crm.journal_keys() == [key]


async def test_brief_failures_within_the_retry_budget_are_ridden_out(crm: CrmHarness) -> None:
    if crm.retry_budget == 0:
        pytest.skip("nothing between this connector and its CRM to ride failures out")
    key = f"<{unique('m')}@example.test>"
    crm.fail("upsert_journal", status=500, times=1)
    crm.fail("upsert_journal", status=429, times=crm.retry_budget - 1, retry_after="0.05")

    await crm.connector.upsert_journal(journal(key))

    assert crm.journal_keys() == [key]


async def test_throttling_with_a_fractional_retry_after_is_reported_with_it(crm: CrmHarness) -> None:
    crm.fail("find_people", status=429, times=crm.retry_budget + 1, retry_after="0.05")

    with pytest.raises(CrmRetryableError) as caught:
        await crm.connector.find_people(["ann@example.test"])

    assert caught.value.status == 429
    assert caught.value.retry_after == pytest.approx(0.05)


async def test_a_very_long_retry_after_is_not_slept_inside_the_job(crm: CrmHarness) -> None:
    crm.fail("upsert_journal", status=503, times=1, retry_after="3600")

    with pytest.raises(CrmRetryableError) as caught:
        await asyncio.wait_for(crm.connector.upsert_journal(journal(f"<{unique('m')}@x.test>")), timeout=30)

    assert caught.value.retry_after == pytest.approx(3600)


async def test_an_ambiguous_write_repeated_leaves_one_record(crm: CrmHarness) -> None:
    key = f"<{unique('m')}@example.test>"
    crm.fail("upsert_journal", status=502, times=crm.retry_budget + 1, apply_then_fail=True)

    with pytest.raises(CrmRetryableError):
        await crm.connector.upsert_journal(journal(key))
    await crm.connector.upsert_journal(journal(key))

    assert crm.journal_keys() == [key]


async def test_an_ambiguous_contact_write_repeated_leaves_one_contact(crm: CrmHarness) -> None:
    owner, key = unique("alice") + "@contoso.test", unique("link")
    crm.fail("upsert_contact", status=500, times=1, apply_then_fail=True)

    try:
        await crm.connector.upsert_contact(contact(owner, key=key))
    except CrmRetryableError:
        await crm.connector.upsert_contact(contact(owner, key=key))

    assert len(crm.contact_ids(owner)) == 1


async def test_a_client_error_is_rejected_at_once_with_the_servers_reason(crm: CrmHarness) -> None:
    crm.fail("upsert_appointment", status=400, times=1)

    with pytest.raises(CrmRejectedError) as caught:
        await crm.connector.upsert_appointment(appointment(unique("ical")))

    assert caught.value.status == 400
    assert "injected" in str(caught.value)


async def test_bad_credentials_give_a_clear_error_and_an_unhealthy_check(crm: CrmHarness) -> None:
    bad = crm.with_bad_credentials()
    try:
        with pytest.raises(CrmRejectedError) as caught:
            await bad.find_people(["ann@example.test"])
        health = await bad.check()
    finally:
        await bad.aclose()

    assert caught.value.status == 401
    assert "credentials" in str(caught.value)
    assert not health.ok and "credentials" in health.detail


async def test_check_reports_a_reachable_crm(crm: CrmHarness) -> None:
    health = await crm.connector.check()
    assert health.ok, health.detail


# ---------------------------------------------------------------------------------------------
# The fake cannot drift: random contact histories give the same feeds from the fake and the real thing

_OWNERS = ("a@contoso.test", "b@contoso.test")
_step = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(_OWNERS)),
    st.tuples(st.just("edit"), st.integers(0, 7), st.sampled_from(["CEO", "CFO", ""])),
    st.tuples(st.just("reassign"), st.integers(0, 7), st.sampled_from(_OWNERS)),
    st.tuples(st.just("delete"), st.integers(0, 7)),
    st.tuples(
        st.just("upsert"),
        st.sampled_from(["k1", "k2"]),
        st.sampled_from(_OWNERS),
        st.sampled_from(["X", "Y"]),
    ),
    st.tuples(st.just("read"), st.sampled_from(_OWNERS)),
    st.tuples(st.just("read"), st.just(_OWNERS[0])),
)


class _Replay:
    """Plays one history on one harness; reports what the engine would see, with ids as handles."""

    def __init__(self, harness: CrmHarness, run: str) -> None:
        self.harness, self.run = harness, run
        self.handles: list[str] = []  # person ids in creation order
        self.cursors: dict[str, str | None] = dict.fromkeys(_OWNERS)

    def _handle(self, person_id: str) -> int:
        if person_id not in self.handles:
            self.handles.append(person_id)
        return self.handles.index(person_id)

    async def play(self, step: tuple[object, ...]) -> object:
        op, crm = step[0], self.harness
        picks = op in ("edit", "reassign", "delete") and self.handles
        target = self.handles[int(str(step[1])) % len(self.handles)] if picks else ""
        try:
            if op == "add":
                return self._handle(crm.add_person(unique("p") + "@x.test", name="P", owner=str(step[1])))
            if op == "edit" and target:
                crm.edit_person(target, job_title=str(step[2]))
            if op == "reassign" and target:
                crm.edit_person(target, owner=str(step[2]))
            if op == "delete" and target:
                crm.delete_person(target)
            if op == "upsert":
                key = f"{self.run}-{step[1]}"
                ref = await crm.connector.upsert_contact(
                    contact(str(step[2]), key=key, job_title=str(step[3]))
                )
                return self._handle(ref.id)
        except (CrmRejectedError, httpx.HTTPStatusError):
            return "refused"  # editing a deleted person, or upserting a key deleted in the CRM
        if op == "read":
            return await self._read(str(step[1]))
        return None

    async def _read(self, owner: str) -> list[tuple[object, ...]]:
        page = await self.harness.connector.contact_changes(owner, self.cursors[owner])
        self.cursors[owner] = page.cursor
        return [
            (self._handle(c.ref.id), "removed")
            if isinstance(c, CrmContactRemoved)
            else (self._handle(c.ref.id if c.ref else ""), c.owner, c.fields.job_title)
            for c in page.changes
        ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=st.lists(_step, min_size=1, max_size=14))
async def test_the_fake_and_the_reference_crm_agree_on_random_contact_histories(
    reference_server: ReferenceCrm, history: list[tuple[object, ...]]
) -> None:
    reference_server.reset()
    run = unique("run")
    fake, real = MemoryHarness(), ReferenceHarness(reference_server)
    try:
        replays = _Replay(fake, run), _Replay(real, run)
        for step in [*history, ("read", _OWNERS[0]), ("read", _OWNERS[1])]:
            seen = [await replay.play(step) for replay in replays]
            assert seen[0] == seen[1], step
    finally:
        await real.connector.aclose()
