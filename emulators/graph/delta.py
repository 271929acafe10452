"""Delta rounds over a ChangeLog: opaque self-contained tokens, sync-state generations (only the newest
few stay valid, older ones answer 410 SyncStateNotFound), and absolute next/delta links."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from emulators.graph.protocol import GraphError, Request
from emulators.graph.store import ChangeLog

KEEP_GENERATIONS = 3
SCAN_LIMIT = 400  # log entries looked at per page beyond the page size; a page can come back empty


@dataclass
class SyncState:
    user_id: str
    generation: int = 0
    expired: bool = False


@dataclass
class Cursor:
    """What a token carries. `base`: changes after this seq belong to the round; `pos`: resume after this
    seq; `high`: the round ends at this seq (it grows while the round runs, so an item changed mid-round
    can come twice in one round, as Graph's do); `origin`: the seq when the round began; `sent`: items
    returned so far this round."""

    state: str
    generation: int
    collection: str
    base: int
    pos: int
    high: int
    sent: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    origin: int = 0

    def initial(self, seq: int) -> bool:
        """An entry that is part of the initial snapshot: removed items are left out, not reported."""
        return self.base == 0 and seq <= self.origin


class SyncStates:
    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.states: dict[str, SyncState] = {}
        self.counter = 0

    def start(self, user_id: str) -> str:
        self.counter += 1
        sid = f"{self.counter:x}"
        self.states[sid] = SyncState(user_id)
        return sid

    def expire_user(self, user_id: str) -> int:
        n = 0
        for st in self.states.values():
            if st.user_id == user_id and not st.expired:
                st.expired = True
                n += 1
        return n

    def encode(self, c: Cursor) -> str:
        raw = json.dumps(
            [
                self.epoch,
                c.state,
                c.generation,
                c.collection,
                c.base,
                c.pos,
                c.high,
                c.sent,
                c.options,
                c.origin,
            ],
            separators=(",", ":"),
        ).encode()
        return base64.urlsafe_b64encode(zlib.compress(raw)).decode().rstrip("=")

    def decode(self, token: str, user_id: str) -> Cursor:
        """Validate the token's sync state and generation, and advance the state's generation."""
        try:
            raw = zlib.decompress(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            epoch, sid, gen, coll, base, pos, high, sent, options, origin = json.loads(raw)
        except (ValueError, zlib.error, TypeError) as exc:
            raise GraphError(400, "ErrorInvalidUrlQuery", "The delta or skip token is malformed.") from exc
        st = self.states.get(sid)
        if epoch != self.epoch or st is None or st.user_id != user_id or st.expired:
            raise sync_state_not_found(gen, st.generation if st else gen)
        if gen <= st.generation - KEEP_GENERATIONS:
            raise sync_state_not_found(gen, st.generation)
        return Cursor(sid, gen, coll, base, pos, high, sent, options, origin)

    def issue(self, c: Cursor) -> str:
        """A link one generation after the one it was served from. Fetching the same link again gives
        the same generation; links more than KEEP_GENERATIONS behind the newest answer 410."""
        st = self.states[c.state]
        c.generation += 1
        st.generation = max(st.generation, c.generation)
        return self.encode(c)


def sync_state_not_found(gen: int, highest: int) -> GraphError:
    kept = "".join(f"[{g}]" for g in range(highest, max(highest - KEEP_GENERATIONS, 0), -1))
    return GraphError(
        410,
        "SyncStateNotFound",
        f"The sync state generation is not found; generation={gen};[highest={highest}]{kept}.",
    )


def page_size(req: Request, default: int = 10) -> int:
    raw = req.prefer.get("odata.maxpagesize", "")
    try:
        n = int(raw)
    except ValueError:
        return default
    return max(1, n)


def token_from(req: Request) -> str:
    return req.query.get("$deltatoken") or req.query.get("$skiptoken") or ""


@dataclass
class Page:
    value: list[dict[str, Any]]
    next_link: str = ""
    delta_link: str = ""

    def body(self, context: str) -> dict[str, Any]:
        out: dict[str, Any] = {"@odata.context": context}
        if self.next_link:
            out["@odata.nextLink"] = self.next_link
        else:
            out["@odata.deltaLink"] = self.delta_link
        out["value"] = self.value
        return out


Emit = Callable[[int, str, str, Cursor], "list[dict[str, Any]] | None"]


def run_page(
    states: SyncStates,
    log: ChangeLog,
    cursor: Cursor,
    *,
    limit: int,
    link: str,
    emit: Emit,
    cap: int = 0,
    value: list[dict[str, Any]] | None = None,
) -> Page:
    """Serve one page of a round. `emit(seq, key, kind, cursor)` turns a live entry into zero or more
    items (None/[] to skip). `cap` > 0 ends the round once that many items were sent (the 5,000 cap of a
    filtered message delta, and `$top`); the rest of the round's initial contents is then never
    delivered, as Graph does. Changes made while a capped first round ran come in the next round (its
    deltaLink resumes from where the round began), so a capped round loses nothing new. `value`: items
    already on this page (served by `run_ordered_page`)."""
    value = [] if value is None else value
    scanned = 0
    pos = cursor.pos
    finished = True
    for seq, key, kind in log.after(cursor.pos):
        if seq > cursor.high:
            break
        if cap and cursor.sent >= cap:
            break
        if len(value) >= limit or scanned >= limit + SCAN_LIMIT:
            finished = False
            break
        scanned += 1
        pos = seq
        if not kind:
            continue
        items = emit(seq, key, kind, cursor)
        if items:
            value.extend(items)
            cursor.sent += len(items)
    if finished and cap and cursor.sent >= cap and value:
        finished = False  # Graph hands out one more (empty) page before the deltaLink
    cursor.pos = pos
    if not finished:
        return Page(value, next_link=f"{link}?$skiptoken={quote(states.issue(cursor))}")
    # a first round ended by its cap did not deliver the changes made while it ran: the next round does
    base = cursor.origin if cap and cursor.sent >= cap and cursor.base == 0 else cursor.high
    options = {k: v for k, v in cursor.options.items() if k != "after"}
    delta = Cursor(cursor.state, cursor.generation, cursor.collection, base, base, -1, 0, options, base)
    token = quote(states.issue(delta))
    # Classify links by property name, never by token name: every other deltaLink uses $skiptoken (DQM ex. 2).
    name = "$skiptoken" if delta.generation % 2 == 0 else "$deltatoken"
    return Page(value, delta_link=f"{link}?{name}={token}")


def run_ordered_page(
    states: SyncStates,
    log: ChangeLog,
    cursor: Cursor,
    *,
    ordered: Sequence[tuple[Any, str, int]],
    limit: int,
    link: str,
    emit: Emit,
    cap: int = 0,
    encode: Callable[[Any], str] = str,
    decode: Callable[[str], Any] = str,
) -> Page:
    """A page of a first round with `$orderby`: the initial contents in the order of `ordered`
    ((sort key, key, seq), sorted descending), resuming after the last one served (kept in the token
    as `options["after"]`, the sort key as `encode` writes it), then the changes made while the round
    ran, in log order (`run_page`). The cap counts items in that order, so a capped round returns the
    first `cap` of them."""
    after = cursor.options.get("after")
    if cursor.base != 0 or after == "done":
        return run_page(states, log, cursor, limit=limit, link=link, emit=emit, cap=cap)
    value: list[dict[str, Any]] = []
    scanned = 0
    resume = (decode(after[0]), after[1]) if after is not None else None
    for sort_key, key, seq in ordered:
        if resume is not None and (sort_key, key) >= resume:
            continue
        if cap and cursor.sent >= cap:
            break
        if len(value) >= limit or scanned >= limit + SCAN_LIMIT:
            return Page(value, next_link=f"{link}?$skiptoken={quote(states.issue(cursor))}")
        scanned += 1
        cursor.options["after"] = [encode(sort_key), key]
        items = emit(seq, key, "upsert", cursor)
        if items:
            value.extend(items)
            cursor.sent += len(items)
    cursor.options["after"] = "done"
    cursor.pos = max(cursor.pos, cursor.origin)  # the initial contents are done: changes since the start
    return run_page(states, log, cursor, limit=limit, link=link, emit=emit, cap=cap, value=value)


def begin(states: SyncStates, user_id: str, collection: str, high: int, options: dict[str, Any]) -> Cursor:
    return Cursor(states.start(user_id), 0, collection, 0, 0, high, 0, options, high)


def resume(states: SyncStates, req: Request, user_id: str, high: int) -> Cursor | None:
    """The cursor of a next/delta link, or None for a first request. A deltaLink opens a new round."""
    token = token_from(req)
    if not token:
        return None
    c = states.decode(token, user_id)
    if c.high == -1:  # a deltaLink: a new round from its base up to now
        c.origin = high
    c.high = max(c.high, high)  # changes made while the round runs join it
    return c
