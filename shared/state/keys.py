"""Table keys: any UPN, folder id, stream name or internetMessageId made into a legal, stable key.

Azure Table keys may not contain `/ \\ # ?` or control characters and are limited in size. `encode_key`
percent-encodes exactly those characters (plus `%` itself and `|`, which this package uses as a
separator), as UTF-8 bytes, and leaves everything else as it is. So a plain UPN is its own key: an admin
who types `alice@contoso.com` as a SyncUsers RowKey in Storage Explorer addresses the same row the
service reads, and an `'` (legal in UPNs) stays an `'`.

- Reversible: `decode_key(encode_key(s)) == s` for every key short enough (below).
- An encoded value never contains `|`, so in `join_key(stream, item_id)` the part before the first
  `|` is the stream's, and `prefix_range(stream)` spans exactly that stream's rows.
- A `%` in an encoded value is always followed by two hex digits or by `~`, so a key such as `%id`
  (the subscription index partition) cannot collide with any encoded value.
- A value whose encoding exceeds `MAX_KEY_UNITS` (UTF-16 code units) keeps its first part and gets a
  hash suffix (`%~` + 40 hex digits) instead of the rest: stable and collision-free in practice, but
  not reversible. Every record also stores its original values as columns, so nothing needs to
  decode such a key.
"""

from __future__ import annotations

import hashlib
import re

SEPARATOR = "|"
# The next character after SEPARATOR: `[prefix + SEPARATOR, prefix + PREFIX_END)` spans a prefix.
PREFIX_END = chr(ord(SEPARATOR) + 1)
# Azure documents keys of "1 KiB"; read as 512 UTF-16 units, two joined values still fit.
MAX_KEY_UNITS = 250
_HASH_MARK = "%~"
_KEEP = MAX_KEY_UNITS - len(_HASH_MARK) - 40

_MUST_ESCAPE = re.compile(r"[%/\\#?|\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_HEX_ESCAPE = re.compile(r"(?:%[0-9A-F]{2})+")


def encode_key(value: str) -> str:
    """A legal Azure Table key for `value` (see the module docstring)."""

    out = _MUST_ESCAPE.sub(lambda m: _escape(m.group(0)), value)
    if _units(out) <= MAX_KEY_UNITS:
        return out
    head: list[str] = []
    used = 0
    for ch in value:  # whole characters only: never split a %XX escape or a surrogate pair
        piece = _escape(ch) if _MUST_ESCAPE.match(ch) else ch
        used += _units(piece)
        if used > _KEEP:
            break
        head.append(piece)
    digest = hashlib.sha1(value.encode("utf-8", "surrogatepass")).hexdigest()
    return "".join(head) + _HASH_MARK + digest


def _escape(ch: str) -> str:
    return "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))


def _units(text: str) -> int:
    """Length in UTF-16 code units (how Azure measures keys)."""
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def decode_key(key: str) -> str:
    """The value `encode_key` encoded. A key typed by hand (no escapes) decodes to itself."""

    def unescape(match: re.Match[str]) -> str:
        raw = bytes.fromhex(match.group(0).replace("%", ""))
        try:
            return raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:  # not ours: leave a hand-typed key as it is
            return match.group(0)

    return _HEX_ESCAPE.sub(unescape, key)


def join_key(*values: str) -> str:
    """One key from several values (`stream|item id`), each encoded."""

    return SEPARATOR.join(encode_key(v) for v in values)


def prefix_range(*values: str) -> tuple[str, str]:
    """`(low, high)`: the keys `k` with `low <= k < high` are those `join_key(*values, ...)` made."""

    prefix = join_key(*values) + SEPARATOR
    return prefix, prefix[:-1] + PREFIX_END


# SyncKeys partitions: 4, named "0" to "3" (the key's SHA-256 modulo 4). A page's key rows are written in
# one entity-group transaction per partition, so 4 per page of 100; with 256 partitions (the first two hex
# digits, as before) nearly every key had a partition of its own on a page, so a request each, and with
# 16 a page took 16 transactions (measured: 16 cost about a third more CPU in the backfill benchmark).
# Reads stay point reads, one per key, whatever the partitioning (an `or` of RowKeys is a partition scan
# in Azure, and these partitions only grow). The price of 4 is hotter partitions: Azure serves about
# 2,000 entities/s per partition, so SyncKeys carries about 8,000 key reads and writes a second, about
# 4,000 journals/s across the organisation (one read and one write each), far above what a CRM accepts.
# A busier partition answers 503 ServerBusy, which the SDK retries.
KEY_PARTITIONS = 4


def key_partition(key: str) -> str:
    """The SyncKeys partition of a global key (internetMessageId, appointment key ...)."""

    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return format(int(digest[:8], 16) % KEY_PARTITIONS, "x")
