"""Plain domain records shared by the engine, the ports, the adapters and the CRM connectors.

No SDK type ever appears here, and nothing here imports the rest of the project: `shared/graph` turns
Graph pages into these records and `shared/crm` turns them into a CRM's API calls. All records are
frozen dataclasses. Times are timezone-aware UTC `datetime`s unless a field says it is a `date`.
"""

from __future__ import annotations

from shared.model.batch import SubRequest, SubResponse
from shared.model.calendar import (
    PUSH_TRANSACTION_PREFIX,
    Appointment,
    Attendee,
    CrmAppointmentChange,
    EventChange,
    EventRemoved,
    OutlookEvent,
)
from shared.model.contacts import (
    ContactFeedPage,
    ContactFields,
    CrmContact,
    CrmContactRemoved,
    OutlookChange,
    OutlookContact,
    OutlookContactRemoved,
    OutlookItem,
    PostalAddress,
    change_id,
)
from shared.model.fingerprint import fingerprint
from shared.model.jobs import Job, JobOutcome, JobStatus, StreamId, StreamKind
from shared.model.mail import Attachment, Direction, Journal, MailMessage, MessageChange, MessageRemoved
from shared.model.pages import Page
from shared.model.people import Address, CrmRef, PersonRef
from shared.model.state import (
    Backfill,
    CalendarProgress,
    ContactLink,
    ContactsProgress,
    Cursor,
    Decision,
    EventLink,
    Held,
    Issue,
    KeyRecord,
    Lease,
    Link,
    LinkKind,
    MailProgress,
    Outcome,
    PendingWrite,
    PushLink,
    SubscriptionRecord,
    UserRow,
)
from shared.model.users import CalendarPolicy, ConflictRule, ContactsDirection, MailPolicy, UserConfig

__all__ = [
    "PUSH_TRANSACTION_PREFIX",
    "Address",
    "Appointment",
    "Attachment",
    "Attendee",
    "Backfill",
    "CalendarPolicy",
    "CalendarProgress",
    "ConflictRule",
    "ContactFeedPage",
    "ContactFields",
    "ContactLink",
    "ContactsDirection",
    "ContactsProgress",
    "CrmAppointmentChange",
    "CrmContact",
    "CrmContactRemoved",
    "CrmRef",
    "Cursor",
    "Decision",
    "Direction",
    "EventChange",
    "EventLink",
    "EventRemoved",
    "Held",
    "Issue",
    "Job",
    "JobOutcome",
    "JobStatus",
    "Journal",
    "KeyRecord",
    "Lease",
    "Link",
    "LinkKind",
    "MailMessage",
    "MailPolicy",
    "MailProgress",
    "MessageChange",
    "MessageRemoved",
    "Outcome",
    "OutlookChange",
    "OutlookContact",
    "OutlookContactRemoved",
    "OutlookEvent",
    "OutlookItem",
    "Page",
    "PendingWrite",
    "PersonRef",
    "PostalAddress",
    "PushLink",
    "StreamId",
    "StreamKind",
    "SubRequest",
    "SubResponse",
    "SubscriptionRecord",
    "UserConfig",
    "UserRow",
    "change_id",
    "fingerprint",
]
