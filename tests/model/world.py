"""The outside world a model run drives: two mailboxes (Graph), the CRM and the state store, either in
memory (`MemoryWorld`, adapters that pass their contract suites) or the real stack (`tests/model/real.py`:
msgraph-sdk → the Graph emulator, the reference CRM over HTTP, Azurite)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shared.crm.memory import InMemoryCrm
from shared.errors import CrmRejectedError, CrmRetryableError
from shared.model import ContactFields
from shared.ports.state import StateStore
from shared.state.memory import InMemoryJobQueue, InMemoryStateStore
from tests.model.calendarbook import InMemoryCalendar
from tests.model.contactbook import InMemoryContacts
from tests.model.mailbox import InMemoryMailboxes

ANN = "ann@contoso.com"  # policy all
DAN = "dan@contoso.com"  # policy category ("CRM")
USERS = (ANN, DAN)
CHOSEN = ("inbox", "archive")
FOLDERS = ("inbox", "archive", "sentitems", "deleteditems")
ORG_DOMAINS = ("contoso.com",)
BOB = "bob@fabrikam.example"
EVE = "eve@northwind.example"
PERSONS = (BOB, EVE)


@dataclass(frozen=True)
class Template:
    imid: str
    sender: str
    cc: tuple[str, ...]
    subject: str
    # every copy of a message carries the sent time its sender's server stamped (the Date header)
    sent: datetime = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    @property
    def internal(self) -> bool:
        return all(a.endswith("@contoso.com") for a in (self.sender, *self.cc))

    @property
    def people(self) -> frozenset[str]:
        return frozenset(a for a in (self.sender, *self.cc) if a in PERSONS)


TEMPLATES = (
    Template("<t1@fabrikam.example>", BOB, (), "Quote"),
    Template("<t2@northwind.example>", EVE, (BOB,), "Offer"),
    Template("<t3@unknown.example>", "zed@unknown.example", (), "Cold call"),
    Template("<t4@contoso.com>", "carol@contoso.com", (), "Internal"),
    Template("<t5@fabrikam.example>", BOB, (EVE,), "Meeting notes"),
)

# Graph faults: (name, status, Retry-After, error code)
GRAPH_FAULTS = (
    ("429-fractional", 429, "0.5", ""),
    ("429-missing", 429, None, ""),
    ("429-long", 429, "7200", ""),
    ("503", 503, "1", ""),
    ("410", 410, None, "SyncStateNotFound"),
)
CRM_FAULTS = ("503", "timeout", "ambiguous", "rejected")
CONTACTS_FOLDER = "CRM Contacts"
# CRM operations of the contacts and calendar streams a CRM fault can hit
CRM_OPS = (
    "upsert_contact", "contact_changes", "get_contact", "upsert_appointment", "cancel_appointment",
    "appointment_changes", "find_people",
)  # fmt: skip


@dataclass(frozen=True)
class JournalView:
    subject: str
    seen_by: frozenset[str]
    people: frozenset[str]  # addresses of the linked CRM people


@dataclass(frozen=True)
class AppointmentView:
    key: str  # "" for an appointment made in the CRM
    crm_id: str
    owner: str
    subject: str
    start: datetime
    end: datetime
    cancelled: bool
    seen_by: frozenset[str]


@dataclass(frozen=True)
class CrmContactView:
    crm_id: str
    owner: str
    fields: ContactFields


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)


class World(Protocol):
    clock: Clock
    state: StateStore
    crm: Any
    mail: Any
    queue: InMemoryJobQueue

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def deliver(self, user: str, folder: str, template: Template, categories: tuple[str, ...]) -> str: ...
    def set_categories(self, user: str, message_id: str, categories: tuple[str, ...]) -> None: ...
    def mark_read(self, user: str, message_id: str) -> None: ...
    def move(self, user: str, message_id: str, folder: str) -> None: ...
    def delete(self, user: str, message_id: str) -> None: ...
    def expire_links(self, user: str) -> None: ...
    def graph_fault(self, name: str, count: int) -> None: ...
    def crm_fault(self, name: str, count: int) -> None: ...
    def clear_faults(self) -> None: ...
    def journals(self) -> tuple[dict[str, JournalView], int]:
        """Journals by key, and how many journal records the CRM holds (a duplicate makes them differ)."""

    def link_position(self, link: str) -> tuple[int, int] | None:
        """(sync state, position) of a delta link when the world can read it; None otherwise."""

    def covered(self, user: str, folder: str, link: str) -> set[str] | None:
        """Message ids a cursor with `link` has been given; None when the world cannot tell."""

    # -- contacts and calendar (tests/model/pim.py) -------------------------------------------------
    contacts: Any
    calendar: Any

    def outlook_contacts(self, user: str) -> dict[str, ContactFields]:
        """The contacts of the user's owned folder by id."""

    def outlook_add_contact(self, user: str, fields: ContactFields) -> str: ...
    def outlook_edit_contact(self, user: str, contact_id: str, **fields: str) -> None: ...
    def outlook_delete_contact(self, user: str, contact_id: str) -> None: ...
    def crm_contacts(self) -> list[CrmContactView]:
        """Every live CRM contact, whoever owns it."""

    def crm_add_contact(self, owner: str, fields: ContactFields) -> str: ...
    def crm_edit_contact(self, crm_id: str, **fields: str) -> None: ...
    def crm_reassign(self, crm_id: str, owner: str) -> None: ...
    def crm_delete_contact(self, crm_id: str) -> None: ...
    def create_meeting(
        self, user: str, subject: str, start: datetime, end: datetime, attendees: tuple[str, ...], count: int
    ) -> tuple[str, str]:
        """The user organizes a meeting or a daily series: (event id, iCalUId)."""

    def patch_meeting(
        self, user: str, event_id: str, *, subject: str | None = None, start: datetime | None = None,
        end: datetime | None = None,
    ) -> None: ...  # fmt: skip
    def delete_meeting(self, user: str, event_id: str) -> None: ...
    def event_id_of(self, user: str, ical: str) -> str:
        """The id of the user's copy of a meeting ("" when the user's calendar has none)."""

    def appointments(self) -> list[AppointmentView]: ...
    def crm_create_appointment(self, owner: str, subject: str, start: datetime, end: datetime) -> str: ...
    def crm_update_appointment(self, crm_id: str, **fields: Any) -> None: ...
    def pushed_events(self, user: str) -> list[tuple[str, datetime, datetime]]:
        """(subject, start, end) of the events the CRM push made in the user's calendar."""

    def stream_fault(self, stream: str, name: str, count: int) -> None:
        """A Graph fault (GRAPH_FAULTS) on the contacts or calendar stream's Graph calls."""

    def crm_fault_on(self, operation: str, name: str, count: int) -> None:
        """A CRM fault (CRM_FAULTS) on one CRM operation."""


