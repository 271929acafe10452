"""Expanding Graph's patternedRecurrence into occurrence dates, and Graph's dateTimeTimeZone values."""

from __future__ import annotations

import calendar as cal
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from emulators.graph.protocol import GraphError

WINDOWS_ZONES = {
    "utc": "UTC",
    "pacific standard time": "America/Los_Angeles",
    "mountain standard time": "America/Denver",
    "central standard time": "America/Chicago",
    "eastern standard time": "America/New_York",
    "gmt standard time": "Europe/London",
    "w. europe standard time": "Europe/Berlin",
    "romance standard time": "Europe/Paris",
    "central europe standard time": "Europe/Budapest",
    "tokyo standard time": "Asia/Tokyo",
    "india standard time": "Asia/Kolkata",
    "aus eastern standard time": "Australia/Sydney",
}
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
INDEX = {"first": 0, "second": 1, "third": 2, "fourth": 3, "last": -1}


def zone(name: str | None) -> ZoneInfo:
    key = (name or "UTC").strip()
    try:
        return ZoneInfo(WINDOWS_ZONES.get(key.lower(), key))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise GraphError(
            400,
            "TimeZoneNotSupportedException",
            f"A valid TimeZone value must be specified. "
            f"The following TimeZone value is not supported: '{key}'.",
        ) from exc


def parse_local(value: dict[str, Any]) -> datetime:
    """{dateTime, timeZone} -> an aware UTC datetime."""
    raw = str(value.get("dateTime", "")).replace("Z", "")
    if "." in raw:
        raw = raw.split(".")[0]
    try:
        naive = datetime.fromisoformat(raw).replace(tzinfo=None)
    except ValueError as exc:
        raise GraphError(400, "ErrorInvalidParameter", f"Invalid dateTime '{raw}'.") from exc
    return naive.replace(tzinfo=zone(value.get("timeZone"))).astimezone(UTC)


def render_local(dt: datetime, tz_name: str) -> dict[str, str]:
    local = dt.astimezone(zone(tz_name))
    return {"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": tz_name}


def _months(start: date, interval: int) -> Iterator[tuple[int, int]]:
    y, m = start.year, start.month
    while True:
        yield y, m
        m += interval
        while m > 12:
            m -= 12
            y += 1


def _nth_weekday(y: int, m: int, days: list[int], index: int) -> list[date]:
    last = cal.monthrange(y, m)[1]
    matches = [date(y, m, d) for d in range(1, last + 1) if date(y, m, d).weekday() in days]
    if not matches:
        return []
    if index == -1:
        return [matches[-1]]
    # "first monday/tuesday" picks the nth matching day of any listed weekday
    return [matches[index]] if index < len(matches) else []


def _candidates(pattern: dict[str, Any], start: date) -> Iterator[date]:
    kind = pattern.get("type", "daily")
    interval = max(1, int(pattern.get("interval") or 1))
    days = sorted(DAYS.index(d.lower()) for d in pattern.get("daysOfWeek") or [])
    if kind == "daily":
        d = start
        while True:
            yield d
            d += timedelta(days=interval)
    elif kind == "weekly":
        first = DAYS.index((pattern.get("firstDayOfWeek") or "sunday").lower())
        week = start - timedelta(days=(start.weekday() - first) % 7)
        days = days or [start.weekday()]
        offsets = sorted((d - first) % 7 for d in days)
        while True:
            for off in offsets:
                yield week + timedelta(days=off)
            week += timedelta(weeks=interval)
    elif kind in ("absoluteMonthly", "relativeMonthly"):
        for y, m in _months(start, interval):
            if kind == "absoluteMonthly":
                dom = int(pattern.get("dayOfMonth") or start.day)
                if dom <= cal.monthrange(y, m)[1]:
                    yield date(y, m, dom)
            else:
                yield from _nth_weekday(y, m, days, INDEX[(pattern.get("index") or "first").lower()])
    elif kind in ("absoluteYearly", "relativeYearly"):
        month = int(pattern.get("month") or start.month)
        y = start.year
        while True:
            if kind == "absoluteYearly":
                dom = int(pattern.get("dayOfMonth") or start.day)
                if dom <= cal.monthrange(y, month)[1]:
                    yield date(y, month, dom)
            else:
                yield from _nth_weekday(y, month, days, INDEX[(pattern.get("index") or "first").lower()])
            y += interval
    else:
        raise GraphError(400, "ErrorInvalidRecurrence", f"Unknown recurrence pattern type '{kind}'.")


def occurrence_dates(recurrence: dict[str, Any], until: date) -> Iterator[date]:
    """Dates of the series, in order, up to `until` (inclusive) or the range's end."""
    rng = recurrence.get("range") or {}
    start = date.fromisoformat(str(rng.get("startDate")))
    end = (
        date.fromisoformat(str(rng["endDate"]))
        if rng.get("type") == "endDate" and rng.get("endDate")
        else None
    )
    count = int(rng.get("numberOfOccurrences") or 0) if rng.get("type") == "numbered" else 0
    n = 0
    for d in _candidates(recurrence.get("pattern") or {}, start):
        if d < start:
            continue
        if (end and d > end) or d > until or (count and n >= count):
            return
        n += 1
        yield d
