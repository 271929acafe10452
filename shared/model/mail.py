"""Mail as the engine sees it: messages read from a mailbox, and the journal each becomes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from shared.model.people import Address, PersonRef


@dataclass(frozen=True)
class Attachment:
    name: str
    size: int


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


@dataclass(frozen=True)
class MailMessage:
    """One Outlook message as read from a mailbox (what the engine needs, nothing more)."""

    id: str  # immutable Graph id
    internet_message_id: str
    subject: str
    body_html: str  # uniqueBody as HTML (the part that is not quoted), or body when absent
    body_type: Literal["html", "text"]
    sender: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    sent_at: datetime | None
    received_at: datetime | None
    conversation_id: str
    categories: tuple[str, ...]
    is_draft: bool
    sensitivity: Literal["normal", "personal", "private", "confidential"]
    attachments: tuple[Attachment, ...]
    has_attachments: bool
    folder_id: str
    change_key: str = ""


@dataclass(frozen=True)
class MessageRemoved:
    """A delta `@removed` entry: the message left this folder (moved, deleted, or off-filter)."""

    id: str


MessageChange = MailMessage | MessageRemoved


@dataclass(frozen=True)
class Journal:
    """The CRM record one e-mail becomes. Keyed by `key` (the internetMessageId)."""

    key: str
    subject: str
    body: str  # plain text, only the new part of a reply, capped with a visible marker
    direction: Direction
    sender: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    sent_at: datetime | None
    received_at: datetime | None
    conversation_id: str
    attachments: tuple[Attachment, ...]
    owner: str  # CrmOwner of the mailbox that first captured it
    seen_by: tuple[str, ...]  # mailboxes (UPNs) that hold this message
    people: tuple[PersonRef, ...]  # CRM people linked (every participant but the owner)