class MemoryWorld:
    def __init__(self) -> None:
        self.clock = Clock()
        self.state: StateStore = InMemoryStateStore(clock=self.clock)
        self.crm = InMemoryCrm()
        self.mail = InMemoryMailboxes(page_size=2, clock=self.clock, sleep=self.clock.sleep)
        self.queue = InMemoryJobQueue(clock=self.clock)
        self.contacts = InMemoryContacts(page_size=3, clock=self.clock, sleep=self.clock.sleep)
        self.calendar = InMemoryCalendar(page_size=4, sleep=self.clock.sleep)
        self._person_ids: dict[str, str] = {}
        self._folders: dict[str, str] = {}

    async def start(self) -> None:
        for user in USERS:
            self.mail.add_user(user)
            self.contacts.add_user(user)
            self.calendar.add_user(user)
            self._folders[user] = self.contacts.make_folder(user, CONTACTS_FOLDER)
        for address in PERSONS:
            self._person_ids[self.crm.add_person(address, name=address.split("@")[0], owner=ANN)] = address

    async def close(self) -> None:
        return None

    def deliver(self, user: str, folder: str, template: Template, categories: tuple[str, ...]) -> str:
        return self.mail.deliver(
            user, folder=folder, sender=template.sender, to=USERS, cc=template.cc, subject=template.subject,
            body_html=f"<p>{template.subject}</p>", internet_message_id=template.imid, categories=categories,
            received=self.clock.now - timedelta(minutes=1), sent=template.sent,
        )  # fmt: skip

    def set_categories(self, user: str, message_id: str, categories: tuple[str, ...]) -> None:
        self.mail.set_categories(user, message_id, categories)

    def mark_read(self, user: str, message_id: str) -> None:
        self.mail.mark_read(user, message_id)

    def move(self, user: str, message_id: str, folder: str) -> None:
        self.mail.move(user, message_id, folder)

    def delete(self, user: str, message_id: str) -> None:
        self.mail.delete(user, message_id)

    def expire_links(self, user: str) -> None:
        self.mail.expire_delta_tokens(user)
        self.contacts.expire_delta_tokens(user)
        self.calendar.expire_delta_tokens(user)

    def graph_fault(self, name: str, count: int) -> None:
        _, status, retry_after, code = next(f for f in GRAPH_FAULTS if f[0] == name)
        self.mail.fault(status, count=count, operation="read_page", retry_after=retry_after, code=code)

    def crm_fault(self, name: str, count: int) -> None:
        if name == "rejected":
            self.crm.fail_next(
                "upsert_journal", CrmRejectedError("CRM rejected (422)", status=422), times=count
            )
        elif name == "timeout":
            self.crm.fail_next("*", CrmRetryableError("CRM PUT /journals failed: ReadTimeout"), times=count)
        else:
            error = CrmRetryableError("CRM answered 503", status=503)
            self.crm.fail_next("upsert_journal", error, times=count, after_apply=name == "ambiguous")

    def clear_faults(self) -> None:
        self.mail.clear_faults()
        self.contacts.clear_faults()
        self.calendar.clear_faults()
        self.crm._failures.clear()  # noqa: SLF001 - the fake has no public "clear" and the model needs one

    def journals(self) -> tuple[dict[str, JournalView], int]:
        views = {
            key: JournalView(
                j.subject,
                frozenset(s.lower() for s in j.seen_by),
                frozenset(p.email.lower() for p in j.people),
            )
            for key, j in self.crm.journals.items()
        }
        return views, len(set(self.crm._journal_ids.values()))  # noqa: SLF001

    def link_position(self, link: str) -> tuple[int, int] | None:
        state, pos = InMemoryMailboxes.position(link)
        # mail's state ids are hex counts, contacts' "c" + hex, the calendar's "e" + hex: all hex, and
        # each fake's ids grow as numbers (a prefix stripped with lstrip also ate the count's own c/e)
        return (int(state, 16) if state else 0, pos)

    def covered(self, user: str, folder: str, link: str) -> set[str] | None:
        return self.mail.covered(user, folder, link)

    # -- contacts and calendar ------------------------------------------------------------------------

    def outlook_contacts(self, user: str) -> dict[str, ContactFields]:
        folder = self.contacts.folder_named(user, CONTACTS_FOLDER)
        return {cid: item.contact.fields for cid, item in self.contacts.contacts(user, folder).items()}

    def outlook_add_contact(self, user: str, fields: ContactFields) -> str:
        return self.contacts.add_contact(user, self._folders[user], fields)

    def outlook_edit_contact(self, user: str, contact_id: str, **fields: str) -> None:
        self.contacts.edit_contact(user, self._folders[user], contact_id, **fields)

    def outlook_delete_contact(self, user: str, contact_id: str) -> None:
        self.contacts.delete_contact(user, self._folders[user], contact_id)

    def crm_contacts(self) -> list[CrmContactView]:
        return [
            CrmContactView(crm_id, contact.owner, contact.fields)
            for crm_id, contact in self.crm.contacts.items()
        ]

    def crm_add_contact(self, owner: str, fields: ContactFields) -> str:
        values = {k: v for k, v in fields.__dict__.items() if k not in ("emails", "display_name")}
        return str(self.crm.add_person(fields.emails, name=fields.display_name, owner=owner, **values))

    def crm_edit_contact(self, crm_id: str, **fields: str) -> None:
        self.crm.update_person(crm_id, **fields)

    def crm_reassign(self, crm_id: str, owner: str) -> None:
        self.crm.update_person(crm_id, owner=owner)

    def crm_delete_contact(self, crm_id: str) -> None:
        self.crm.delete_person(crm_id)

    def create_meeting(
        self, user: str, subject: str, start: datetime, end: datetime, attendees: tuple[str, ...], count: int
    ) -> tuple[str, str]:
        return self.calendar.create(
            user, subject=subject, start=start, end=end, attendees=attendees, count=count
        )

    def patch_meeting(
        self, user: str, event_id: str, *, subject: str | None = None, start: datetime | None = None,
        end: datetime | None = None,
    ) -> None:  # fmt: skip
        self.calendar.patch(user, event_id, subject=subject, start=start, end=end)

    def delete_meeting(self, user: str, event_id: str) -> None:
        self.calendar.delete(user, event_id)

    def event_id_of(self, user: str, ical: str) -> str:
        return next((e.id for e in self.calendar.events(user) if e.ical == ical), "")

    def appointments(self) -> list[AppointmentView]:
        return [
            AppointmentView(
                s.value.key, s.id, s.value.owner, s.value.subject, s.value.start, s.value.end,
                s.value.cancelled, frozenset(m.lower() for m in s.value.seen_by),
            )
            for s in self.crm._appointments.values()  # noqa: SLF001 - every record, duplicates included
        ]  # fmt: skip

    def crm_create_appointment(self, owner: str, subject: str, start: datetime, end: datetime) -> str:
        return str(self.crm.create_appointment(owner=owner, subject=subject, start=start, end=end))

    def crm_update_appointment(self, crm_id: str, **fields: Any) -> None:
        self.crm.update_appointment(crm_id, **fields)

    def pushed_events(self, user: str) -> list[tuple[str, datetime, datetime]]:
        return sorted((e.subject, e.start, e.end) for e in self.calendar.events(user) if e.transaction_id)

    def stream_fault(self, stream: str, name: str, count: int) -> None:
        _, status, retry_after, code = next(f for f in GRAPH_FAULTS if f[0] == name)
        fake = self.contacts if stream == "contacts" else self.calendar
        operation = "read_page" if status == 410 else "*"
        fake.fault(status, count=count, operation=operation, retry_after=retry_after, code=code)

    def crm_fault_on(self, operation: str, name: str, count: int) -> None:
        if name == "rejected":
            self.crm.fail_next(operation, CrmRejectedError("CRM rejected (422)", status=422), times=count)
        elif name == "timeout":
            self.crm.fail_next(operation, CrmRetryableError("CRM call failed: ReadTimeout"), times=count)
        else:
            error = CrmRetryableError("CRM answered 503", status=503)
            self.crm.fail_next(operation, error, times=count, after_apply=name == "ambiguous")
