"""`DataverseConnector` against the stand-in, for what is particular to Dataverse: service protection
(its limits and its 5-minute window), etag conflicts, ownership, deactivation instead of delete (a
contact's deletion would cascade to its activities), Dataverse's column limits, expired change
tracking."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from emulators.dataverse.launcher import DataverseStandIn
from shared.crm.dataverse import DataverseConnector
from shared.errors import CrmRejectedError, CrmRetryableError
from shared.model import (
    Address,
    Appointment,
    ContactFields,
    CrmContact,
    CrmContactRemoved,
    CrmRef,
    Direction,
    Journal,
    PersonRef,
)

pytestmark = pytest.mark.integration
ANN = "ann@contoso.com"
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


@pytest.fixture
async def dv(dataverse_server: DataverseStandIn) -> DataverseStandIn:
    dataverse_server.reset()
    dataverse_server.add_user(ANN)
    return dataverse_server


@pytest.fixture
async def crm(dv: DataverseStandIn) -> AsyncIterator[DataverseConnector]:
    async with httpx.AsyncClient(verify=dv.ssl_context(), timeout=30.0) as client:
        connector = DataverseConnector(
            dv.url, "t", client=client, max_attempts=4, backoff_base=0.05, page_size=10
        )
        yield connector
        await connector.aclose()


def journal(key: str, people: tuple[PersonRef, ...] = (), subject: str = "Quote") -> Journal:
    return Journal(
        key=key,
        subject=subject,
        body="Hello",
        direction=Direction.INBOUND,
        sender=Address(people[0].email if people else "x@elsewhere.test"),
        to=(Address(ANN),),
        cc=(),
        sent_at=T0,
        received_at=T0,
        conversation_id="c",
        attachments=(),
        owner=ANN,
        seen_by=(ANN,),
        people=people,
    )


async def test_over_dataverses_request_limit_the_connector_waits_as_told_and_gets_through(
    dv: DataverseStandIn, crm: DataverseConnector
) -> None:
    dv.settings(limits={"requests": 4, "windowSeconds": 2})
    addresses = [f"p{n}@example.test" for n in range(8)]

    found = [await crm.find_people([a]) for a in addresses]

    assert [list(f) for f in found] == [[a] for a in addresses]
    assert dv.stats()["throttled"]["requests"] >= 1  # answered 429 on the way, and waited as told


async def test_a_wait_for_the_five_minute_window_is_handed_back_not_slept(
    dv: DataverseStandIn, crm: DataverseConnector
) -> None:
    dv.fault(429, retry_after="300", path_contains="$batch", error_code="0x80072322")

    with pytest.raises(CrmRetryableError) as caught:
        await asyncio.wait_for(crm.upsert_journal(journal("<w@x.test>")), timeout=20)

    assert (caught.value.status, caught.value.retry_after) == (429, 300)


async def test_an_etag_conflict_is_answered_by_reading_again(
    dv: DataverseStandIn, crm: DataverseConnector
) -> None:
    bob = dv.add_contact("bob@fabrikam.example", name="Bob B", owner=ANN)
    person = PersonRef(bob, "contact", "Bob B", "bob@fabrikam.example")
    await crm.upsert_journal(journal("<c@x.test>", (person,)))
    dv.fault(
        412,
        scope="operation",
        method="PATCH",
        path_contains="emails",
        error_code="0x80060882",
        message="The version of the existing record doesn't match the RowVersion property provided.",
    )

    await crm.upsert_journal(journal("<c@x.test>", (person,), subject="Quote (2)"))

    rows = dv.rows("emails", select="subject,statecode,statuscode")
    assert [(r["subject"], r["statecode"], r["statuscode"]) for r in rows] == [("Quote (2)", 1, 4)]
    assert dv.stats()["injected"] == 1


async def test_a_contact_of_another_owner_is_never_taken_over_and_a_delete_keeps_its_activities(
    dv: DataverseStandIn, crm: DataverseConnector
) -> None:
    fields = ContactFields(given_name="Cy", surname="Lee", display_name="Cy Lee", emails=("cy@example.test",))
    ref = await crm.upsert_contact(CrmContact(None, ANN, fields, key="link-1"))
    dv.reassign("contacts", ref.id, "zed@contoso.com")  # a Dynamics user gives it to a colleague

    with pytest.raises(CrmRejectedError, match="another user"):
        await crm.upsert_contact(CrmContact(None, ANN, fields, key="link-1"))
    with pytest.raises(CrmRejectedError, match="another user"):
        await crm.upsert_contact(CrmContact(ref, ANN, fields))
    assert dv.row("contacts", ref.id, select="_ownerid_value")["_ownerid_value"] == dv.add_user(
        "zed@contoso.com"
    )

    dv.reassign("contacts", ref.id, ANN)
    person = PersonRef(ref.id, "contact", "Cy Lee", "cy@example.test")
    await crm.upsert_journal(journal("<regarding-cy@x.test>", (person,)))
    await crm.delete_contact(ref, ANN)
    await crm.delete_contact(ref, ANN)

    assert await crm.get_contact(ref) is None
    assert dv.row("contacts", ref.id, select="statecode")["statecode"] == 1  # deactivated, not deleted
    assert [r["messageid"] for r in dv.rows("emails", select="messageid")] == ["<regarding-cy@x.test>"]
    assert (await crm.find_people(["cy@example.test"]))["cy@example.test"] == []


async def test_an_expired_change_tracking_token_starts_over_with_a_snapshot(
    dv: DataverseStandIn, crm: DataverseConnector
) -> None:
    kept = dv.add_contact("kept@example.test", name="Kept K", owner=ANN)
    first = await crm.contact_changes(ANN, None)
    gone = dv.add_contact("gone@example.test", name="Gone G", owner=ANN)
    dv.delete("contacts", gone)
    dv.expire_tokens()

    page = await crm.contact_changes(ANN, first.cursor)

    assert page.snapshot and [c.ref.id for c in page.changes if isinstance(c, CrmContact) and c.ref] == [kept]
    assert not [c for c in page.changes if isinstance(c, CrmContactRemoved)]
    assert (await crm.contact_changes(ANN, page.cursor)).changes == ()


async def test_an_owner_who_is_not_a_dynamics_user_is_refused_with_the_reason(
    crm: DataverseConnector,
) -> None:
    with pytest.raises(CrmRejectedError, match="not a user of this Dynamics 365 environment"):
        await crm.upsert_journal(Journal(**{**journal("<o@x.test>").__dict__, "owner": "nobody@contoso.com"}))


async def test_an_appointment_keeps_a_long_subject_and_location_beyond_dataverses_200_characters(
    dv: DataverseStandIn, crm: DataverseConnector
) -> None:
    subject, location = "S" * 250, "L" * 230
    written = Appointment(
        key="uid-long|2025-03-03T09:00:00+00:00",
        subject=subject,
        start=T0,
        end=T0 + timedelta(hours=1),
        is_all_day=False,
        start_date=None,
        end_date=None,
        location=location,
        organizer=Address(ANN, "Ann"),
        attendees=(),
        online_meeting_url="",
        body="",
        owner=ANN,
        seen_by=(ANN,),
        people=(),
    )

    await crm.upsert_appointment(written)

    row = dv.rows("appointments", select="subject,location,globalobjectid,crmsync_occurrencestart")[0]
    assert (len(row["subject"]), len(row["location"])) == (200, 200) and row["subject"].endswith("…")
    assert (row["globalobjectid"], row["crmsync_occurrencestart"]) == (
        "uid-long",
        "2025-03-03T09:00:00+00:00",
    )
    assert await crm.get_appointment(written.key) == written
    assert await crm.upsert_appointment(written) == CrmRef(row["activityid"])


async def test_where_dataverse_refuses_a_contact_as_sender_the_sender_is_kept_as_its_address(
    dv: DataverseStandIn, crm: DataverseConnector
) -> None:
    bob = dv.add_contact("bob@fabrikam.example", name="Bob B", owner=ANN)
    person = PersonRef(bob, "contact", "Bob B", "bob@fabrikam.example")
    dv.fault(
        400,
        scope="operation",
        method="POST",
        path_contains="emails",
        error_code="0x80043506",
        message="The participation type is not allowed for this activity party.",
    )

    await crm.upsert_journal(journal("<from-bob@x.test>", (person,)))

    row = dv.rows(
        "emails", expand="email_activity_parties($select=participationtypemask,addressused,_partyid_value)"
    )[0]
    senders = [p for p in row["email_activity_parties"] if p["participationtypemask"] == 1]
    assert [(p["addressused"], p["_partyid_value"]) for p in senders] == [("bob@fabrikam.example", None)]
    assert row["_regardingobjectid_value"] == bob  # still linked, as regarding


async def test_a_tracked_emails_unresolved_sender_is_resolved_to_the_linked_contact_not_added_twice(
    dv: DataverseStandIn, crm: DataverseConnector
) -> None:
    bob = dv.add_contact("bob@fabrikam.example", name="Bob B", owner=ANN)
    unresolved = [
        {"participationtypemask": 1, "addressused": "Bob@Fabrikam.example"},
        {"participationtypemask": 2, "addressused": ANN},
    ]
    tracked = dv.add_email("<t@x.test>", owner=ANN, email_activity_parties=unresolved)

    await crm.upsert_journal(
        journal("<t@x.test>", (PersonRef(bob, "contact", "Bob B", "bob@fabrikam.example"),))
    )

    row = dv.row(
        "emails",
        tracked,
        expand="email_activity_parties($select=participationtypemask,addressused,_partyid_value)",
    )
    assert row is not None and (row["subject"], row["_regardingobjectid_value"]) == (
        "Tracked by Dynamics",
        bob,
    )
    parties = [
        (p["participationtypemask"], p["addressused"], p["_partyid_value"])
        for p in row["email_activity_parties"]
    ]
    assert parties == [(1, "Bob@Fabrikam.example", bob), (2, ANN, None)]
