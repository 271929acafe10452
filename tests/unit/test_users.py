from __future__ import annotations

import pytest

from shared.errors import UserConfigError
from shared.users import Granted, parse_user


def test_defaults() -> None:
    config = parse_user("ann@contoso.com", {"Enabled": True})
    assert config.enabled and config.mail
    assert config.mail_folders == ("inbox", "sentitems")
    assert config.mail_policy == "all" and config.days_back == 14 and not config.include_internal
    assert config.owner == "ann@contoso.com"
    assert config.streams() == ["mail:inbox", "mail:sentitems"]


def test_string_columns_as_admins_type_them() -> None:
    config = parse_user(
        "ann@contoso.com",
        {"Enabled": "yes", "MailFolders": "Inbox; archive", "MailPolicy": "Known-People", "DaysBack": "30",
         "ExcludedDomains": "@Family.example, ", "ExcludedAddresses": "Doc@Clinic.example",
         "CrmOwner": "u-17",
         "Contacts": "true", "Calendar": "1"},
    )  # fmt: skip
    assert config.mail_folders == ("Inbox", "archive")
    assert config.mail_policy == "known-people" and config.days_back == 30
    assert config.excluded_domains == {"family.example"}
    assert config.excluded_addresses == {"doc@clinic.example"}
    assert config.owner == "u-17"
    assert config.streams() == ["mail:Inbox", "mail:archive", "contacts", "calendar"]


def test_every_bad_value_is_reported_together() -> None:
    with pytest.raises(UserConfigError) as caught:
        parse_user(
            "not-an-upn",
            {"Enabled": "maybe", "DaysBack": "-3", "MailPolicy": "some", "ExcludedAddresses": "x"},
        )
    problems = " | ".join(caught.value.problems)
    for expected in ("RowKey", "Enabled", "DaysBack", "MailPolicy", "ExcludedAddresses"):
        assert expected in problems


def test_large_days_back_is_a_warning_not_an_error() -> None:
    config = parse_user("ann@contoso.com", {"Enabled": True, "DaysBack": 90})
    assert config.days_back == 90
    assert any("DaysBack" in w for w in config.warnings)


def test_calendar_window_respects_graph_limit() -> None:
    with pytest.raises(UserConfigError, match="1825"):
        parse_user("ann@contoso.com", {"CalendarPastDays": 1000, "CalendarFutureDays": 1000})


def test_enabled_reads_every_spelling_the_parser_accepts() -> None:
    from shared.users import is_enabled

    assert [is_enabled({"Enabled": v}) for v in (True, "on", "Yes", "1", "off", "", None, "maybe")] == [
        True, True, True, True, False, False, False, False,
    ]  # fmt: skip


NOTHING_OPTIONAL = Granted(contacts=False, calendar=False, calendar_write_back=False)


def test_a_stream_the_deployment_has_no_permission_for_is_off_with_a_warning() -> None:
    row = {"Enabled": True, "Contacts": True, "Calendar": True, "CalendarPushFromCrm": True}
    config = parse_user("ann@contoso.com", row, NOTHING_OPTIONAL)
    assert config.streams() == ["mail:inbox", "mail:sentitems"]
    assert not config.contacts and not config.calendar and not config.calendar_push_from_crm
    assert config.warnings == (
        "Contacts is on, but this deployment does not ask for Contacts.ReadWrite (CONTACTS_SYNC is off): "
        "contacts are not synced",
        "Calendar is on, but this deployment does not ask for Calendars.Read (CALENDAR_SYNC is off): "
        "meetings are not synced",
    )
    # the same row on a deployment that asks for everything
    full = parse_user("ann@contoso.com", row)
    assert (
        full.streams() == ["mail:inbox", "mail:sentitems", "contacts", "calendar", "push"]
        and not full.warnings
    )


def test_calendar_without_write_back_syncs_meetings_but_pushes_nothing() -> None:
    granted = Granted(contacts=True, calendar=True, calendar_write_back=False)
    config = parse_user("ann@contoso.com", {"Calendar": True, "CalendarPushFromCrm": True}, granted)
    assert config.calendar and not config.calendar_push_from_crm
    assert config.warnings == (
        "CalendarPushFromCrm is on, but this deployment does not ask for Calendars.ReadWrite "
        "(CALENDAR_WRITE_BACK is off): CRM appointments are not pushed to Outlook",
    )


def test_a_row_left_with_nothing_to_sync_is_an_error_that_says_why() -> None:
    with pytest.raises(UserConfigError) as raised:
        parse_user("ann@contoso.com", {"Mail": False, "Contacts": True}, NOTHING_OPTIONAL)
    assert "nothing left to sync: Contacts is on, but this deployment does not ask for" in str(raised.value)
    # a row that asks for nothing it lacks is not affected
    assert parse_user("ann@contoso.com", {"Mail": True}, NOTHING_OPTIONAL).warnings == ()
