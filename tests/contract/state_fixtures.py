"""Helpers for the state contract suite (and for any test that wants a store on a hand-driven clock)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

# Strings that break naive key handling: every character Azure forbids in keys, our own separator and
# escape characters, quotes (OData), URL syntax, non-ASCII and astral characters, and a long one.
HOSTILE = [
    "<abc/def#x?@host>",
    "<CAF=+x/y@mail.gmail.com>",
    "o'brien@contoso.com",
    'a"b',
    "back\\slash",
    "pipe|in|it",
    "percent%2Fencoded%",
    "%7C",
    "ctrl\x00\x01\x1f\x7f\x85end",
    "spaces and tabs\tnew\nline",
    "query?a=1&b=2#frag",
    "ünïcødé ✓ 😀 中文",
    "%id",
    "",
    "x" * 600,
    "/" * 300,
]


class ManualClock:
    """A clock that moves only when told: lease expiry without sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def unique(prefix: str = "u") -> str:
    """A name no other test uses (the Table store's tables are shared within a run)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def table_prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]
