"""A user's configuration as the engine uses it, once `shared/users.py` parsed their SyncUsers row."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from shared.model.jobs import StreamId, StreamKind


class MailPolicy(StrEnum):
    ALL = "all"  # every message in the chosen folders
    KNOWN_PEOPLE = "known-people"  # at least one other participant is a CRM person
    CATEGORY = "category"  # the message carries MailCategory


class ContactsDirection(StrEnum):
    TWO_WAY = "two-way"
    CRM_TO_OUTLOOK = "crm-to-outlook"
    OUTLOOK_TO_CRM = "outlook-to-crm"


class ConflictRule(StrEnum):
    CRM_WINS = "crm-wins"
    OUTLOOK_WINS = "outlook-wins"
    NEWEST = "newest"


class CalendarPolicy(StrEnum):
    ALL = "all"
    CATEGORY = "category"
    CRM_ATTENDEE = "crm-attendee"


@dataclass(frozen=True)
class UserConfig:
    upn: str
    enabled: bool
    mail: bool = True
    mail_folders: tuple[str, ...] = ("inbox", "sentitems")
    mail_policy: MailPolicy = MailPolicy.ALL
    mail_category: str = "CRM"
    days_back: int = 14
    excluded_domains: frozenset[str] = frozenset()
    excluded_addresses: frozenset[str] = frozenset()
    include_internal: bool = False
    crm_owner: str = ""
    contacts: bool = False
    contacts_direction: ContactsDirection = ContactsDirection.TWO_WAY
    contacts_folder: str = "CRM Contacts"
    contacts_conflict_rule: ConflictRule = ConflictRule.CRM_WINS
    contacts_delete_in_crm: bool = False
    contacts_notes: bool = False
    contacts_change_threshold: int = 10
    calendar: bool = False
    calendar_policy: CalendarPolicy = CalendarPolicy.ALL
    calendar_category: str = "CRM"
    calendar_past_days: int = 7
    calendar_future_days: int = 180
    calendar_push_from_crm: bool = False
    calendar_delete_in_crm: bool = False
    tasks: bool = False
    tasks_direction: ContactsDirection = ContactsDirection.TWO_WAY
    tasks_list: str = "CRM Tasks"
    tasks_conflict_rule: ConflictRule = ConflictRule.CRM_WINS
    tasks_delete_in_crm: bool = False
    tasks_change_threshold: int = 10
    tasks_time_zone: str = "UTC"
    warnings: tuple[str, ...] = field(default=())

    @property
    def owner(self) -> str:
        return self.crm_owner or self.upn

    def streams(self) -> list[StreamId]:
        """The streams a sweep runs for this user."""
        found: list[StreamId] = []
        if self.mail:
            found += [StreamId.of(StreamKind.MAIL, folder) for folder in self.mail_folders]
        if self.contacts:
            found.append(StreamId.of(StreamKind.CONTACTS))
        if self.calendar:
            found.append(StreamId.of(StreamKind.CALENDAR))
            if self.calendar_push_from_crm:
                found.append(StreamId.of(StreamKind.PUSH))
        if self.tasks:
            found.append(StreamId.of(StreamKind.TASKS))
        return found
