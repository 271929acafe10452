"""What the service keeps between runs (docs/state.md has the tables): records, typed per stream.

The state store (`shared/state`) turns these into table rows and back; a stream reads and writes its
own part of a cursor or a link (`Cursor.mail`, `Link.event` …) and never a loose mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from shared.model.contacts import ContactFields
from shared.model.people import PersonRef
from shared.model.tasks import TaskFields

# ---------------------------------------------------------------------------------------------
# Users


@dataclass(frozen=True)
class UserRow:
    """A raw SyncUsers row: every column as stored (admin config and service status), plus its ETag.
    Parsing and validation of the config columns happen in `shared/users.py`, not here."""

    upn: str
    columns: Mapping[str, Any]
    etag: str = ""


# ---------------------------------------------------------------------------------------------
# Cursors: where a stream's reading stands


class LinkKind(StrEnum):
    NONE = ""  # no saved link: the next run starts a new round
    NEXT = "next"  # a round in progress
    DELTA = "delta"  # a round finished; the next round starts from this link


@dataclass(frozen=True)
class Backfill:
    """The part of a mail window a capped first round did not return, being listed page by page."""

    since: datetime
    until: datetime | None = None  # the oldest message the round returned (None: the whole window)
    link: str = ""  # the listing's nextLink ("" = from the start)


@dataclass(frozen=True)
class MailProgress:
    backfill: Backfill | None = None
    round_filtered: bool = False  # the round asked for the window ($filter): Graph caps it
    round_items: int = 0  # messages the filtered round returned so far
    round_oldest: datetime | None = None


@dataclass(frozen=True)
class CalendarProgress:
    round_id: str = ""  # the current round (stamped on the link rows it saw)
    reconciled_round: str = ""  # the last round whose links were reconciled
    series_checked: datetime | None = None
    series_linked: int | None = None  # series checked then (None: not known)


@dataclass(frozen=True)
class Held:
    """A contacts run held by the mass-change brake: since when, and how many changes it would make."""

    since: datetime
    changes: int


@dataclass(frozen=True)
class ContactsProgress:
    folder_id: str = ""  # the owned folder (subscriptions read it too)
    folder_name: str = ""  # the ContactsFolder it was found by (another name: another folder)
    held: Held | None = None


@dataclass(frozen=True)
class TasksProgress:
    list_id: str = ""  # the owned To Do list
    list_name: str = ""  # the TasksList it was found by (another name: another list)
    held: Held | None = None


@dataclass(frozen=True)
class Cursor:
    """Where a stream's reading stands: the delta link, the CRM feed cursor, running totals, and the
    stream's own progress (only the part of its kind is ever set)."""

    link: str = ""  # the last saved nextLink or deltaLink ("" = start a new initial round)
    link_kind: LinkKind = LinkKind.NONE
    round_started: datetime | None = None  # when the current initial round began
    window_start: datetime | None = None  # calendar: the window frozen into this round's token
    window_end: datetime | None = None
    crm_cursor: str = ""  # the CRM change feed's cursor (contacts, push); "" = read it whole
    totals: Mapping[str, int] = field(default_factory=dict)  # shown on the status page
    last_page: datetime | None = None
    mail: MailProgress = field(default_factory=MailProgress)
    calendar: CalendarProgress = field(default_factory=CalendarProgress)
    contacts: ContactsProgress = field(default_factory=ContactsProgress)
    tasks: TasksProgress = field(default_factory=TasksProgress)
    unreadable: tuple[str, ...] = ()  # what the store could not read in the row (left out, said here)
    etag: str = ""  # set by the store on read/save; "" means "no row yet"


# ---------------------------------------------------------------------------------------------
# Leases


@dataclass(frozen=True)
class Lease:
    user: str
    stream: str
    owner: str  # a random id of the job holding it
    expires: datetime
    holder: str = ""  # who holds it: host and process id (for an admin deciding whether it is alive)
    acquired: datetime | None = None
    renewed: datetime | None = None  # when its holder last showed it was alive (taken or renewed)
    etag: str = ""


# ---------------------------------------------------------------------------------------------
# Links: what one Graph item became


@dataclass(frozen=True)
class EventLink:
    """A calendar link (stream `calendar`)."""

    series: str = ""  # the series master's Graph id, for occurrences and exceptions
    start: datetime | None = None
    end: datetime | None = None
    round_id: str = ""  # the round that last saw the event
    master: bool = False  # the link of a series master (it leads to no appointment of its own)
    from_crm: bool = False  # an event the push made: never captured back
    crm_id: str = ""  # for `from_crm`: the CRM appointment it shows
    pending_key: str = ""  # a re-keyed occurrence's new key, noted before its appointment is written


