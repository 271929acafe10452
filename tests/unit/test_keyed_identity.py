"""A key chosen by outsiders (Message-ID, iCalUId) never lets a later copy rewrite what the first
capture wrote: copies of one item merge, another item under the same key gets a key of its own."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from shared.crm.memory import InMemoryCrm
from shared.model import Address, Attachment, Journal, KeyRecord, MailMessage, OutlookEvent, PersonRef
from shared.state.memory import InMemoryStateStore
from shared.sync import calendar_plan, mail_plan
from shared.sync.keyed_write import Written, collision_key, write_keyed, write_keyed_many
from shared.users import parse_user

ANN = parse_user("ann@contoso.com", {"Enabled": True, "CrmOwner": "u-ann"})
BOB = parse_user("bob@contoso.com", {"Enabled": True, "CrmOwner": "u-bob"})
SENT = datetime(2026, 11, 20, 9, 15, 7, tzinfo=UTC)
KEY = "<deal-7@fabrikam.example>"
# the first two people an InMemoryCrm makes (World adds them)
ZOE = PersonRef("p-000001", name="Zoe", email="zoe@fabrikam.example")
YAN = PersonRef("p-000002", name="Yan", email="yan@northwind.example")


def message(**changes: object) -> MailMessage:
    base = MailMessage(
        id="AAMk-1", internet_message_id=KEY, subject="Our offer", body_html="<p>Price is 100</p>",
        body_type="html", sender=Address("zoe@fabrikam.example", "Zoe"),
        to=(Address("ann@contoso.com"), Address("bob@contoso.com")), cc=(), sent_at=SENT,
        received_at=SENT + timedelta(seconds=3), conversation_id="conv-1", categories=(), is_draft=False,
        sensitivity="normal", attachments=(Attachment("offer.pdf", 10),), has_attachments=True,
        folder_id="inbox",
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def journal(user: object, people: tuple[PersonRef, ...] = (ZOE,), **changes: object) -> Journal:
    config = ANN if user == "ann" else BOB
    return mail_plan.build_journal(
        message(**changes), config, people, body_limit=1000, subject_limit=None, seen_by=()
    )


class World:
    def __init__(self) -> None:
        self.state = InMemoryStateStore()
        self.crm = InMemoryCrm()
        for person in (ZOE, YAN):
            assert self.crm.add_person(person.email, name=person.name) == person.id

    async def write(self, record: Journal, mailbox: str) -> Written:
        return await write_keyed(
            self.state, record, mailbox, mail_plan.JOURNALS, upsert=self.crm.upsert_journal,
            load=self.crm.get_journal,
        )  # fmt: skip

    async def write_many(self, records: list[Journal], mailbox: str) -> list[Written]:
        done = await write_keyed_many(
            self.state, records, mailbox, mail_plan.JOURNALS, upsert_many=self.crm.upsert_journals,
            upsert=self.crm.upsert_journal, load=self.crm.get_journal,
        )  # fmt: skip
        assert all(isinstance(d, Written) for d in done)
        return [d for d in done if isinstance(d, Written)]


async def test_a_transport_banner_a_bcc_line_and_another_unique_body_still_merge_into_one_journal() -> None:
    world = World()
    first = await world.write(journal("ann"), "ann@contoso.com")
    assert first == Written(True, KEY)
    copies = [
        journal("bob", body_html="<p>EXTERNAL SENDER: be careful</p><p>Price is 100</p>"),  # a banner
        journal("bob", to=(Address("bob@contoso.com"),)),  # Bcc: the sender's copy lists others
        journal("bob", (ZOE, YAN), body_html="<p>Price is 100</p><p>-- quoted earlier mail</p>"),
    ]
    for copy in copies:
        await world.write(copy, "bob@contoso.com")
    stored = world.crm.journals[KEY]
    assert list(world.crm.journals) == [KEY]
    assert stored.body == "Price is 100" and stored.to == journal("ann").to  # the first capture's content
    assert stored.seen_by == ("ann@contoso.com", "bob@contoso.com")
    assert stored.people == (ZOE, YAN)  # people are added
    assert stored.owner == "u-ann"


async def test_a_later_copy_never_rewrites_the_first_capture_s_subject_or_body() -> None:
    world = World()
    await world.write(journal("ann"), "ann@contoso.com")
    # the same sender and sent time, other content: still one message as far as anyone can tell
    await world.write(
        journal("bob", subject="Price is now 1", body_html="<p>pay here</p>"), "bob@contoso.com"
    )
    stored = world.crm.journals[KEY]
    assert (stored.subject, stored.body) == ("Our offer", "Price is 100")
    assert stored.seen_by == ("ann@contoso.com", "bob@contoso.com")


async def test_a_message_that_reuses_a_message_id_from_another_sender_is_a_journal_of_its_own() -> None:
    world = World()
    await world.write(journal("ann"), "ann@contoso.com")
    forged = journal(
        "bob", (), sender=Address("mallory@evil.example"), subject="Invoice: pay now", body_html="<p>IBAN</p>"
    )
    outcome = await world.write(forged, "bob@contoso.com")
    own = collision_key(KEY, mail_plan.identity(forged))
    assert outcome == Written(True, own, collided=True)
    original, other = world.crm.journals[KEY], world.crm.journals[own]
    assert (original.subject, original.sender, original.seen_by) == (
        "Our offer",
        Address("zoe@fabrikam.example", "Zoe"),
        ("ann@contoso.com",),
    )
    assert (other.subject, other.seen_by, other.owner) == ("Invoice: pay now", ("bob@contoso.com",), "u-bob")
    # seen again (a move, a fresh round): the same journal, nothing new, still reported as the other one
    assert await world.write(forged, "bob@contoso.com") == Written(False, own, collided=True)
    assert len(world.crm.journals) == 2


async def test_the_same_sender_at_another_sent_time_is_another_message_in_a_page_too() -> None:
    world = World()
    await world.write_many([journal("ann")], "ann@contoso.com")
    later = journal("bob", sent_at=SENT + timedelta(days=2), subject="Re-sent")
    same = journal("bob", received_at=SENT + timedelta(minutes=5))
    outcomes = await world.write_many([later, same], "bob@contoso.com")
    own = collision_key(KEY, mail_plan.identity(later))
    assert outcomes == [Written(True, own, collided=True), Written(True, KEY)]
    assert world.crm.journals[own].subject == "Re-sent"
    assert world.crm.journals[KEY].subject == "Our offer"
    assert world.crm.journals[KEY].seen_by == ("ann@contoso.com", "bob@contoso.com")


async def test_a_sent_time_given_with_fractions_of_a_second_is_the_same_message() -> None:
    assert mail_plan.identity(journal("ann")) == mail_plan.identity(
        journal("bob", sent_at=SENT + timedelta(microseconds=250))
    )


async def test_a_row_written_before_identities_were_recorded_is_checked_against_what_the_crm_holds() -> None:
    world = World()
    await world.write(journal("ann"), "ann@contoso.com")
    row = await world.state.get_key(KEY)
    assert row is not None and row.identity == mail_plan.identity(journal("ann"))
    await world.state.put_key(replace(row, identity=""))
    forged = journal("bob", (), sender=Address("mallory@evil.example"), subject="Invoice")
    outcome = await world.write(forged, "bob@contoso.com")
    assert outcome.collided and outcome.key != KEY
    assert world.crm.journals[KEY].subject == "Our offer"
    # and a true copy of the old row's message merges, recording the identity from then on
    assert await world.write(journal("bob"), "bob@contoso.com") == Written(True, KEY)
    row = await world.state.get_key(KEY)
    assert row is not None and row.identity == mail_plan.identity(journal("ann"))


def event(organizer: str, subject: str = "Kick-off") -> OutlookEvent:
    start = datetime(2026, 12, 1, 9, tzinfo=UTC)
    return OutlookEvent(
        id=f"ev-{organizer}", type="singleInstance", start=start, end=start + timedelta(hours=1),
        ical_uid="040000008200E00074C5B7101A82E008-UID", subject=subject, organizer=Address(organizer),
    )  # fmt: skip


async def test_an_invitation_that_reuses_another_organizer_s_ical_uid_is_an_appointment_of_its_own() -> None:
    state, crm = InMemoryStateStore(), InMemoryCrm()
    key = "040000008200E00074C5B7101A82E008-UID"

    async def capture(ev: OutlookEvent, mailbox: str) -> Written:
        row = await state.get_key(key)
        own = calendar_plan.own_key(row, key, calendar_plan.identity(ev.organizer))
        appointment = calendar_plan.build_appointment(
            ev, own, "", owner=mailbox, people=(), body_limit=100, seen_by=(mailbox,)
        )
        return await write_keyed(
            state, appointment, mailbox, calendar_plan.APPOINTMENTS, upsert=crm.upsert_appointment
        )

    assert await capture(event("zoe@fabrikam.example"), "ann@contoso.com") == Written(True, key)
    forged = await capture(event("mallory@evil.example", "Moved: click here"), "bob@contoso.com")
    assert forged.key != key and forged.key.startswith(key + "#")
    stored = await crm.get_appointment(key)
    assert stored is not None and stored.subject == "Kick-off" and stored.seen_by == ("ann@contoso.com",)
    # the real organizer moving the meeting still reaches every copy's appointment
    moved = await capture(event("zoe@fabrikam.example", "Kick-off (moved)"), "bob@contoso.com")
    assert moved == Written(True, key)
    stored = await crm.get_appointment(key)
    assert stored is not None and stored.subject == "Kick-off (moved)"


def test_a_row_from_before_identities_names_its_organizer() -> None:
    row = KeyRecord(key="K", organizer="zoe@fabrikam.example")
    assert calendar_plan.own_key(row, "K", calendar_plan.identity(Address("Zoe@Fabrikam.example"))) == "K"
    assert calendar_plan.own_key(row, "K", calendar_plan.identity(Address("eve@x.example"))).startswith("K#")
