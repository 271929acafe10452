"""Retry-After as the reference connector reads it: seconds, fractional seconds, HTTP dates, junk."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.retry_after import parse_retry_after

NOW = datetime(2024, 5, 6, 9, 30, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        ("0.25", 0.25),
        (" 3 ", 3.0),
        ("-5", 0.0),
        ("Mon, 06 May 2024 09:31:30 GMT", 90.0),
        ("Mon, 06 May 2024 09:00:00 GMT", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
    ],
)
def test_retry_after_forms(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds
