"""`BottleCrmConnector` against a real BottleCRM (its REST API over HTTP, PostgreSQL behind it).

Each test uses its own addresses and keys, so the tests share one CRM and still do not see each other.
End states are read back through the connector and, where it matters, through BottleCRM's own API.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from emulators.bottlecrm import BottleCrm
from shared.crm.bottlecrm import BODY_LIMIT, BottleCrmConnector
from shared.errors import CrmRejectedError, CrmRetryableError
from shared.model import (
    Address,
    Appointment,
    Attachment,
    Attendee,
    ContactFields,
    CrmContact,
    CrmContactRemoved,
    Direction,
    Journal,
    PersonRef,
    PostalAddress,
)

pytestmark = [pytest.mark.integration, pytest.mark.bottlecrm]

OWNER = "owner.one@example.com"
OTHER_OWNER = "owner.two@example.com"


def tag() -> str:
    return uuid.uuid4().hex[:10]


def person_fields(email: str, **changes: Any) -> ContactFields:
    base = ContactFields(
        given_name="Ada",
        surname="Lovelace",
        display_name="Ada Lovelace (Analytical)",
        emails=(email, f"second.{email}"),
        business_phones=("+44 20 7946 0000", "+44 20 7946 0001"),
        mobile_phone="+44 7700 900000",
        company="Analytical Ltd",
        job_title="Engineer",
        department="Engines",
        business_address=PostalAddress("1 Engine St", "London", "Greater London", "N1 1AA", "United Kingdom"),
        notes="met at the exhibition",
    )
    return replace(base, **changes)


async def api(server: BottleCrm, method: str, path: str, **kwargs: Any) -> Any:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.request(
            method, path, headers={"Authorization": f"Bearer {server.token}"}, **kwargs
        )
        response.raise_for_status()
        return response.json() if response.content else None


async def new_person(crm: BottleCrmConnector, owner: str = OWNER) -> PersonRef:
    email = f"p-{tag()}@example.org"
    ref = await crm.upsert_contact(CrmContact(ref=None, owner=owner, fields=person_fields(email), key=tag()))
    return PersonRef(id=ref.id, kind="contact", name="Ada Lovelace", email=email)


def journal(key: str, people: tuple[PersonRef, ...], **changes: Any) -> Journal:
    base = Journal(
        key=key,
        subject="Re: Proposal",
        body="Hi,\nthe quote is attached.\n\nAda",
        direction=Direction.INBOUND,
        sender=Address("ada@example.org", "Ada Lovelace"),
        to=(Address("owner.one@example.com", "Owner One"),),
        cc=(Address("cc@example.org", ""),),
        sent_at=datetime(2026, 11, 20, 9, 15, tzinfo=UTC),
        received_at=datetime(2026, 11, 20, 9, 16, tzinfo=UTC),
        conversation_id="conv-1",
        attachments=(Attachment("quote.pdf", 12345),),
        owner=OWNER,
        seen_by=("owner.one@example.com",),
        people=people,
    )
    return replace(base, **changes)


def appointment(key: str, people: tuple[PersonRef, ...], **changes: Any) -> Appointment:
    base = Appointment(
        key=key,
        subject="Kick-off",
        start=datetime(2026, 12, 1, 10, 0, tzinfo=UTC),
        end=datetime(2026, 12, 1, 11, 30, tzinfo=UTC),
        is_all_day=False,
        start_date=None,
        end_date=None,
        location="Room 1",
        organizer=Address("owner.one@example.com", "Owner One"),
        attendees=tuple(Attendee(Address(p.email, p.name)) for p in people),
        online_meeting_url="https://meet.example.com/abc",
        body="Agenda: scope, dates.",
        owner=OWNER,
        seen_by=("owner.one@example.com",),
        people=people,
    )
    return replace(base, **changes)


# ---------------------------------------------------------------------------------------------
# People and contacts


async def test_find_people_matches_whole_addresses_only(crm: BottleCrmConnector) -> None:
    ada = await new_person(crm)
    await crm.upsert_contact(
        CrmContact(ref=None, owner=OWNER, fields=person_fields("x" + ada.email), key=tag())
    )
    nobody = f"nobody-{tag()}@example.org"

    found = await crm.find_people([ada.email.upper(), nobody])

    assert [p.id for p in found[ada.email.lower()]] == [ada.id]
    assert found[ada.email.lower()][0].email == ada.email
    assert found[nobody] == []


async def test_contact_round_trips_every_field(crm: BottleCrmConnector) -> None:
    fields = person_fields(f"rt-{tag()}@example.org")
    key = tag()

    ref = await crm.upsert_contact(CrmContact(ref=None, owner=OWNER, fields=fields, key=key))
    stored = await crm.get_contact(ref)

    assert stored is not None
    assert stored.fields == fields
    assert stored.key == key
    assert stored.owner == OWNER
    assert stored.updated_at is not None


async def test_contact_with_blank_names_and_odd_phone_reads_back_unchanged(crm: BottleCrmConnector) -> None:
    fields = ContactFields(
        given_name="Cher", emails=(f"cher-{tag()}@example.org",), business_phones=("ext. 12",)
    )
    ref = await crm.upsert_contact(CrmContact(ref=None, owner=OWNER, fields=fields, key=tag()))

    stored = await crm.get_contact(ref)

    assert stored is not None and stored.fields == fields


async def test_contact_upsert_by_key_and_by_ref_creates_nothing_twice(
    crm: BottleCrmConnector, bottlecrm_server: BottleCrm
) -> None:
    key = tag()
    email = f"k-{tag()}@example.org"
    first = await crm.upsert_contact(CrmContact(ref=None, owner=OWNER, fields=person_fields(email), key=key))
    again = await crm.upsert_contact(
        CrmContact(ref=None, owner=OWNER, fields=person_fields(email, job_title="CTO"), key=key)
    )
    by_ref = await crm.upsert_contact(
        CrmContact(ref=first, owner=OWNER, fields=person_fields(email, job_title="CEO"), key=key)
    )

    assert first.id == again.id == by_ref.id
    rows = (await api(bottlecrm_server, "GET", "/api/contacts/", params={"cf_outlook_key": key}))["results"]
    assert len(rows) == 1
    stored = await crm.get_contact(first)
    assert stored is not None and stored.fields.job_title == "CEO"


async def test_a_contact_of_the_same_owner_holding_the_address_is_adopted(crm: BottleCrmConnector) -> None:
    email = f"dup-{tag()}@example.org"
    existing = await crm.upsert_contact(CrmContact(ref=None, owner=OWNER, fields=person_fields(email)))

    adopted = await crm.upsert_contact(
        CrmContact(ref=None, owner=OWNER, fields=person_fields(email.upper(), notes="x"), key=tag())
    )

    assert adopted.id == existing.id
    assert [p.id for p in (await crm.find_people([email]))[email]] == [existing.id]
    stored = await crm.get_contact(existing)
    assert stored is not None and (stored.owner, stored.fields.notes) == (OWNER, "x")


async def test_another_owners_contact_holding_the_address_is_refused_and_left_alone(
    crm: BottleCrmConnector, bottlecrm_server: BottleCrm
) -> None:
    email = f"dup-{tag()}@example.org"
    existing = await crm.upsert_contact(CrmContact(ref=None, owner=OWNER, fields=person_fields(email)))
    before = await api(bottlecrm_server, "GET", f"/api/contacts/{existing.id}/")

    with pytest.raises(CrmRejectedError, match="assigned to another user"):
        await crm.upsert_contact(
            CrmContact(ref=None, owner=OTHER_OWNER, fields=person_fields(email, notes="x"), key=tag())
        )

    after = await api(bottlecrm_server, "GET", f"/api/contacts/{existing.id}/")
    assert after["contact_obj"] == before["contact_obj"]  # no field, key or assignee changed


async def test_delete_contact_is_idempotent(crm: BottleCrmConnector) -> None:
    ref = await crm.upsert_contact(
        CrmContact(ref=None, owner=OWNER, fields=person_fields(f"d-{tag()}@example.org"), key=tag())
    )

    await crm.delete_contact(ref)
    await crm.delete_contact(ref)

    assert await crm.get_contact(ref) is None


async def test_contact_feed_is_a_snapshot_of_the_owners_contacts(crm: BottleCrmConnector) -> None:
    owner = f"feed-{tag()}@example.com"
    mine = [
        await crm.upsert_contact(
            CrmContact(ref=None, owner=owner, fields=person_fields(f"f{i}-{tag()}@example.org"), key=tag())
        )
        for i in range(3)
    ]
    theirs = await crm.upsert_contact(
        CrmContact(ref=None, owner=OTHER_OWNER, fields=person_fields(f"o-{tag()}@example.org"), key=tag())
    )

    first = await crm.contact_changes(owner, None)
    await crm.delete_contact(mine[0])
    second = await crm.contact_changes(owner, first.cursor)

    assert first.snapshot and second.snapshot
    ids = {c.ref.id for c in first.changes if isinstance(c, CrmContact) and c.ref}
    assert ids == {r.id for r in mine}
    assert theirs.id not in ids
    assert all(isinstance(c, CrmContact) and c.owner == owner for c in first.changes)
    assert {c.ref.id for c in second.changes if isinstance(c, CrmContact) and c.ref} == {
        r.id for r in mine[1:]
    }
    assert not any(isinstance(c, CrmContactRemoved) for c in second.changes)
    assert second.cursor >= first.cursor


async def test_unknown_owner_is_refused_unless_provisioning(bottlecrm_server: BottleCrm) -> None:
    strict = BottleCrmConnector(bottlecrm_server.base_url, bottlecrm_server.token)
    try:
        with pytest.raises(CrmRejectedError, match="not an active user"):
            await strict.upsert_contact(
                CrmContact(
                    ref=None,
                    owner=f"ghost-{tag()}@example.com",
                    fields=person_fields(f"g-{tag()}@example.org"),
                )
            )
    finally:
        await strict.aclose()


# ---------------------------------------------------------------------------------------------
# Journals


async def test_journal_round_trips_and_rewrites_in_place(
    crm: BottleCrmConnector, bottlecrm_server: BottleCrm
) -> None:
    ada = await new_person(crm)
    key = f"<{tag()}@mail.example.com>|{ada.id}"
    written = journal(key, (ada,))

    ref = await crm.upsert_journal(written)
    again = await crm.upsert_journal(written)
    edited = replace(written, subject="Re: Proposal (v2)", seen_by=("owner.one@example.com", "b@example.com"))
    third = await crm.upsert_journal(edited)

    assert ref.id == again.id == third.id
    assert await crm.get_journal(key) == edited
    rows = await api(bottlecrm_server, "GET", "/api/interactions/", params={"contact": ada.id})
    assert rows["count"] == 1
    assert rows["interactions"][0]["kind"] == "email"
    assert rows["interactions"][0]["subject"] == "Re: Proposal (v2)"


async def test_journal_is_found_by_a_fresh_connector(
    crm: BottleCrmConnector, bottlecrm_server: BottleCrm
) -> None:
    ada = await new_person(crm)
    key = f"<{tag()}@mail.example.com>|{ada.id}"
    await crm.upsert_journal(journal(key, (ada,)))
    fresh = BottleCrmConnector(bottlecrm_server.base_url, bottlecrm_server.token)
    try:
        assert await fresh.get_journal(key) == journal(key, (ada,))
        assert await fresh.get_journal(f"<{tag()}@mail.example.com>|{ada.id}") is None
    finally:
        await fresh.aclose()


async def test_journal_survives_a_person_adding_text_below_the_marker(
    crm: BottleCrmConnector, bottlecrm_server: BottleCrm
) -> None:
    ada = await new_person(crm)
    key = f"<{tag()}@mail.example.com>|{ada.id}"
    ref = await crm.upsert_journal(journal(key, (ada,)))
    row = (await api(bottlecrm_server, "GET", "/api/interactions/", params={"contact": ada.id}))[
        "interactions"
    ][0]
    await api(
        bottlecrm_server,
        "PATCH",
        f"/api/interactions/{ref.id}/",
        json={"body": row["body"] + "\n\nCalled her back, all fine. -- Sam"},
    )

    again = await crm.upsert_journal(journal(key, (ada,), subject="Re: Proposal (v2)"))

    assert again.id == ref.id
    rows = await api(bottlecrm_server, "GET", "/api/interactions/", params={"contact": ada.id})
    assert rows["count"] == 1


async def test_journal_nobody_matched_is_kept_and_found(crm: BottleCrmConnector) -> None:
    key = f"<{tag()}@mail.example.com>"
    written = journal(key, ())

    first = await crm.upsert_journal(written)
    second = await crm.upsert_journal(written)

    assert first.id == second.id
    assert await crm.get_journal(key) == written


async def test_journal_bodies_stay_within_bottlecrms_limit(crm: BottleCrmConnector) -> None:
    ada = await new_person(crm)
    limit = crm.capabilities.journal_body_limit
    assert limit is not None
    at_limit = journal(f"<{tag()}@m>|{ada.id}", (ada,), body="x" * limit)
    crowded = journal(
        f"<{tag()}@m>|{ada.id}",
        (ada,),
        body="y" * 30_000,
        to=tuple(Address(f"r{i}-{uuid.uuid4().hex}@example.org", f"Recipient {i}") for i in range(400)),
    )

    await crm.upsert_journal(at_limit)
    await crm.upsert_journal(crowded)

    assert await crm.get_journal(at_limit.key) == at_limit
    stored = await crm.get_journal(crowded.key)
    assert stored is not None
    assert stored.body.startswith("y" * 1000) and stored.body.endswith("limit]")
    assert len(stored.body) < BODY_LIMIT


async def test_journal_dated_in_the_future_is_accepted(crm: BottleCrmConnector) -> None:
    ada = await new_person(crm)
    later = datetime.now(UTC) + timedelta(days=2)
    written = journal(f"<{tag()}@m>|{ada.id}", (ada,), sent_at=later, received_at=later)

    await crm.upsert_journal(written)

    assert await crm.get_journal(written.key) == written


async def test_journal_with_several_people_is_refused(crm: BottleCrmConnector) -> None:
    assert not crm.capabilities.multi_person_journal
    ada, bob = await new_person(crm), await new_person(crm)
    with pytest.raises(CrmRejectedError, match="one home record"):
        await crm.upsert_journal(journal(f"<{tag()}@m>", (ada, bob)))


# ---------------------------------------------------------------------------------------------
# Appointments


async def test_appointment_round_trips_updates_and_cancels(
    crm: BottleCrmConnector, bottlecrm_server: BottleCrm
) -> None:
    ada, bob = await new_person(crm), await new_person(crm)
    key = f"ical-{tag()}"
    written = appointment(key, (ada, bob))

    ref = await crm.upsert_appointment(written)
    moved = replace(written, start=written.start + timedelta(days=1), end=written.end + timedelta(days=1))
    again = await crm.upsert_appointment(moved)

    assert ref.id == again.id
    assert await crm.get_appointment(key) == moved
    task = (await api(bottlecrm_server, "GET", f"/api/tasks/{ref.id}/"))["task_obj"]
    assert task["due_date"] == "2026-12-02"
    assert {c["id"] for c in task["contacts"]} == {ada.id, bob.id}

    await crm.cancel_appointment(key)
    await crm.cancel_appointment(key)
    await crm.cancel_appointment(f"ical-{tag()}")

    assert await crm.get_appointment(key) == replace(moved, cancelled=True)
    tasks = await api(bottlecrm_server, "GET", "/api/tasks/", params={"cf_outlook_event_key": key})
    assert len(tasks["tasks"]) == 1
    assert tasks["tasks"][0]["title"].startswith("[Cancelled]")


async def test_all_day_appointment_keeps_its_dates(crm: BottleCrmConnector) -> None:
    key = f"ical-{tag()}"
    written = appointment(
        key,
        (),
        is_all_day=True,
        start=datetime(2026, 12, 24, tzinfo=UTC),
        end=datetime(2026, 12, 26, tzinfo=UTC),
        start_date=date(2026, 12, 24),
        end_date=date(2026, 12, 26),
    )

    await crm.upsert_appointment(written)

    assert await crm.get_appointment(key) == written


# ---------------------------------------------------------------------------------------------
# Errors and retries


async def test_bad_token_is_reported_as_a_credentials_problem(bottlecrm_server: BottleCrm) -> None:
    bad = BottleCrmConnector(bottlecrm_server.base_url, "bcrm_pat_not-a-token")
    try:
        health = await bad.check()
        with pytest.raises(CrmRejectedError, match="token") as raised:
            await bad.find_people(["a@example.org"])
    finally:
        await bad.aclose()
    assert not health.ok and "token" in health.detail
    assert raised.value.status == 401 and not raised.value.retryable  # BottleCRM sends 403


async def test_good_token_checks_ok(crm: BottleCrmConnector) -> None:
    assert (await crm.check()).ok


async def test_invalid_data_is_rejected_with_the_reason(crm: BottleCrmConnector) -> None:
    with pytest.raises(CrmRejectedError, match="email"):
        await crm.upsert_contact(
            CrmContact(ref=None, owner=OWNER, fields=person_fields("not-an-address"), key=tag())
        )


class FlakyTransport(httpx.AsyncBaseTransport):
    """Forwards to the real server, but answers some requests with a fault: `before` faults are
    answered without forwarding; `after` faults are answered after the server did the work."""

    def __init__(self, before: list[httpx.Response], after: dict[str, list[int]]) -> None:
        self._real = httpx.AsyncHTTPTransport()
        self._before = before
        self._after = after

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._before:
            return self._before.pop(0)
        response = await self._real.handle_async_request(request)
        pending = self._after.get(request.method, [])
        if pending:
            await response.aread()
            return httpx.Response(pending.pop(0))
        return response

    async def aclose(self) -> None:
        await self._real.aclose()


async def test_throttling_and_lost_answers_neither_fail_nor_duplicate(
    bottlecrm_server: BottleCrm,
) -> None:
    faults = [httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(503)]
    client = httpx.AsyncClient(transport=FlakyTransport(faults, {"POST": [502, 504]}))
    crm = BottleCrmConnector(bottlecrm_server.base_url, bottlecrm_server.token, client=client)
    key = tag()
    email = f"flaky-{tag()}@example.org"
    ada = PersonRef(id="", email=email)
    try:
        ref = await crm.upsert_contact(
            CrmContact(ref=None, owner=bottlecrm_server.admin_email, fields=person_fields(email), key=key)
        )
        ada = replace(ada, id=ref.id)
        jkey = f"<{tag()}@m>|{ref.id}"
        jref = await crm.upsert_journal(journal(jkey, (ada,)))
    finally:
        await client.aclose()

    rows = (await api(bottlecrm_server, "GET", "/api/contacts/", params={"cf_outlook_key": key}))["results"]
    assert [r["id"] for r in rows] == [ref.id]
    interactions = await api(bottlecrm_server, "GET", "/api/interactions/", params={"contact": ref.id})
    assert [r["id"] for r in interactions["interactions"]] == [jref.id]


async def test_a_server_that_keeps_failing_gives_a_retryable_error(bottlecrm_server: BottleCrm) -> None:
    faults = [httpx.Response(503) for _ in range(10)]
    client = httpx.AsyncClient(transport=FlakyTransport(faults, {}))
    crm = BottleCrmConnector(bottlecrm_server.base_url, bottlecrm_server.token, client=client, max_attempts=3)
    try:
        with pytest.raises(CrmRetryableError) as raised:
            await crm.find_people(["a@example.org"])
    finally:
        await client.aclose()
    assert raised.value.status == 503


async def test_a_long_retry_after_is_handed_back_not_slept(bottlecrm_server: BottleCrm) -> None:
    faults = [httpx.Response(429, headers={"Retry-After": "3600"})]
    client = httpx.AsyncClient(transport=FlakyTransport(faults, {}))
    crm = BottleCrmConnector(bottlecrm_server.base_url, bottlecrm_server.token, client=client)
    try:
        with pytest.raises(CrmRetryableError) as raised:
            await crm.find_people(["a@example.org"])
    finally:
        await client.aclose()
    assert raised.value.retry_after == 3600
