"""Meetings on both sides: an Outlook event, the CRM appointment it becomes, and CRM-made changes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from shared.model.people import Address, CrmRef, PersonRef

# The transactionId of every event the CRM → Outlook push creates (Graph keeps it on the event): such an
# event is never captured back, even when the worker died before writing its link row.
PUSH_TRANSACTION_PREFIX = "crmsync-push-"


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


@dataclass(frozen=True)
class OutlookEvent:
    """One calendarView entry as the engine needs it (times already in UTC)."""

    id: str
    type: str  # singleInstance | occurrence | exception | seriesMaster
    start: datetime
    end: datetime
    series_master_id: str = ""
    ical_uid: str = ""
    change_key: str = ""
    original_start: datetime | None = None
    subject: str = ""
    body: str = ""
    body_type: str = "text"  # we ask for text; HTML (a server that ignores the Prefer) is converted
    is_all_day: bool = False
    start_date: date | None = None  # all-day events: the calendar dates (end exclusive)
    end_date: date | None = None
    location: str = ""
    organizer: Address | None = None
    attendees: tuple[Attendee, ...] = ()
    online_meeting_url: str = ""
    categories: tuple[str, ...] = ()
    sensitivity: str = "normal"
    is_cancelled: bool = False
    is_draft: bool = False
    skeletal: bool = False  # an occurrence as delta gives it: id, type, master id, start, end only
    transaction_id: str = ""  # set by the app that created the event (the push: PUSH_TRANSACTION_PREFIX)


@dataclass(frozen=True)
class EventRemoved:
    """A delta `@removed` entry: the event left the view (deleted, or moved out of the window)."""

    id: str


EventChange = OutlookEvent | EventRemoved
