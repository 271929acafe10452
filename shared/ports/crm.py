"""The CRM port: the one interface the engine uses to talk to any CRM.

Every connector implements `CrmPort` and passes the contract suite in `tests/contract/test_crm_port.py`.
Writes are idempotent upserts on a stable key, so a job can be killed at any line and re-run:

- journals by `Journal.key` (the message's internetMessageId): the second upsert of the same key
  replaces the record's content (seen_by, people ...) and creates nothing;
- appointments by `Appointment.key` (iCalUId, plus the occurrence start for a series);
- contacts by `CrmRef` when the link row knows it, else by `CrmContact.key` (our key for contacts
  that came from Outlook), else created;
- tasks likewise: by `CrmRef`, else by `CrmTask.key` (our key for tasks that came from To Do), else
  created.

Bulk: `upsert_journals` writes many journals in as few round trips as the CRM allows and answers per
journal, so one refused journal never fails the others (connectors without a bulk API loop).

Errors: `CrmRetryableError` for 5xx / 429 / timeouts (the connector has already retried with backoff,
honouring Retry-After), `CrmRejectedError` for a 4xx that says this item is refused (the reason is
in the message). Where a CRM cannot represent something the port offers, `Capabilities` says so and
the engine adapts; connectors never silently drop data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.errors import CrmError
from shared.model import (
    Appointment,
    ContactFeedPage,
    CrmAppointmentChange,
    CrmContact,
    CrmRef,
    CrmTask,
    Journal,
    PersonRef,
    TaskFeedPage,
)


@dataclass(frozen=True)
class Capabilities:
    """What a connector can represent. The engine reads these; the contract suite honours them."""

    # One journal may link several people. False: the engine writes one journal per linked person,
    # keyed `<internetMessageId>|<person id>` (and one unlinked journal when nobody matched).
    multi_person_journal: bool = True
    # Longest journal body / subject the CRM accepts (None: no limit). The engine caps before writing.
    journal_body_limit: int | None = None
    subject_limit: int | None = None
    # The contact feed reports changes since a cursor (False: it returns a full snapshot each time,
    # and deletions are found by the engine comparing the snapshot with its link rows).
    contact_change_feed: bool = True
    # The CRM keeps appointment times (False: only a date; times are kept in text).
    appointment_times: bool = True
    # Appointments created in the CRM can be read back for the CRM → Outlook push.
    appointment_change_feed: bool = True
    # The CRM remembers contacts deleted in it, so an upsert by key alone after such a delete is refused
    # (False: it hard-deletes and forgets; that upsert creates the contact again. By ref it is refused).
    contact_tombstones: bool = True
    # The CRM has tasks at all (False: the tasks stream cannot run against it; `crmsync check` says so).
    tasks: bool = True
    # The task feed reports changes since a cursor (False: a full snapshot each time, as for contacts).
    task_change_feed: bool = True
    # The task fields the CRM holds (`TaskFields` names; None: all). A field it lacks is kept in To Do
    # only: never compared with the CRM's empty value, never cleared in To Do, documented per connector.
    task_fields: frozenset[str] | None = None


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str


class CrmPort(Protocol):
    capabilities: Capabilities

    async def find_people(self, addresses: Sequence[str]) -> dict[str, list[PersonRef]]:
        """Who in the CRM has each address (exact, case-insensitive). Keys are the lower-cased
        addresses asked for; an address nobody has maps to []. People only, never a company."""
        ...

    async def upsert_journal(self, journal: Journal) -> CrmRef:
        """Create or replace the journal with this key."""
        ...

    async def upsert_journals(self, journals: Sequence[Journal]) -> list[CrmRef | CrmError]:
        """`upsert_journal` for each journal, in as few round trips as the CRM allows. Returns one
        outcome per journal, in order: its `CrmRef`, or the `CrmError` that stopped that journal alone
        (`CrmRejectedError`: refused; `CrmRetryableError`: could not be written now). Raises a `CrmError`
        when the whole request failed and nothing is known of any journal (the writes are idempotent,
        so the caller may send them all again). Keys should be distinct; a repeated key is written in
        the order given."""
        ...

    async def get_journal(self, key: str) -> Journal | None:
        """The journal stored under this key (used by tests, `crmsync explain` and the demo)."""
        ...

    async def upsert_appointment(self, appointment: Appointment) -> CrmRef:
        """Create or replace the appointment with this key."""
        ...

    async def cancel_appointment(self, key: str) -> None:
        """Mark the appointment with this key cancelled (idempotent; unknown key: nothing happens)."""
        ...

    async def delete_appointment(self, key: str) -> None:
        """Delete the appointment with this key (idempotent; unknown key: nothing happens). Used when
        the admin chose `CalendarDeleteInCrm`; a later upsert of the key creates it anew."""
        ...

    async def get_appointment(self, key: str) -> Appointment | None: ...

    async def appointment_changes(
        self, owner: str, cursor: str | None
    ) -> tuple[list[CrmAppointmentChange], str]:
        """Appointments created or changed in the CRM for this owner since the cursor."""
        ...

    async def upsert_contact(self, contact: CrmContact) -> CrmRef:
        """Update the contact `contact.ref` if given, else the one holding `contact.key`, else create it.
        Never takes over another owner's contact: a contact assigned elsewhere is refused
        (`CrmRejectedError`, its reason naming the contact), owners are never added or changed, and a new
        contact whose address another owner's contact holds is a contact of its own, or refused by a CRM
        that keeps one contact per address."""
        ...

    async def get_contact(self, ref: CrmRef) -> CrmContact | None: ...

    async def delete_contact(self, ref: CrmRef, owner: str) -> None:
        """Delete the contact of `owner` (idempotent: an unknown ref is not an error). A contact that is
        not (or no longer) assigned to `owner` alone is never deleted: refused with `CrmRejectedError`
        (another owner's, or shared with others)."""
        ...

    async def contact_changes(self, owner: str, cursor: str | None) -> ContactFeedPage:
        """Contacts assigned to `owner` changed since `cursor` (None: all of them), and removals
        (deleted, or no longer assigned to this owner)."""
        ...

    async def upsert_task(self, task: CrmTask) -> CrmRef:
        """Update the task `task.ref` if given, else the one holding `task.key`, else create it. A task
        deleted in the CRM is not brought back: by ref or by key the upsert is refused (404 / 409)."""
        ...

    async def get_task(self, ref: CrmRef) -> CrmTask | None: ...

    async def delete_task(self, ref: CrmRef) -> None:
        """Delete (idempotent: an unknown ref is not an error)."""
        ...

    async def task_changes(self, owner: str, cursor: str | None) -> TaskFeedPage:
        """Tasks assigned to `owner` changed since `cursor` (None: all of them), and removals (deleted,
        or no longer assigned to this owner)."""
        ...

    async def check(self) -> Health:
        """Can we reach the CRM, and are the credentials good."""
        ...

    async def aclose(self) -> None: ...
