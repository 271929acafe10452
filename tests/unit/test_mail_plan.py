from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from shared.model import Address, Attachment, Direction, MailMessage, MessageRemoved, PersonRef
from shared.sync import mail_plan
from shared.users import parse_user

ANN = parse_user("ann@contoso.com", {"Enabled": True})
WHEN = datetime(2026, 11, 20, 9, 15, tzinfo=UTC)


def message(**changes: object) -> MailMessage:
    base = MailMessage(
        id="AAMk-1",
        internet_message_id="<m1@fabrikam.example>",
        subject="Proposal",
        body_html="<p>Hi Ann</p>",
        body_type="html",
        sender=Address("bob@fabrikam.example", "Bob"),
        to=(Address("ann@contoso.com", "Ann"),),
        cc=(Address("carol@contoso.com"), Address("BOB@fabrikam.example")),
        sent_at=WHEN,
        received_at=WHEN,
        conversation_id="conv-1",
        categories=(),
        is_draft=False,
        sensitivity="normal",
        attachments=(Attachment("quote.pdf", 1234),),
        has_attachments=True,
        folder_id="inbox-id",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_others_excludes_owner_and_repeats() -> None:
    assert [a.normalized for a in mail_plan.others(message(), "ann@contoso.com")] == [
        "bob@fabrikam.example",
        "carol@contoso.com",
    ]


def test_drafts_and_private_items_are_not_captured() -> None:
    assert not mail_plan.prefilter(message(is_draft=True), ANN, ["contoso.com"]).capture
    for level in ("private", "confidential"):
        verdict = mail_plan.prefilter(message(sensitivity=level), ANN, ["contoso.com"])
        assert not verdict.capture and level in verdict.reason
    assert mail_plan.prefilter(message(sensitivity="personal"), ANN, ["contoso.com"]).capture


def test_internal_only_mail_is_skipped_unless_included() -> None:
    internal = message(sender=Address("carol@contoso.com"), cc=())
    assert "internal" in mail_plan.prefilter(internal, ANN, ["contoso.com"]).reason
    including = parse_user("ann@contoso.com", {"Enabled": True, "IncludeInternal": True})
    assert mail_plan.prefilter(internal, including, ["contoso.com"]).capture


def test_excluded_domain_and_address() -> None:
    by_domain = parse_user("ann@contoso.com", {"Enabled": True, "ExcludedDomains": "fabrikam.example"})
    assert "ExcludedDomains" in mail_plan.prefilter(message(), by_domain, []).reason
    by_address = parse_user("ann@contoso.com", {"Enabled": True, "ExcludedAddresses": "carol@contoso.com"})
    assert "ExcludedAddresses" in mail_plan.prefilter(message(), by_address, []).reason


def test_category_policy_is_case_insensitive() -> None:
    policy = parse_user("ann@contoso.com", {"Enabled": True, "MailPolicy": "category"})
    assert not mail_plan.prefilter(message(), policy, []).capture
    assert mail_plan.prefilter(message(categories=("crm",)), policy, []).capture


def test_known_people_policy_needs_a_crm_person() -> None:
    policy = parse_user("ann@contoso.com", {"Enabled": True, "MailPolicy": "known-people"})
    assert not mail_plan.select(message(), policy, []).capture
    bob = PersonRef("p-bob", name="Bob", email="bob@fabrikam.example")
    assert mail_plan.select(message(), policy, [bob]).capture


def test_people_on_links_each_person_once_and_never_the_owner() -> None:
    bob = PersonRef("p-bob", email="bob@fabrikam.example")
    ann = PersonRef("p-ann", email="ann@contoso.com")
    matches = {"bob@fabrikam.example": [bob], "ann@contoso.com": [ann]}
    assert mail_plan.people_on(message(), ANN, matches) == (bob,)


def test_journal_content() -> None:
    journal = mail_plan.build_journal(
        message(subject="  "),
        ANN,
        [PersonRef("p-bob")],
        body_limit=1000,
        subject_limit=None,
        seen_by=["ann@contoso.com"],
    )
    assert journal.key == "<m1@fabrikam.example>"
    assert journal.subject == "(no subject)"
    assert journal.body == "Hi Ann"
    assert journal.direction is Direction.INBOUND
    assert journal.attachments == (Attachment("quote.pdf", 1234),)
    sent = mail_plan.build_journal(
        message(sender=Address("Ann@Contoso.com")), ANN, [], body_limit=1000, subject_limit=None, seen_by=[]
    )
    assert sent.direction is Direction.OUTBOUND


def test_message_without_sender_or_message_id() -> None:
    bare = message(sender=None, internet_message_id="")
    journal = mail_plan.build_journal(bare, ANN, [], body_limit=1000, subject_limit=None, seen_by=[])
    assert journal.key == "graph:ann@contoso.com:AAMk-1"
    assert journal.sender is None and journal.direction is Direction.INBOUND


def test_merge_adds_the_second_mailbox_and_its_people_and_keeps_the_first_owner() -> None:
    bob = PersonRef("p-bob", name="Bob", email="bob@fabrikam.example")
    carol = PersonRef("p-carol", name="Carol", email="carol@contoso.com")
    first = mail_plan.build_journal(message(), ANN, [bob], body_limit=1000, subject_limit=None, seen_by=[])
    written, needed = mail_plan.merge(None, first, "ann@contoso.com")
    assert needed and written.seen_by == ("ann@contoso.com",)
    record = mail_plan.key_record_after(None, written, "crm-1")

    dan = parse_user("dan@contoso.com", {"Enabled": True, "CrmOwner": "u-dan"})
    second = mail_plan.build_journal(
        message(), dan, [bob, carol], body_limit=1000, subject_limit=None, seen_by=[]
    )
    merged, needed = mail_plan.merge(record, second, "dan@contoso.com")
    assert needed
    assert merged.seen_by == ("ann@contoso.com", "dan@contoso.com")
    assert [p.id for p in merged.people] == ["p-bob", "p-carol"]
    assert merged.people[0].name == "Bob"
    assert merged.owner == "ann@contoso.com" and merged.direction is Direction.INBOUND

    again, needed = mail_plan.merge(
        mail_plan.key_record_after(record, merged, "crm-1"), second, "dan@contoso.com"
    )
    assert not needed and again.seen_by == merged.seen_by


def test_merge_drops_a_linked_person_the_crm_no_longer_matches() -> None:
    bob = PersonRef("p-bob", name="Bob", email="bob@fabrikam.example")
    elsewhere = PersonRef("p-eve", name="Eve", email="eve@elsewhere.example")  # an address not on this mail
    first = mail_plan.build_journal(message(), ANN, [bob], body_limit=1000, subject_limit=None, seen_by=[])
    record = mail_plan.key_record_after(None, replace(first, people=(bob, elsewhere)), "crm-1")

    dan = parse_user("dan@contoso.com", {"Enabled": True})
    # Bob was deleted in the CRM: Dan's lookup of bob@fabrikam.example found nobody
    second = mail_plan.build_journal(message(), dan, [], body_limit=1000, subject_limit=None, seen_by=[])
    merged, needed = mail_plan.merge(record, second, "dan@contoso.com")
    assert needed
    assert [p.id for p in merged.people] == ["p-eve"]  # kept: Dan did not look Eve's address up

    again, needed = mail_plan.merge(
        mail_plan.key_record_after(record, merged, "crm-1"), second, "dan@contoso.com"
    )
    assert not needed and [p.id for p in again.people] == ["p-eve"]


def test_latest_by_id_lets_a_removal_beat_an_earlier_add() -> None:
    first, removed = message(), MessageRemoved("AAMk-1")
    other = message(id="AAMk-2")
    assert mail_plan.latest_by_id([first, other, removed]) == [other, removed]
    assert mail_plan.latest_by_id([removed, first]) == [first]
