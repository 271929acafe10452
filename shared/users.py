"""Per-user configuration: the admin columns of a `SyncUsers` row, parsed and validated.

Admins edit the table with Storage Explorer, the portal or `crmsync`, so every column may arrive as a
string or as a typed value. `parse_user()` reports every problem of a row at once; a row with
problems is skipped (its `LastError` says why) and other users are unaffected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.errors import UserConfigError
from shared.model import CalendarPolicy, ConflictRule, ContactsDirection, MailPolicy, UserConfig

E = TypeVar("E", bound=StrEnum)

DAYS_BACK_WARNING = 60

# Admin columns and their meaning (docs/configuration.md §2 lists them; a test keeps the two equal).
COLUMNS: dict[str, str] = {
    "Enabled": "switch the user on (true/false)",
    "Mail": "sync e-mail to journals (default true)",
    "MailFolders": "folders: well-known names or folder ids, comma separated (default inbox,sentitems)",
    "MailPolicy": "all | known-people | category (default all)",
    "MailCategory": "the category that marks mail for the CRM under the category policy (default CRM)",
    "DaysBack": "days of mail the first sync reads (default 14; a warning above 60)",
    "ExcludedDomains": "mail domains never journaled, comma separated",
    "ExcludedAddresses": "addresses never journaled, comma separated",
    "IncludeInternal": "journal mail whose participants are all inside the organisation (default false)",
    "CrmOwner": "the CRM user who owns this user's records (default: the user principal name)",
    "Contacts": "sync contacts both ways (default false)",
    "ContactsDirection": "two-way | crm-to-outlook | outlook-to-crm (default two-way)",
    "ContactsFolder": "name of the Outlook contact folder the service owns (default CRM Contacts)",
    "ContactsConflictRule": "crm-wins | outlook-wins | newest (default crm-wins)",
    "ContactsDeleteInCrm": "delete the CRM contact when it is deleted in Outlook (default false)",
    "ContactsNotes": "sync contact notes (default false)",
    "ContactsChangeThreshold": "most deletes/changes one run applies before asking for review (default 10)",
    "Calendar": "sync meetings to CRM appointments (default false)",
    "CalendarPolicy": "all | category | crm-attendee (default all)",
    "CalendarCategory": "the category that marks meetings under the category policy (default CRM)",
    "CalendarPastDays": "days before today in the calendar window (default 7)",
    "CalendarFutureDays": "days after today in the calendar window (default 180)",
    "CalendarPushFromCrm": "create CRM appointments of this user in Outlook (default false)",
    "CalendarDeleteInCrm": "delete (not just cancel) CRM appointments of deleted meetings (default false)",
    "Tasks": "sync Microsoft To Do tasks with CRM tasks (default false)",
    "TasksDirection": "two-way | crm-to-outlook | outlook-to-crm (default two-way)",
    "TasksList": "name of the To Do list the service owns (default CRM Tasks)",
    "TasksConflictRule": "crm-wins | outlook-wins | newest (default crm-wins)",
    "TasksDeleteInCrm": "delete the CRM task when it is deleted in To Do (default false)",
    "TasksChangeThreshold": "most task deletes/changes/completions a run applies before review (default 10)",
    "TasksTimeZone": "the user's time zone (IANA name) for To Do due dates (default UTC)",
}


@dataclass(frozen=True)
class Granted:
    """The streams this deployment's Graph app registration holds permissions for (the deployment flags
    CONTACTS_SYNC, CALENDAR_SYNC, CALENDAR_WRITE_BACK, TASKS_SYNC; infra/graph-permissions.json). A row
    asking for more keeps its other streams: what the deployment lacks is switched off with a warning, so
    it never becomes a Graph 403 on every run. The default grants everything (a local run, the Graph
    emulator)."""

    contacts: bool = True  # Contacts.ReadWrite
    calendar: bool = True  # Calendars.Read, or Calendars.ReadWrite with write-back
    calendar_write_back: bool = True  # Calendars.ReadWrite
    tasks: bool = True  # Tasks.ReadWrite.All


EVERYTHING = Granted()

# A column a deployment may not serve -> (the Graph permission, the deployment flag, what then stops).
WITHHELD: dict[str, tuple[str, str, str]] = {
    "Contacts": ("Contacts.ReadWrite", "CONTACTS_SYNC", "contacts are not synced"),
    "Calendar": ("Calendars.Read", "CALENDAR_SYNC", "meetings are not synced"),
    "CalendarPushFromCrm": (
        "Calendars.ReadWrite",
        "CALENDAR_WRITE_BACK",
        "CRM appointments are not pushed to Outlook",
    ),
    "Tasks": ("Tasks.ReadWrite.All", "TASKS_SYNC", "To Do tasks are not synced"),
}


def truth(value: Any) -> bool | None:
    """A boolean column as admins type it (`true`, `yes`, `1`, `on` …); None when blank or unreadable."""
    if isinstance(value, bool):
        return value
    lowered = "" if value is None else str(value).strip().lower()
    if lowered in {"true", "yes", "1", "on"}:
        return True
    if lowered in {"false", "no", "0", "off"}:
        return False
    return None


def known_zone(name: str) -> bool:
    """Whether `name` is a time zone this machine's tz database knows (IANA names)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def is_enabled(columns: Mapping[str, Any]) -> bool:
    """Whether a SyncUsers row is switched on (a blank or unreadable Enabled means off)."""
    return truth(columns.get("Enabled")) is True


