"""`InMemoryMailboxes`: the engine's `MailSource` port in memory, with Graph's message-delta semantics.

It exists for the model-based test, which needs thousands of runs a minute. It is held to the same
contract suite as the real `GraphMailReader` over the Graph emulator (`tests/contract/test_mail_source.py`),
so it cannot drift from what the engine meets in production:

- per-folder delta rounds: the first request (empty link) returns the folder's messages received since
  `since`, in pages of `page_size`; every page carries a nextLink or (the last one) a deltaLink;
- a deltaLink opens the next round: what changed in the folder since (new, edited, read-state, arrived by
  move) and an `@removed` entry for what left it (moved out or deleted); changes made while a round runs
  join it, so an item can come twice in one round;
- immutable ids: a message keeps its id across moves; A→B→A between two rounds surfaces in A only as an
  `@removed` (Graph's documented quirk, microsoft-graph-docs-contrib#72, which the emulator reproduces);
- expired sync state (`expire_delta_tokens`) and injected faults answer as Graph does (410
  SyncStateNotFound, 429/503 with Retry-After, 403 for a denied mailbox), raised as the SDK's `APIError`
  and translated by the product's own `GraphCaller`, so Retry-After handling is the real code's.

Links are opaque strings; `position(link)` reads one back for the test's "cursors never go backwards".
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.graph.client import GraphCaller
from shared.model import Address, MailMessage, MessageChange, MessageRemoved, Page
from tests.model.faults import FakeGraph, api_error, decode, encode

FOLDERS = ("inbox", "archive", "sentitems", "deleteditems")


@dataclass
class _Message:
    id: str
    folder: str
    visit: str  # this stay in its folder (a new one on every arrival, as Graph's REST id)
    value: MailMessage
    is_read: bool = False


@dataclass
class _Folder:
    # visit key -> (seq of its latest entry, kind "upsert" | "removed", immutable id)
    log: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    departures: dict[str, int] = field(default_factory=dict)  # immutable id -> seq it last left


@dataclass
class _State:
    user: str
    folder: str
    since: str
    expired: bool = False


class InMemoryMailboxes(FakeGraph):
    def __init__(
        self,
        *,
        page_size: int = 10,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self.page_size = page_size
        self._clock = clock
        self._caller = GraphCaller(sleep=sleep) if sleep is not None else GraphCaller()
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._users: dict[str, dict[str, _Folder]] = {}
        self._messages: dict[str, dict[str, _Message]] = {}
        self._states: dict[str, _State] = {}
        self.requests = 0

    # -- what tests do (Outlook's side and Graph's own behaviour) ----------------------------------

    def add_user(self, upn: str) -> None:
        self._users.setdefault(upn.lower(), {f: _Folder() for f in FOLDERS})
        self._messages.setdefault(upn.lower(), {})

    def deliver(
        self,
        upn: str,
        *,
        folder: str = "inbox",
        sender: str = "bob@fabrikam.example",
        to: tuple[str, ...] = (),
        cc: tuple[str, ...] = (),
        subject: str = "Quote",
        body_html: str = "<p>Hello</p>",
        internet_message_id: str = "",
        categories: tuple[str, ...] = (),
        received: datetime | None = None,
        sent: datetime | None = None,
    ) -> str:
        """A message arrives (or is filed) in a folder. Returns its immutable id."""
        user = upn.lower()
        message_id = f"AAkALgImm{next(self._ids):06d}"
        when = received or self._clock()
        value = MailMessage(
            id=message_id, internet_message_id=internet_message_id or f"<{message_id}@memory.example>",
            subject=subject, body_html=body_html, body_type="html", sender=Address(sender),
            to=tuple(Address(a) for a in (to or (upn,))), cc=tuple(Address(a) for a in cc),
            sent_at=sent or when, received_at=when, conversation_id=f"conv-{message_id}",
            categories=tuple(categories), is_draft=False, sensitivity="normal", attachments=(),
            has_attachments=False, folder_id=folder, change_key=self._change_key(),
        )  # fmt: skip
        message = _Message(message_id, folder, "", value)
        self._messages[user][message_id] = message
        self._arrive(user, message, folder)
        return message_id

    def set_categories(self, upn: str, message_id: str, categories: tuple[str, ...]) -> None:
        self._edit(upn, message_id, categories=tuple(categories))

    def mark_read(self, upn: str, message_id: str, is_read: bool = True) -> None:
        message = self._messages[upn.lower()][message_id]
        message.is_read = is_read
        self._edit(upn, message_id)

    def move(self, upn: str, message_id: str, destination: str) -> None:
        user = upn.lower()
        message = self._messages[user][message_id]
        if message.folder == destination:
            return
        source = self._users[user][message.folder]
        seq = next(self._seq)
        source.log[message.visit] = (seq, "removed", message_id)
        source.departures[message_id] = seq
        message.value = replace(message.value, change_key=self._change_key())
        self._arrive(user, message, destination)

    def delete(self, upn: str, message_id: str) -> None:
        user = upn.lower()
        message = self._messages[user].pop(message_id)
        self._users[user][message.folder].log[message.visit] = (next(self._seq), "removed", message_id)

    def folder_of(self, upn: str, message_id: str) -> str | None:
        message = self._messages[upn.lower()].get(message_id)
        return message.folder if message else None

    def messages(self, upn: str) -> dict[str, MailMessage]:
        return {m.id: m.value for m in self._messages[upn.lower()].values()}

    def deny(self, upn: str) -> None:
        self.faults.denied.add(upn.lower())

    def allow(self, upn: str) -> None:
        self.faults.denied.discard(upn.lower())

    def covered(self, upn: str, folder: str, link: str) -> set[str]:
        """Ids of the messages in `folder` whose latest change a client holding `link` has been given
        (its position is past them): what a cursor saved with that link claims to have dealt with."""
        if not link:
            return set()
        position = int(decode(link)["p"])
        user = upn.lower()
        return {
            mid
            for visit, (seq, kind, mid) in self._users[user][folder].log.items()
            if kind == "upsert"
            and seq <= position
            and (m := self._messages[user].get(mid))
            and m.visit == visit
        }

    # -- the port ----------------------------------------------------------------------------------

    async def read_page(self, user: str, folder: str, link: str, since: datetime | None) -> Page:
        return await self._caller.call(user, lambda: self._serve_page(user.lower(), folder, link, since))

    async def get_message(self, user: str, message_id: str) -> MailMessage | None:
        async def get() -> MailMessage | None:
            self.faults.gate(user.lower(), "get_message")
            message = self._messages[user.lower()].get(message_id)
            if message is None:
                raise api_error(404, "ErrorItemNotFound")
            return message.value

        from shared.errors import GraphNotFound

        try:
            return await self._caller.call(user, get)
        except GraphNotFound:
            return None

    async def list_page(
        self, user: str, folder: str, link: str, since: datetime, until: datetime | None = None
    ) -> Page:
        """A plain listing of the folder's messages received since `since` and at or before `until`
        (its whole second, as Graph's second-precision times), oldest first, paged."""
        last = until.replace(microsecond=999999) if until is not None else None

        async def get() -> Page:
            self.faults.gate(user.lower(), "list_page")
            offset = int(decode(link)["list"]) if link else 0
            found = sorted(
                (m.value for m in self._messages[user.lower()].values() if m.folder == folder),
                key=lambda m: (m.received_at or since, m.id),
            )
            window = [
                m
                for m in found
                if m.received_at is None
                or (m.received_at >= since and (last is None or m.received_at <= last))
            ]
            page = window[offset : offset + self.page_size]
            more = offset + self.page_size < len(window)
            self.requests += 1
            return Page(list(page), next_link=encode({"list": offset + self.page_size}) if more else "")

        return await self._caller.call(user, get)

    async def folder_id(self, user: str, folder: str) -> str:
        async def get() -> str:
            self.faults.gate(user.lower(), "folder_id")
            if folder not in self._users.get(user.lower(), {}):
                raise api_error(404, "ErrorItemNotFound")
            return folder

        return await self._caller.call(user, get)

    # -- inside ------------------------------------------------------------------------------------

    async def _serve_page(self, user: str, folder_name: str, link: str, since: datetime | None) -> Page:
        self.faults.gate(user, "read_page")
        if user not in self._users:
            raise api_error(404, "ErrorInvalidUser")
        high_now = self._last_seq()
        if not link:
            state_id = f"{len(self._states) + 1:x}"
            self._states[state_id] = _State(
                user, folder_name, since.astimezone(UTC).isoformat() if since else ""
            )
            token = {"s": state_id, "b": 0, "p": 0, "h": high_now, "o": high_now}
        else:
            token = decode(link)
            state = self._states.get(str(token["s"]))
            if state is None or state.expired or state.user != user or state.folder != folder_name:
                raise api_error(410, "SyncStateNotFound")
            if token["h"] == -1:  # a deltaLink: a new round from its base up to now
                token["o"] = high_now
            token["h"] = max(int(token["h"]), high_now)
        state = self._states[str(token["s"])]
        folder = self._users[user][state.folder]
        since_at = datetime.fromisoformat(state.since) if state.since else None
        initial_round = token["b"] == 0
        entries = sorted(
            (seq, visit, kind, mid)
            for visit, (seq, kind, mid) in folder.log.items()
            if token["p"] < seq <= token["h"]
        )
        value: list[MessageChange] = []
        pos = token["p"]
        finished = True
        for seq, _visit, kind, mid in entries:
            if len(value) >= self.page_size:
                finished = False
                break
            pos = seq
            initial = initial_round and seq <= token["o"]
            if kind == "removed":
                if not initial:
                    value.append(MessageRemoved(id=mid))
                continue
            message = self._messages[user].get(mid)
            if message is None:
                continue
            received = message.value.received_at
            if since_at is not None and received is not None and received < since_at:
                continue
            if not initial and folder.departures.get(mid, 0) > token["b"]:
                continue  # A→B→A with immutable ids surfaces only as a delete in A
            value.append(message.value)
        self.requests += 1
        if not finished:
            return Page(value, next_link=encode({**token, "p": pos}))
        delta = {"s": token["s"], "b": token["h"], "p": token["h"], "h": -1, "o": token["h"]}
        return Page(value, delta_link=encode(delta))

    def _arrive(self, user: str, message: _Message, folder: str) -> None:
        message.folder = folder
        message.visit = f"{message.id}#{next(self._ids)}"
        message.value = replace(message.value, folder_id=folder)
        self._users[user][folder].log[message.visit] = (next(self._seq), "upsert", message.id)

    def _edit(self, upn: str, message_id: str, **changes: Any) -> None:
        user = upn.lower()
        message = self._messages[user][message_id]
        message.value = replace(message.value, change_key=self._change_key(), **changes)
        self._users[user][message.folder].log[message.visit] = (next(self._seq), "upsert", message_id)

    def _change_key(self) -> str:
        return f"CQAAAB{next(self._ids):08d}"

    def _last_seq(self) -> int:
        seq = next(self._seq)  # the counter only grows; reading it costs one number
        return seq