@dataclass(frozen=True)
class PushLink:
    """A push link (stream `calendar:push`, keyed by CRM appointment id)."""

    event_id: str = ""  # the Outlook event made for it ("" before the create is known to have happened)
    pending: bool = False  # a create was started and its outcome not yet recorded
    cancelled: bool = False


@dataclass(frozen=True)
class PendingWrite:
    """A one-sided write of a linked contact, noted before it is made (each print as it is once the
    write is done; the written side's changeKey is unknown)."""

    side: str  # "crm" | "outlook": the side written
    crm: str  # the CRM print
    local: str  # the Outlook print
    change_key: str
    base: ContactFields


@dataclass(frozen=True)
class ContactLink:
    """A contacts link (stream `contacts`)."""

    base: ContactFields | None = None  # the fields both sides agreed on at the last sync
    crm_version: str = ""
    pending_write: PendingWrite | None = None
    removing: bool = False  # being deleted from Outlook (the CRM's contact is gone)


@dataclass(frozen=True)
class TaskPendingWrite:
    """A one-sided write of a linked task, noted before it is made (as `PendingWrite` for contacts;
    To Do's `@odata.etag` stands in for the changeKey)."""

    side: str  # "crm" | "outlook": the side written
    crm: str
    local: str
    etag: str
    base: TaskFields


@dataclass(frozen=True)
class TaskLink:
    """A tasks link (stream `tasks`)."""

    base: TaskFields | None = None  # the fields both sides agreed on at the last sync
    pending_write: TaskPendingWrite | None = None
    removing: bool = False  # being deleted from To Do (the CRM's task is gone)


@dataclass(frozen=True)
class Link:
    """What one Graph item became in the CRM, and what we last knew of both sides."""

    user: str
    stream: str
    item_id: str  # Graph id (immutable)
    crm_key: str = ""  # the CRM-side key (journal / appointment key, or contact ref id)
    change_key: str = ""  # Graph changeKey (a To Do task's @odata.etag) we last wrote or read
    local_fingerprint: str = ""  # fingerprint of the Outlook side's mapped fields
    crm_fingerprint: str = ""  # fingerprint of the CRM side's mapped fields
    event: EventLink = field(default_factory=EventLink)
    push: PushLink = field(default_factory=PushLink)
    contact: ContactLink = field(default_factory=ContactLink)
    task: TaskLink = field(default_factory=TaskLink)
    etag: str = ""


# ---------------------------------------------------------------------------------------------
# Keys: one CRM record per global key, across mailboxes


@dataclass(frozen=True)
class KeyRecord:
    """A global key (internetMessageId / appointment key) and what it became, across mailboxes."""

    key: str
    crm_ref: str = ""
    mailboxes: tuple[str, ...] = ()
    people: tuple[PersonRef, ...] = ()  # CRM people linked so far
    fingerprint: str = ""  # fingerprint of the last record written to the CRM
    identity: str = ""  # who the item that took the key is (keyed_write); "" on rows from before
    owner: str = ""  # the CRM owner of the mailbox that first captured it
    direction: str = ""  # journals: inbound | outbound, as the first capture decided
    organizer: str = ""  # appointments: the organizer's address
    cancelled: bool = False  # appointments: cancelled in the CRM
    etag: str = ""


# ---------------------------------------------------------------------------------------------
# Subscriptions, issues, decisions


@dataclass(frozen=True)
class SubscriptionRecord:
    user: str
    resource: str  # e.g. "users/{id}/mailFolders('inbox')/messages"
    stream: str  # the stream a notification on it wakes
    subscription_id: str
    client_state: str  # random per subscription, compared in constant time
    expires: datetime
    etag: str = ""


@dataclass(frozen=True)
class Issue:
    """An item that could not be written, with its reason; retried by later runs."""

    user: str
    item_key: str
    stream: str
    reason: str
    attempts: int = 1
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    item_id: str = ""  # Graph id, so the item can be fetched again on retry


class Outcome(StrEnum):
    SYNCED = "synced"
    SKIPPED = "skipped"
    FAILED = "failed"
    REMOVED = "removed"


@dataclass(frozen=True)
class Decision:
    """Why an item did or did not become a CRM record (`crmsync explain`)."""

    user: str
    item_key: str  # internetMessageId (or Graph id when there is none)
    stream: str
    outcome: Outcome
    reason: str
    at: datetime
    crm_key: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
