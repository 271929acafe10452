"""Plain domain records shared by the engine, the adapters and the CRM connectors.

No SDK type ever appears here: `shared/graph` turns Graph pages into these records and
`shared/crm` turns them into a CRM's API calls. All records are frozen dataclasses.
Times are timezone-aware UTC `datetime`s unless a field says it is a `date`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Literal

# ---------------------------------------------------------------------------------------------
# People and addresses


@dataclass(frozen=True)
class Address:
    """An e-mail participant as Graph gives it (`emailAddress: {name, address}`)."""

    address: str
    name: str = ""

    @property
    def normalized(self) -> str:
        return self.address.strip().lower()

    @property
    def domain(self) -> str:
        return self.normalized.rpartition("@")[2]


@dataclass(frozen=True)
class PersonRef:
    """A CRM person (contact, lead, candidate ...) matched by e-mail address. Never a company."""

    id: str
    kind: str = "contact"
    name: str = ""
    email: str = ""


@dataclass(frozen=True)
class CrmRef:
    """What a CRM record became: its id in the CRM (and, where the CRM has one, a version)."""

    id: str
    version: str = ""


# ---------------------------------------------------------------------------------------------
# Mail


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


# ---------------------------------------------------------------------------------------------
# Contacts


@dataclass(frozen=True)
class PostalAddress:
    street: str = ""
    city: str = ""
    state: str = ""
    postal_code: str = ""
    country: str = ""


@dataclass(frozen=True)
class ContactFields:
    """The mapped fields of a contact, the same on both sides (docs/streams/contacts.md §2)."""

    given_name: str = ""
    surname: str = ""
    display_name: str = ""
    emails: tuple[str, ...] = ()
    business_phones: tuple[str, ...] = ()
    mobile_phone: str = ""
    company: str = ""
    job_title: str = ""
    department: str = ""
    business_address: PostalAddress = field(default_factory=PostalAddress)
    notes: str = ""

    def fingerprint(self) -> str:
        return fingerprint(asdict(self))


@dataclass(frozen=True)
class OutlookContact:
    id: str
    change_key: str
    fields: ContactFields


@dataclass(frozen=True)
class OutlookContactRemoved:
    id: str


@dataclass(frozen=True)
class CrmContact:
    """A contact as the CRM holds it. `key` is our idempotency key for contacts we created."""

    ref: CrmRef | None
    owner: str
    fields: ContactFields
    key: str = ""
    updated_at: datetime | None = None


@dataclass(frozen=True)
class CrmContactRemoved:
    """The contact was deleted in the CRM, or is no longer assigned to this owner."""

    ref: CrmRef
    owner: str


@dataclass(frozen=True)
class ContactFeedPage:
    """One read of the CRM's contact change feed for an owner."""

    changes: tuple[CrmContact | CrmContactRemoved, ...]
    cursor: str
    # True when the connector cannot report changes and returned every current contact instead.
    snapshot: bool = False


# ---------------------------------------------------------------------------------------------
# Calendar


@dataclass(frozen=True)
class Attendee:
    address: Address
    type: Literal["required", "optional", "resource"] = "required"
    response: str = "none"


@dataclass(frozen=True)
class Appointment:
    """The CRM record one meeting (or one occurrence of a series) becomes."""

    key: str  # iCalUId, or iCalUId + "|" + original start (UTC ISO) for an occurrence
    subject: str
    start: datetime  # UTC; for all-day events midnight of start_date, meaningless as an instant
    end: datetime
    is_all_day: bool
    start_date: date | None  # all-day events: the dates, not shifted by time zones
    end_date: date | None
    location: str
    organizer: Address | None
    attendees: tuple[Attendee, ...]
    online_meeting_url: str
    body: str
    owner: str
    seen_by: tuple[str, ...]
    people: tuple[PersonRef, ...]
    series_key: str = ""  # iCalUId of the series master for occurrences and exceptions
    cancelled: bool = False


@dataclass(frozen=True)
class CrmAppointmentChange:
    """An appointment created or changed in the CRM for an owner (the CRM → Outlook push)."""

    ref: CrmRef
    owner: str
    key: str  # empty when the CRM created it (not from Outlook)
    subject: str
    start: datetime
    end: datetime
    is_all_day: bool
    location: str
    body: str
    cancelled: bool = False


# ---------------------------------------------------------------------------------------------
# Jobs and users


class Stream(StrEnum):
    """The kinds of stream a job runs; a mail stream is `mail:<folderId>`."""

    MAIL = "mail"
    CONTACTS = "contacts"
    CALENDAR = "calendar"


@dataclass(frozen=True)
class Job:
    """One unit of work on the `sync-jobs` queue: one user, one stream."""

    user: str  # user principal name (RowKey of SyncUsers)
    stream: str  # "mail:<folder>", "contacts" or "calendar"
    reason: str = "sweep"  # sweep | notification | lifecycle | resync | manual
    fresh_round: bool = False  # drop the stored link and start a new initial round

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        data = json.loads(text)
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("user"), str)
            or not isinstance(data.get("stream"), str)
        ):
            raise ValueError("a job needs string fields 'user' and 'stream'")
        return cls(
            user=data["user"],
            stream=data["stream"],
            reason=str(data.get("reason", "sweep")),
            fresh_round=bool(data.get("fresh_round", False)),
        )


def fingerprint(value: Any) -> str:
    """A stable short hash of a JSON-able value (content fingerprints for echo and change detection)."""

    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
