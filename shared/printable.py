"""Text from outside (a CRM's or Graph's error message, a stored value) made safe to store and show.

An error text passes unchanged from a CRM into `LastError`, `SyncIssues.Reason`, the status page and
the terminal unless it is cleaned where it enters. `printable()` keeps it on one line and harmless:
line breaks and tabs become spaces; every other control character (ESC and the terminal escape
sequences it starts, NUL, DEL, C1), format character (bidirectional overrides that reorder what an
admin reads, zero-width characters), lone surrogate (which storage and encoders refuse) and
unassigned or private code point is dropped; and the text is cut at `limit` characters with a
visible "…". Printable characters of every script stay as they are.
"""

from __future__ import annotations

import unicodedata

ERROR_CHARS = 2_000  # an error message (shared/errors.py); the store keeps a little more for a prefix
_SPACES = frozenset("\t\n\r\v\f\x85\u2028\u2029")
_DROPPED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def printable(text: str, limit: int | None = None) -> str:
    """One line of printable text, at most `limit` characters (the last one "…" when cut)."""
    if text.isprintable() and (limit is None or len(text) <= limit):
        return text  # the usual case, in C
    cleaned = "".join(
        " " if c in _SPACES else c for c in text if c in _SPACES or unicodedata.category(c) not in _DROPPED
    )
    if limit is not None and len(cleaned) > limit:
        return cleaned[: max(0, limit - 1)] + "…"
    return cleaned