def parse_user(upn: str, columns: Mapping[str, Any], granted: Granted = EVERYTHING) -> UserConfig:
    problems: list[str] = []
    warnings: list[str] = []

    def text(name: str, default: str) -> str:
        value = columns.get(name)
        return default if value is None or str(value).strip() == "" else str(value).strip()

    def boolean(name: str, default: bool) -> bool:
        value = columns.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return default
        parsed = truth(value)
        if parsed is None:
            problems.append(f"{name} must be true or false, got {value!r}")
            return default
        return parsed

    def integer(name: str, default: int, low: int, high: int) -> int:
        value = columns.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return default
        try:
            number = int(str(value).strip())
        except ValueError:
            problems.append(f"{name} must be a whole number, got {value!r}")
            return default
        if not low <= number <= high:
            problems.append(f"{name} must be between {low} and {high}, got {number}")
            return default
        return number

    def choice(name: str, default: E) -> E:
        value = text(name, default.value).lower()
        allowed = [member.value for member in type(default)]
        if value not in allowed:
            problems.append(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
            return default
        return type(default)(value)

    def items(name: str, default: str) -> tuple[str, ...]:
        return tuple(
            part.strip() for part in text(name, default).replace(";", ",").split(",") if part.strip()
        )

    if "@" not in upn:
        problems.append(f"the RowKey must be the user's principal name (an e-mail address), got {upn!r}")
    days_back = integer("DaysBack", 14, 1, 3650)
    if days_back > DAYS_BACK_WARNING:
        warnings.append(
            f"DaysBack is {days_back}: the first sync reads a lot of mail (60 or less is advised)"
        )
    folders = items("MailFolders", "inbox,sentitems")
    if not folders:
        problems.append("MailFolders is empty")
    excluded_addresses = frozenset(a.lower() for a in items("ExcludedAddresses", ""))
    problems += [
        f"ExcludedAddresses has {a!r}, not an address" for a in sorted(excluded_addresses) if "@" not in a
    ]
    past = integer("CalendarPastDays", 7, 0, 1825)
    future = integer("CalendarFutureDays", 180, 1, 1825)
    if past + future > 1825:
        problems.append("CalendarPastDays + CalendarFutureDays must be at most 1825 (Graph's window limit)")

    lacking: list[str] = []  # what the row asks for and the deployment holds no permission for

    def withheld(column: str, asked: bool, allowed: bool) -> bool:
        if asked and not allowed:
            permission, flag, effect = WITHHELD[column]
            lacking.append(
                f"{column} is on, but this deployment does not ask for {permission} ({flag} is off): {effect}"
            )
        return asked and not allowed

    mail = boolean("Mail", True)
    contacts = boolean("Contacts", False)
    calendar = boolean("Calendar", False)
    push = boolean("CalendarPushFromCrm", False)
    if withheld("Contacts", contacts, granted.contacts):
        contacts = False
    if withheld("Calendar", calendar, granted.calendar):
        calendar = False
    withheld("CalendarPushFromCrm", push and calendar, granted.calendar_write_back)
    push = push and granted.calendar_write_back
    tasks = boolean("Tasks", False)
    if withheld("Tasks", tasks, granted.tasks):
        tasks = False
    time_zone = text("TasksTimeZone", "UTC")
    if not known_zone(time_zone):
        problems.append(
            f"TasksTimeZone must be an IANA time zone name such as Europe/Berlin, got {time_zone!r}"
        )
        time_zone = "UTC"
    if lacking and not (mail or contacts or calendar or tasks):
        problems.append(f"nothing left to sync: {'; '.join(lacking)}")
    warnings += lacking

    config = UserConfig(
        upn=upn,
        enabled=boolean("Enabled", False),
        mail=mail,
        mail_folders=folders,
        mail_policy=choice("MailPolicy", MailPolicy.ALL),
        mail_category=text("MailCategory", "CRM"),
        days_back=days_back,
        excluded_domains=frozenset(d.lower().lstrip("@") for d in items("ExcludedDomains", "")),
        excluded_addresses=excluded_addresses,
        include_internal=boolean("IncludeInternal", False),
        crm_owner=text("CrmOwner", ""),
        contacts=contacts,
        contacts_direction=choice("ContactsDirection", ContactsDirection.TWO_WAY),
        contacts_folder=text("ContactsFolder", "CRM Contacts"),
        contacts_conflict_rule=choice("ContactsConflictRule", ConflictRule.CRM_WINS),
        contacts_delete_in_crm=boolean("ContactsDeleteInCrm", False),
        contacts_notes=boolean("ContactsNotes", False),
        contacts_change_threshold=integer("ContactsChangeThreshold", 10, 0, 100000),
        calendar=calendar,
        calendar_policy=choice("CalendarPolicy", CalendarPolicy.ALL),
        calendar_category=text("CalendarCategory", "CRM"),
        calendar_past_days=past,
        calendar_future_days=future,
        calendar_push_from_crm=push,
        calendar_delete_in_crm=boolean("CalendarDeleteInCrm", False),
        tasks=tasks,
        tasks_direction=choice("TasksDirection", ContactsDirection.TWO_WAY),
        tasks_list=text("TasksList", "CRM Tasks"),
        tasks_conflict_rule=choice("TasksConflictRule", ConflictRule.CRM_WINS),
        tasks_delete_in_crm=boolean("TasksDeleteInCrm", False),
        tasks_change_threshold=integer("TasksChangeThreshold", 10, 0, 100000),
        tasks_time_zone=time_zone,
        warnings=tuple(warnings),
    )
    if problems:
        raise UserConfigError(f"SyncUsers row {upn!r} is invalid", problems)
    return config
