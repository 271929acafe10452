"""NCRONTAB schedules of the local host's timer triggers (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from emulators.funchost.ncrontab import CronSchedule, Interval, ScheduleError, parse_schedule


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 */5 * * * *", "2026-11-21T12:03:10", "2026-11-21T12:05:00"),
        ("0 */5 * * * *", "2026-11-21T12:05:00", "2026-11-21T12:10:00"),  # strictly after
        ("0 */5 * * * *", "2026-11-21T23:59:59", "2026-11-22T00:00:00"),
        ("*/15 * * * * *", "2026-11-21T12:00:14", "2026-11-21T12:00:15"),
        ("0 */30 * * * *", "2026-11-21T12:31:00", "2026-11-21T13:00:00"),
        ("0 30 9 * * 1-5", "2026-11-20T10:00:00", "2026-11-23T09:30:00"),  # Friday → Monday
        ("0 0 12 * * Mon,Wed", "2026-11-21T00:00:00", "2026-11-23T12:00:00"),
        ("0 5,10 * * * *", "2026-11-21T12:05:00", "2026-11-21T12:10:00"),
        ("0 0 0 1 1 *", "2026-11-21T00:00:00", "2027-01-01T00:00:00"),
        ("0 0 0 29 2 *", "2026-03-01T00:00:00", "2028-02-29T00:00:00"),  # the next leap day
        ("0 0 0 * Dec Sun", "2026-11-21T00:00:00", "2026-12-06T00:00:00"),
        ("0 0 0 * * 7", "2026-11-21T00:00:00", "2026-11-22T00:00:00"),  # 7 is Sunday too
        ("0 0 0 13 * 5", "2026-01-01T00:00:00", "2026-02-13T00:00:00"),  # day AND weekday (Friday 13th)
        ("0 10-20/5 8 * * *", "2026-11-21T08:11:00", "2026-11-21T08:15:00"),
        ("30 5/20 * * * *", "2026-11-21T08:45:31", "2026-11-21T09:05:30"),  # `a/n` runs to the end
        ("*/10 * * * *", "2026-11-21T08:01:00", "2026-11-21T08:10:00"),  # five fields: at second 0
    ],
)
def test_next_occurrence(expression: str, after: str, expected: str) -> None:
    assert CronSchedule.parse(expression).next_after(at(after)) == at(expected)


def test_consecutive_occurrences_of_every_five_minutes() -> None:
    schedule = CronSchedule.parse("0 */5 * * * *")
    t = at("2026-11-21T12:00:00")
    seen = []
    for _ in range(4):
        t = schedule.next_after(t)
        seen.append(t.strftime("%H:%M:%S"))
    assert seen == ["12:05:00", "12:10:00", "12:15:00", "12:20:00"]


def test_matches_checks_every_field() -> None:
    schedule = CronSchedule.parse("0 30 9 * * 1-5")
    assert schedule.matches(at("2026-11-23T09:30:00"))  # Monday
    assert not schedule.matches(at("2026-11-22T09:30:00"))  # Sunday
    assert not schedule.matches(at("2026-11-23T09:30:01"))


@pytest.mark.parametrize(
    "expression",
    ["* * * *", "60 * * * * *", "0 60 * * * *", "0 0 24 * * *", "0 0 0 0 * *", "0 0 0 * 13 *",
     "*/0 * * * * *", "a * * * * *", "0 0 0 * * 8", "0 30-10 * * * *", "0 0 0 * Foo *", ""],
)  # fmt: skip
def test_invalid_expressions_are_rejected(expression: str) -> None:
    with pytest.raises(ScheduleError):
        CronSchedule.parse(expression)


def test_a_schedule_that_never_fires_is_an_error() -> None:
    with pytest.raises(ScheduleError, match="does not fire"):
        CronSchedule.parse("0 0 0 30 2 *").next_after(at("2026-01-01T00:00:00"))


def test_timespan_schedules_are_intervals() -> None:
    schedule = parse_schedule("00:05:00")
    assert isinstance(schedule, Interval)
    assert schedule.next_after(at("2026-11-21T12:00:07")) == at("2026-11-21T12:05:07")
    assert parse_schedule("1.00:00:00").next_after(at("2026-11-21T00:00:00")) - at(
        "2026-11-21T00:00:00"
    ) == timedelta(days=1)
    with pytest.raises(ScheduleError):
        parse_schedule("00:00:00")
