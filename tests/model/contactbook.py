"""`InMemoryContacts`: the engine's `ContactsSide` port (the owned Outlook contact folder) in memory,
with Graph's contact semantics as the emulator reproduces them (docs/graph-behaviour.md §1.4, §4.3, §4.5).

Held to the same contract suite as the real `GraphContacts` over the Graph emulator
(`tests/contract/test_contacts_side.py`):

- top-level contact folders found by name (case-insensitive) or created;
- per-folder delta rounds: the first request lists the folder's contacts in pages; a deltaLink opens
  the next round with what was created or edited since and an `@removed` entry for what was deleted;
  changes made while a round runs join it; expired sync state answers 410 SyncStateNotFound, and a link
  to a folder that is gone too;
- writes: create (201, the display name derived as Outlook derives it when empty, our CRM id stamped),
  update with If-Match on the changeKey (412 `OutlookChanged` when it moved on; the collections replaced
  whole, notes kept unless written), delete (gone is not an error); every write a new changeKey;
- Outlook's caps (three e-mail addresses, two business phones) answer 400;
- injected faults (429/503 with Retry-After, 410) go through the product's `GraphCaller`.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeVar

from shared.errors import GraphError, GraphNotFound, OutlookChanged
from shared.graph.client import GraphCaller
from shared.model import (
    ContactFields,
    OutlookChange,
    OutlookContact,
    OutlookContactRemoved,
    OutlookItem,
    Page,
)
from tests.model.faults import FakeGraph, api_error, decode, encode

PAGE_SIZE = 100
T = TypeVar("T")


@dataclass
class _Contact:
    id: str
    fields: ContactFields
    change_key: str
    modified: datetime
    crm_tag: str = ""


@dataclass
class _Folder:
    id: str
    name: str
    contacts: dict[str, _Contact] = field(default_factory=dict)
    log: dict[str, tuple[int, str]] = field(default_factory=dict)  # contact id -> (seq, upsert|removed)


@dataclass
class _State:
    user: str
    folder: str
    expired: bool = False


def derived_display_name(fields: ContactFields) -> str:
    """Outlook's own name for a contact created without one (the emulator's `generated_display_name`)."""
    name = " ".join(p for p in (fields.given_name, fields.surname) if p)
    return name or fields.company or (fields.emails[0] if fields.emails else "")


def clean(fields: ContactFields) -> ContactFields:
    """What a read gives back: text trimmed, empty addresses and phones dropped (`to_fields`)."""
    return replace(
        fields,
        given_name=fields.given_name.strip(),
        surname=fields.surname.strip(),
        display_name=fields.display_name.strip(),
        emails=tuple(e.strip() for e in fields.emails if e.strip()),
        business_phones=tuple(p.strip() for p in fields.business_phones if p.strip()),
        mobile_phone=fields.mobile_phone.strip(),
        company=fields.company.strip(),
        job_title=fields.job_title.strip(),
        department=fields.department.strip(),
        notes=fields.notes.strip(),
    )


class InMemoryContacts(FakeGraph):
    def __init__(
        self,
        *,
        page_size: int = PAGE_SIZE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self.page_size = page_size
        self._clock = clock
        self._caller = GraphCaller(sleep=sleep) if sleep is not None else GraphCaller()
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._folders: dict[str, dict[str, _Folder]] = {}  # user -> folder id -> folder
        self._states: dict[str, _State] = {}

    # -- what tests do (the user's Outlook, and Graph's own behaviour) -----------------------------

    def add_user(self, upn: str) -> None:
        self._folders.setdefault(upn.lower(), {})

    def make_folder(self, upn: str, name: str) -> str:
        folder = _Folder(f"AAMkAGcfolder{next(self._ids):06d}", name)
        self._folders[upn.lower()][folder.id] = folder
        return folder.id

    def delete_folder(self, upn: str, folder_id: str) -> None:
        del self._folders[upn.lower()][folder_id]

    def add_contact(self, upn: str, folder_id: str, fields: ContactFields) -> str:
        """The user adds a contact in Outlook. Returns its id."""
        return self._create(upn.lower(), folder_id, fields, crm_tag="").id

    def edit_contact(self, upn: str, folder_id: str, contact_id: str, **changes: object) -> None:
        """The user edits fields in Outlook (a PATCH of those fields)."""
        contact = self._folders[upn.lower()][folder_id].contacts[contact_id]
        self._store(upn.lower(), folder_id, replace(contact, fields=replace(contact.fields, **changes)))  # type: ignore[arg-type]

    def delete_contact(self, upn: str, folder_id: str, contact_id: str) -> None:
        folder = self._folders[upn.lower()][folder_id]
        del folder.contacts[contact_id]
        folder.log[contact_id] = (next(self._seq), "removed")

    def contacts(self, upn: str, folder_id: str) -> dict[str, OutlookItem]:
        folder = self._folders[upn.lower()].get(folder_id)
        return {c.id: self._item(c) for c in folder.contacts.values()} if folder else {}

    def folder_named(self, upn: str, name: str) -> str:
        return next(
            (f.id for f in self._folders[upn.lower()].values() if f.name.lower() == name.strip().lower()), ""
        )

    # -- the port ----------------------------------------------------------------------------------

    async def owned_folder(self, user: str, name: str) -> str:
        def find_or_create() -> str:
            self.faults.gate(user, "owned_folder")
            return self.folder_named(user, name) or self.make_folder(user, name)

        return await self._call(user, find_or_create)

    async def read_page(self, user: str, folder_id: str, link: str) -> Page:
        return await self._call(user, lambda: self._serve_page(user.lower(), folder_id, link))

    async def get(self, user: str, folder_id: str, contact_id: str) -> OutlookItem | None:
        def read() -> OutlookItem:
            self.faults.gate(user, "get")
            contact = self._folder(user.lower(), folder_id).contacts.get(contact_id)
            if contact is None:
                raise api_error(404, "ErrorItemNotFound")
            return self._item(contact)

        try:
            return await self._call(user, read)
        except GraphNotFound:
            return None

    async def create(
        self, user: str, folder_id: str, fields: ContactFields, *, crm_id: str, notes: bool
    ) -> OutlookItem:
        def write() -> OutlookItem:
            self.faults.gate(user, "create")
            self._folder(user.lower(), folder_id)
            written = fields if notes else replace(fields, notes="")
            return self._item(self._create(user.lower(), folder_id, written, crm_tag=crm_id))

        return await self._call(user, write)

    async def update(
        self,
        user: str,
        folder_id: str,
        contact_id: str,
        fields: ContactFields,
        *,
        change_key: str,
        notes: bool,
    ) -> OutlookItem:
        def write() -> OutlookItem:
            self.faults.gate(user, "update")
            contact = self._folder(user.lower(), folder_id).contacts.get(contact_id)
            if contact is None:
                raise api_error(404, "ErrorItemNotFound")
            if change_key and change_key != contact.change_key:
                raise api_error(412, "ErrorIrresolvableConflict")
            written = fields if notes else replace(fields, notes=contact.fields.notes)
            self._check_caps(written)
            return self._item(self._store(user.lower(), folder_id, replace(contact, fields=clean(written))))

        try:
            return await self._call(user, write)
        except GraphError as error:
            if error.status == 412:
                raise OutlookChanged(str(error), status=412, code=error.code) from error
            raise

    async def delete(self, user: str, folder_id: str, contact_id: str) -> None:
        def remove() -> None:
            self.faults.gate(user, "delete")
            folder = self._folder(user.lower(), folder_id)
            if contact_id not in folder.contacts:
                raise api_error(404, "ErrorItemNotFound")
            self.delete_contact(user, folder_id, contact_id)

        try:
            await self._call(user, remove)
        except GraphNotFound:
            return

    # -- inside ------------------------------------------------------------------------------------

    async def _call(self, user: str, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return await self._caller.call(user, run)

    def _folder(self, user: str, folder_id: str) -> _Folder:
        folder = self._folders.get(user, {}).get(folder_id)
        if folder is None:
            raise api_error(404, "ErrorItemNotFound")
        return folder

    @staticmethod
    def _check_caps(fields: ContactFields) -> None:
        if len(fields.emails) > 3 or len(fields.business_phones) > 2:
            raise api_error(400, "ErrorInvalidArgument")

    def _create(self, user: str, folder_id: str, fields: ContactFields, *, crm_tag: str) -> _Contact:
        self._check_caps(fields)
        written = clean(fields)
        if not written.display_name:
            written = replace(written, display_name=derived_display_name(written))
        contact = _Contact(f"AAMkAGcontact{next(self._ids):06d}", written, "", self._clock(), crm_tag)
        return self._store(user, folder_id, contact)

    def _store(self, user: str, folder_id: str, contact: _Contact) -> _Contact:
        folder = self._folders[user][folder_id]
        stored = replace(contact, change_key=f"EQAAAB{next(self._ids):08d}", modified=self._clock())
        folder.contacts[stored.id] = stored
        folder.log[stored.id] = (next(self._seq), "upsert")
        return stored

    @staticmethod
    def _item(contact: _Contact) -> OutlookItem:
        return OutlookItem(
            OutlookContact(contact.id, contact.change_key, contact.fields), contact.modified, contact.crm_tag
        )

    def _serve_page(self, user: str, folder_id: str, link: str) -> Page:
        self.faults.gate(user, "read_page")
        high_now = next(self._seq)
        if not link:
            self._folder(user, folder_id)  # a first request on a folder that is gone: 404
            state_id = f"c{len(self._states) + 1:x}"
            self._states[state_id] = _State(user, folder_id)
            token = {"s": state_id, "b": 0, "p": 0, "h": high_now, "o": high_now}
        else:
            token = decode(link)
            state = self._states.get(str(token["s"]))
            if state is None or state.expired or state.user != user or state.folder != folder_id:
                raise api_error(410, "SyncStateNotFound")
            if state.folder not in self._folders.get(user, {}):
                raise api_error(410, "SyncStateNotFound")  # the folder is gone (as the emulator answers)
            if token["h"] == -1:  # a deltaLink: a new round from its base up to now
                token["o"] = high_now
            token["h"] = max(int(token["h"]), high_now)
        folder = self._folders[user][folder_id]
        entries = sorted(
            (seq, kind, cid) for cid, (seq, kind) in folder.log.items() if token["p"] < seq <= token["h"]
        )
        value: list[OutlookChange] = []
        pos = token["p"]
        finished = True
        for seq, kind, cid in entries:
            if len(value) >= self.page_size:
                finished = False
                break
            pos = seq
            initial = token["b"] == 0 and seq <= token["o"]
            contact = folder.contacts.get(cid)
            if kind == "removed" or contact is None:
                if not initial:
                    value.append(OutlookContactRemoved(cid))
                continue
            value.append(self._item(contact))
        if not finished:
            return Page(value, next_link=encode({**token, "p": pos}))
        delta = {"s": token["s"], "b": token["h"], "p": token["h"], "h": -1, "o": token["h"]}
        return Page(value, delta_link=encode(delta))
