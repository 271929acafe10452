"""Contacts on both sides: the mapped fields, an Outlook contact, a CRM contact, and their changes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from shared.model.fingerprint import fingerprint
from shared.model.people import CrmRef


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


@dataclass(frozen=True)
class OutlookItem:
    """A contact as read from the owned folder, with what the plan needs beyond its fields."""

    contact: OutlookContact
    modified: datetime | None = None
    crm_tag: str = ""  # the CRM id we stamped on it when we created it ("" for the user's own)


OutlookChange = OutlookItem | OutlookContactRemoved


def change_id(change: OutlookChange) -> str:
    return change.contact.id if isinstance(change, OutlookItem) else change.id
