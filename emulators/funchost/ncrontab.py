"""NCRONTAB schedules as the Functions timer trigger reads them.

Six fields, `{second} {minute} {hour} {day} {month} {day-of-week}` (a five-field expression has
no seconds field and fires at second 0). Each field takes `*`, a value, a range `a-b`, a step
`*/n` or `a-b/n` or `a/n`, and comma lists of these. Months and days of the week also take their
English three-letter names; day-of-week 0 and 7 are Sunday. As in NCrontab, a time matches when
*every* field matches (a restricted day and day-of-week must both match). The Functions host also
accepts a TimeSpan (`hh:mm:ss`) as an interval schedule; `Interval` handles that.

Times are UTC (the host's default; `WEBSITE_TIME_ZONE` is not honoured here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_SEARCH_YEARS = 5  # beyond this a schedule is taken never to fire (e.g. `0 0 0 30 2 *`)


class ScheduleError(ValueError):
    pass


def _value(text: str, lo: int, hi: int, names: list[str] | None) -> int:
    lowered = text.lower()
    if names and lowered in names:
        return names.index(lowered) + (1 if names is MONTHS else 0)
    if not text.isdigit():
        raise ScheduleError(f"{text!r} is not a number")
    value = int(text)
    if not lo <= value <= hi:
        raise ScheduleError(f"{value} is outside {lo}-{hi}")
    return value


def _field(text: str, lo: int, hi: int, names: list[str] | None = None) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"bad step in {part!r}")
            step = int(step_text)
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _value(a, lo, hi, names), _value(b, lo, hi, names)
            if start > end:
                raise ScheduleError(f"range {part!r} runs backwards")
        else:
            start = _value(base, lo, hi, names)
            end = hi if step_text else start  # `a/n` means from a to the end, every n
        values.update(range(start, end + 1, step))
    if names is DAYS and 7 in values:  # 7 is Sunday too
        values = (values - {7}) | {0}
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    expression: str

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        fields = expression.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        if len(fields) != 6:
            raise ScheduleError(f"{expression!r} needs 6 fields (second minute hour day month day-of-week)")
        try:
            return cls(
                seconds=_field(fields[0], 0, 59),
                minutes=_field(fields[1], 0, 59),
                hours=_field(fields[2], 0, 23),
                days=_field(fields[3], 1, 31),
                months=_field(fields[4], 1, 12, MONTHS),
                weekdays=_field(fields[5], 0, 7, DAYS),
                expression=expression,
            )
        except ScheduleError as e:
            raise ScheduleError(f"{expression!r}: {e}") from None

    def matches(self, t: datetime) -> bool:
        return (
            t.second in self.seconds
            and t.minute in self.minutes
            and t.hour in self.hours
            and t.day in self.days
            and t.month in self.months
            and (t.weekday() + 1) % 7 in self.weekdays
        )

    def next_after(self, after: datetime) -> datetime:
        """The first matching time strictly after `after` (whole seconds, same tzinfo)."""
        t = after.replace(microsecond=0) + timedelta(seconds=1)
        limit = t.replace(year=t.year + _SEARCH_YEARS, month=1, day=1)
        while t < limit:
            if t.month not in self.months:
                year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
                t = t.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)
            elif t.day not in self.days or (t.weekday() + 1) % 7 not in self.weekdays:
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
            elif t.second not in self.seconds:
                t += timedelta(seconds=1)
            else:
                return t
        raise ScheduleError(f"{self.expression!r} does not fire within {_SEARCH_YEARS} years")


_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})$")


@dataclass(frozen=True)
class Interval:
    every: timedelta
    expression: str

    @classmethod
    def parse(cls, expression: str) -> Interval:
        m = _TIMESPAN.match(expression.strip())
        if not m:
            raise ScheduleError(f"{expression!r} is not a TimeSpan (d.hh:mm:ss)")
        days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
        every = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if every <= timedelta(0):
            raise ScheduleError(f"{expression!r} is not a positive interval")
        return cls(every, expression)

    def next_after(self, after: datetime) -> datetime:
        return after + self.every


def parse_schedule(expression: str) -> CronSchedule | Interval:
    """A timer trigger's schedule: NCRONTAB, or a TimeSpan interval like the host accepts."""
    if _TIMESPAN.match(expression.strip()):
        return Interval.parse(expression)
    return CronSchedule.parse(expression)
