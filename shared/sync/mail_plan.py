"""Pure decisions for mail: which messages become journals, and what a journal holds.

No I/O here. The stream gathers a page's messages and asks the CRM who the participants are
(`addresses` says whom to ask about); `plan()` returns what to do with each message: `Capture` it as
journal(s), or `Skip` it with a reason an admin can read (`crmsync explain`). The keyed merge of a
journal with what other mailboxes wrote (`JOURNALS`) is applied by `shared/sync/keyed_write.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC

from shared.model import (
    Address,
    Direction,
    Journal,
    KeyRecord,
    MailMessage,
    MessageChange,
    PersonRef,
    UserConfig,
    fingerprint,
)
from shared.sync.body import body_text, cap
from shared.sync.keyed_write import KeyedKind, identity_of, merged_people


@dataclass(frozen=True)
class Verdict:
    capture: bool
    reason: str


def others(message: MailMessage, owner_address: str) -> list[Address]:
    """Every participant except the mailbox owner, each address once, in header order."""
    seen: set[str] = {owner_address.lower()}
    found: list[Address] = []
    for address in ([message.sender] if message.sender else []) + list(message.to) + list(message.cc):
        if address.normalized and address.normalized not in seen:
            seen.add(address.normalized)
            found.append(address)
    return found


def prefilter(message: MailMessage, config: UserConfig, org_domains: Iterable[str]) -> Verdict:
    """Everything decidable without asking the CRM who the participants are."""
    if message.is_draft:
        return Verdict(False, "draft: drafts are never journaled")
    if message.sensitivity in ("private", "confidential"):
        return Verdict(False, f"marked {message.sensitivity}: never journaled")
    participants = others(message, config.upn)
    for address in participants:
        if address.normalized in config.excluded_addresses:
            return Verdict(False, f"participant {address.normalized} is in ExcludedAddresses")
        if address.domain in config.excluded_domains:
            return Verdict(False, f"participant domain {address.domain} is in ExcludedDomains")
    if not participants:
        return Verdict(False, "no participant other than the mailbox owner")
    internal = {d.lower() for d in org_domains} | {config.upn.rpartition("@")[2].lower()}
    if not config.include_internal and all(a.domain in internal for a in participants):
        return Verdict(
            False, "internal: every participant is inside the organisation (IncludeInternal is off)"
        )
    if config.mail_policy == "category":
        wanted = config.mail_category.lower()
        if wanted not in {c.lower() for c in message.categories}:
            return Verdict(
                False, f"policy category: the message does not carry the category {config.mail_category!r}"
            )
    return Verdict(True, "")


def people_on(
    message: MailMessage, config: UserConfig, matches: Mapping[str, Sequence[PersonRef]]
) -> tuple[PersonRef, ...]:
    """The CRM people among the participants other than the owner, each once, in header order."""
    found: dict[str, PersonRef] = {}
    for address in others(message, config.upn):
        for person in matches.get(address.normalized, ()):
            found.setdefault(person.id, person)
    return tuple(found.values())


def select(message: MailMessage, config: UserConfig, people: Sequence[PersonRef]) -> Verdict:
    """The policy decision once the prefilter passed and the people are known."""
    if config.mail_policy == "known-people" and not people:
        return Verdict(False, "policy known-people: no other participant is a CRM person")
    if config.mail_policy == "category":
        return Verdict(True, f"policy category: carries {config.mail_category!r}")
    if config.mail_policy == "known-people":
        return Verdict(True, f"policy known-people: {len(people)} CRM person(s) on it")
    return Verdict(True, "policy all")


def journal_key(message: MailMessage, user: str) -> str:
    """The global key: internetMessageId; a message without one is keyed to its mailbox and id."""
    return message.internet_message_id.strip() or f"graph:{user.lower()}:{message.id}"


def build_journal(
    message: MailMessage,
    config: UserConfig,
    people: Sequence[PersonRef],
    *,
    body_limit: int,
    subject_limit: int | None,
    seen_by: Sequence[str],
) -> Journal:
    outbound = message.sender is not None and message.sender.normalized == config.upn.lower()
    subject = message.subject.strip() or "(no subject)"
    return Journal(
        key=journal_key(message, config.upn),
        subject=cap(subject, subject_limit) if subject_limit else subject,
        body=body_text(message.body_html, message.body_type, body_limit),
        direction=Direction.OUTBOUND if outbound else Direction.INBOUND,
        sender=message.sender,
        to=message.to,
        cc=message.cc,
        sent_at=message.sent_at,
        received_at=message.received_at,
        conversation_id=message.conversation_id,
        attachments=message.attachments,
        owner=config.owner,
        seen_by=tuple(seen_by),
        people=tuple(people),
    )


def content_fingerprint(journal: Journal) -> str:
    """What a journal says, without who saw it or whom it links (those merge across mailboxes)."""
    return fingerprint(
        [journal.subject, journal.body, journal.sender, journal.to, journal.cc, journal.sent_at,
         journal.received_at, journal.attachments, journal.conversation_id]
    )  # fmt: skip


def merge(record: KeyRecord | None, journal: Journal, mailbox: str) -> tuple[Journal, bool]:
    """Combine this mailbox's journal with what other mailboxes already wrote under the same key.

    The first mailbox that captured a message decides its owner and direction, and its content stands
    (`keep_content`, applied by the writer with what the CRM holds); later mailboxes only add
    themselves to `seen_by` and their matches to `people`. Returns the journal to write and whether a
    write is needed: nothing is written again when this mailbox is already recorded and every person
    is already linked.
    """
    if record is None:
        return replace(journal, seen_by=(mailbox.lower(),)), True
    looked_up = {
        a.normalized for a in ([journal.sender] if journal.sender else []) + [*journal.to, *journal.cc]
    }
    looked_up.discard(mailbox.lower())
    people = merged_people(record, journal.people, looked_up)
    merged = replace(
        journal,
        seen_by=tuple(dict.fromkeys([*record.mailboxes, mailbox.lower()])),
        people=people,
        owner=record.owner or journal.owner,
        direction=Direction(record.direction) if record.direction else journal.direction,
    )
    unchanged = mailbox.lower() in record.mailboxes and {p.id for p in record.people} == {
        p.id for p in people
    }
    return merged, not unchanged


def keep_content(merged: Journal, stored: Journal) -> Journal:
    """What the CRM holds (the first capture's content), with the mailboxes and people merged in."""
    return replace(stored, seen_by=merged.seen_by, people=merged.people)


def identity(journal: Journal) -> str:
    """Who sent the message and when: every copy of one message agrees on both (a transport rule's
    banner, a Bcc line or a different uniqueBody does not change them); a message that reuses another's
    Message-ID does not."""
    sent = journal.sent_at.astimezone(UTC).replace(microsecond=0).isoformat() if journal.sent_at else ""
    return identity_of(journal.sender.normalized if journal.sender else "", sent)


def key_record_after(record: KeyRecord | None, journal: Journal, crm_ref: str) -> KeyRecord:
    """The SyncKeys row once `journal` (already merged) was written to the CRM."""
    return KeyRecord(
        key=journal.key,
        crm_ref=crm_ref,
        mailboxes=tuple(m.lower() for m in journal.seen_by),
        people=journal.people,
        fingerprint=content_fingerprint(journal),
        identity=record.identity if record else "",
        owner=journal.owner,
        direction=journal.direction.value,
        etag=record.etag if record else "",
    )


JOURNALS: KeyedKind[Journal] = KeyedKind(
    merge=merge,
    key_record_after=key_record_after,
    identity=identity,
    rekey=lambda journal, key: replace(journal, key=key),
    keep_content=keep_content,
)


# ---------------------------------------------------------------------------------------------
# A page's plan


@dataclass(frozen=True)
class Capture:
    """Write the message's journal (one per linked person where the CRM links one person per journal)."""

    message: MailMessage
    journals: tuple[Journal, ...]
    reason: str


@dataclass(frozen=True)
class Skip:
    message: MailMessage
    reason: str


Action = Capture | Skip


@dataclass(frozen=True)
class Inputs:
    messages: Sequence[MailMessage]
    config: UserConfig
    org_domains: Sequence[str]
    matches: Mapping[str, Sequence[PersonRef]]  # CRM people by normalized address (`addresses`)
    body_limit: int
    subject_limit: int | None
    multi_person: bool = True  # the CRM links several people to one journal


def addresses(messages: Iterable[MailMessage], config: UserConfig, org_domains: Iterable[str]) -> list[str]:
    """The addresses to ask the CRM about: the participants of the messages the prefilter lets by."""
    domains = tuple(org_domains)
    wanted = {
        a.normalized for m in messages if prefilter(m, config, domains).capture for a in others(m, config.upn)
    }
    return sorted(wanted)


def plan(inputs: Inputs) -> list[Action]:
    """What to do with each message, in order."""
    config = inputs.config
    actions: list[Action] = []
    for message in inputs.messages:
        verdict = prefilter(message, config, inputs.org_domains)
        if verdict.capture:
            people = people_on(message, config, inputs.matches)
            verdict = select(message, config, people)
        if not verdict.capture:
            actions.append(Skip(message, verdict.reason))
            continue
        journal = build_journal(
            message,
            config,
            people,
            body_limit=inputs.body_limit,
            subject_limit=inputs.subject_limit,
            seen_by=(config.upn.lower(),),
        )
        units = (journal,) if inputs.multi_person else one_per_person(journal)
        actions.append(Capture(message, units, verdict.reason))
    return actions


def one_per_person(journal: Journal) -> tuple[Journal, ...]:
    """For CRMs whose journal has one home record: one journal per linked person."""
    if not journal.people:
        return (journal,)
    return tuple(replace(journal, key=f"{journal.key}|{p.id}", people=(p,)) for p in journal.people)


def latest_by_id(changes: Sequence[MessageChange]) -> list[MessageChange]:
    """Graph may repeat an item within a round; the last occurrence wins (a removal beats an earlier add)."""
    last: dict[str, MessageChange] = {}
    for change in changes:
        last.pop(change.id, None)
        last[change.id] = change
    return list(last.values())
