"""The `ContactsSide` contract (shared/ports/graph.py): the owned Outlook contact folder as the contacts
stream relies on it.

Runs against the real adapter (`GraphContacts`, msgraph-sdk → the Graph emulator over HTTP) and the
in-memory fake the model-based test uses (`tests/model/contactbook.py`). The fake may be used only
because it passes this suite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import pytest

from emulators.graph.launcher import GraphEmulator
from shared.errors import DeltaExpired, GraphError, GraphNotFound, GraphThrottled, OutlookChanged
from shared.graph.contacts import GraphContacts
from shared.model import ContactFields, OutlookChange, OutlookContactRemoved, OutlookItem, Page
from shared.ports.graph import ContactsSide
from tests.contract.graph_harness import EmulatedGraph, harness_of, quick_sleep
from tests.model.contactbook import InMemoryContacts

ANN = "ann@contoso.com"
PAGE = 3
FOLDER = "CRM Contacts"


class ContactsHarness(Protocol):
    side: ContactsSide

    def add_user(self, upn: str) -> None: ...
    def make_folder(self, name: str) -> str: ...
    def delete_folder(self, folder_id: str) -> None: ...
    def add(self, folder_id: str, email: str, **fields: Any) -> str:
        """The user adds a contact (Graph names: givenName, jobTitle ...). Returns its id."""

    def edit(self, folder_id: str, contact_id: str, **fields: Any) -> None: ...
    def delete(self, folder_id: str, contact_id: str) -> None: ...
    def expire(self) -> None: ...
    def fault(self, status: int, *, retry_after: str | None = None, count: int = 1) -> None:
        """The next `count` delta reads answer `status`."""


_NAMES = {
    "givenName": "given_name", "surname": "surname", "jobTitle": "job_title", "department": "department",
    "displayName": "display_name", "mobilePhone": "mobile_phone", "companyName": "company",
}  # fmt: skip


class MemoryContacts:
    def __init__(self) -> None:
        self.fake = InMemoryContacts(page_size=PAGE, sleep=quick_sleep)
        self.side: ContactsSide = self.fake

    def add_user(self, upn: str) -> None:
        self.fake.add_user(upn)

    def make_folder(self, name: str) -> str:
        return self.fake.make_folder(ANN, name)

    def delete_folder(self, folder_id: str) -> None:
        self.fake.delete_folder(ANN, folder_id)

    def add(self, folder_id: str, email: str, **fields: Any) -> str:
        values = {_NAMES[k]: v for k, v in fields.items()}
        return self.fake.add_contact(ANN, folder_id, ContactFields(emails=(email,), **values))

    def edit(self, folder_id: str, contact_id: str, **fields: Any) -> None:
        self.fake.edit_contact(ANN, folder_id, contact_id, **{_NAMES[k]: v for k, v in fields.items()})

    def delete(self, folder_id: str, contact_id: str) -> None:
        self.fake.delete_contact(ANN, folder_id, contact_id)

    def expire(self) -> None:
        self.fake.expire_delta_tokens(ANN)

    def fault(self, status: int, *, retry_after: str | None = None, count: int = 1) -> None:
        self.fake.fault(status, count=count, operation="read_page", retry_after=retry_after)


class EmulatedContacts(EmulatedGraph):
    def __init__(self, graph: GraphEmulator) -> None:
        super().__init__(graph, "/contacts/delta")
        self.side = GraphContacts(self.client, self.caller, page_size=PAGE)

    def make_folder(self, name: str) -> str:
        return str(self._outlook("POST", f"/users/{ANN}/contactFolders", {"displayName": name})["id"])

    def delete_folder(self, folder_id: str) -> None:
        self._outlook("DELETE", f"/users/{ANN}/contactFolders/{folder_id}")

    def add(self, folder_id: str, email: str, **fields: Any) -> str:
        body = {"emailAddresses": [{"address": email, "name": email}], **fields}
        return str(self._outlook("POST", f"/users/{ANN}/contactFolders/{folder_id}/contacts", body)["id"])

    def edit(self, folder_id: str, contact_id: str, **fields: Any) -> None:
        self._outlook("PATCH", f"/users/{ANN}/contacts/{contact_id}", fields)

    def delete(self, folder_id: str, contact_id: str) -> None:
        self._outlook("DELETE", f"/users/{ANN}/contacts/{contact_id}")

    def expire(self) -> None:
        self.expire_tokens(ANN)


@pytest.fixture(params=["memory", "emulator"])
async def outlook(request: pytest.FixtureRequest) -> AsyncIterator[ContactsHarness]:
    async with harness_of(request.param, request, MemoryContacts, EmulatedContacts) as harness:
        harness.add_user(ANN)
        yield harness


async def round_of(side: ContactsSide, folder: str, link: str = "") -> tuple[list[Page], str]:
    pages: list[Page] = []
    while True:
        page = await side.read_page(ANN, folder, link)
        pages.append(page)
        assert bool(page.next_link) != bool(page.delta_link), "a page carries exactly one link"
        if page.delta_link:
            return pages, page.delta_link
        link = page.next_link
        assert len(pages) < 50


def by_id(pages: list[Page]) -> dict[str, OutlookChange]:
    """The last change per id (Graph may repeat an item within a round)."""
    found: dict[str, OutlookChange] = {}
    for change in (c for p in pages for c in p.changes):
        key = change.contact.id if isinstance(change, OutlookItem) else change.id
        found.pop(key, None)
        found[key] = change
    return found


def item(change: OutlookChange | None) -> OutlookItem:
    assert isinstance(change, OutlookItem), change
    return change


async def test_the_owned_folder_is_created_once_and_found_again_by_name(outlook: ContactsHarness) -> None:
    outlook.make_folder("Other")
    made = await outlook.side.owned_folder(ANN, FOLDER)
    assert await outlook.side.owned_folder(ANN, FOLDER.upper()) == made
    assert await outlook.side.owned_folder(ANN, "Other") != made


async def test_a_first_round_pages_through_the_folder_only(outlook: ContactsHarness) -> None:
    folder = await outlook.side.owned_folder(ANN, FOLDER)
    other = outlook.make_folder("Private")
    ids = [
        outlook.add(folder, f"p{n}@fabrikam.example", givenName=f"P{n}", jobTitle="Buyer") for n in range(7)
    ]
    outlook.add(other, "elsewhere@fabrikam.example")
    pages, delta = await round_of(outlook.side, folder)
    found = by_id(pages)
    assert sorted(found) == sorted(ids) and len(pages) >= 3 and all(len(p.changes) <= PAGE for p in pages)
    first = item(found[ids[0]])
    assert (
        first.contact.fields.emails == ("p0@fabrikam.example",) and first.contact.fields.job_title == "Buyer"
    )
    assert first.contact.fields.display_name == "P0" and first.contact.change_key and first.crm_tag == ""
    again, _ = await round_of(outlook.side, folder, delta)
    assert by_id(again) == {}


async def test_edits_and_deletes_come_in_the_next_round_and_a_change_key_moves_on(
    outlook: ContactsHarness,
) -> None:
    folder = await outlook.side.owned_folder(ANN, FOLDER)
    kept, edited, gone = (outlook.add(folder, f"{n}@fabrikam.example") for n in ("kept", "edited", "gone"))
    pages, delta = await round_of(outlook.side, folder)
    before = item(by_id(pages)[edited]).contact.change_key
    outlook.edit(folder, edited, jobTitle="Head of Buying", mobilePhone="+1 555 0100")
    outlook.delete(folder, gone)
    added = outlook.add(folder, "new@fabrikam.example")
    pages, _ = await round_of(outlook.side, folder, delta)
    found = by_id(pages)
    assert set(found) == {edited, gone, added}
    assert found[gone] == OutlookContactRemoved(gone)
    now = item(found[edited]).contact
    assert (now.fields.job_title, now.fields.mobile_phone) == ("Head of Buying", "+1 555 0100")
    assert now.change_key != before
    assert await outlook.side.get(ANN, folder, gone) is None
    fetched = await outlook.side.get(ANN, folder, kept)
    assert fetched is not None and fetched.contact.fields.emails == ("kept@fabrikam.example",)


async def test_a_contact_deleted_before_the_first_round_is_not_reported(outlook: ContactsHarness) -> None:
    folder = await outlook.side.owned_folder(ANN, FOLDER)
    outlook.delete(folder, outlook.add(folder, "brief@fabrikam.example"))
    pages, _ = await round_of(outlook.side, folder)
    assert by_id(pages) == {}


async def test_our_creations_carry_our_stamp_and_a_derived_display_name(outlook: ContactsHarness) -> None:
    folder = await outlook.side.owned_folder(ANN, FOLDER)
    fields = ContactFields(
        given_name="Bob", surname="Buyer", emails=("bob@fabrikam.example",), job_title="Buyer"
    )
    made = await outlook.side.create(ANN, folder, fields, crm_id="p-000042", notes=False)
    assert made.crm_tag == "p-000042" and made.contact.fields.display_name == "Bob Buyer"
    pages, _ = await round_of(outlook.side, folder)
    read = item(by_id(pages)[made.contact.id])
    assert read.crm_tag == "p-000042" and read.contact.change_key == made.contact.change_key
    assert read.contact.fields.job_title == "Buyer" and read.contact.fields.emails == (
        "bob@fabrikam.example",
    )
    fetched = await outlook.side.get(ANN, folder, made.contact.id)
    assert fetched is not None and fetched.crm_tag == "p-000042"


async def test_an_update_based_on_an_old_change_key_is_refused(outlook: ContactsHarness) -> None:
    folder = await outlook.side.owned_folder(ANN, FOLDER)
    contact_id = outlook.add(folder, "bob@fabrikam.example", givenName="Bob", displayName="Bob")
    pages, delta = await round_of(outlook.side, folder)
    seen = item(by_id(pages)[contact_id]).contact
    outlook.edit(folder, contact_id, jobTitle="Edited in Outlook")
    wanted = ContactFields(
        given_name="Bob", display_name="Bob", emails=seen.fields.emails, department="Sales"
    )
    with pytest.raises(OutlookChanged):
        await outlook.side.update(ANN, folder, contact_id, wanted, change_key=seen.change_key, notes=False)
    current = await outlook.side.get(ANN, folder, contact_id)
    assert current is not None and current.contact.fields.job_title == "Edited in Outlook"
    written = await outlook.side.update(
        ANN, folder, contact_id, wanted, change_key=current.contact.change_key, notes=False
    )
    assert written.contact.change_key != current.contact.change_key
    assert (written.contact.fields.department, written.contact.fields.job_title) == ("Sales", "")
    pages, _ = await round_of(outlook.side, folder, delta)
    assert item(by_id(pages)[contact_id]).contact.change_key == written.contact.change_key


async def test_our_delete_is_reported_and_deleting_again_is_not_an_error(outlook: ContactsHarness) -> None:
    folder = await outlook.side.owned_folder(ANN, FOLDER)
    contact_id = outlook.add(folder, "bob@fabrikam.example")
    _, delta = await round_of(outlook.side, folder)
    await outlook.side.delete(ANN, folder, contact_id)
    await outlook.side.delete(ANN, folder, contact_id)
    pages, _ = await round_of(outlook.side, folder, delta)
    assert by_id(pages) == {contact_id: OutlookContactRemoved(contact_id)}


async def test_more_than_outlook_holds_is_refused(outlook: ContactsHarness) -> None:
    folder = await outlook.side.owned_folder(ANN, FOLDER)
    many = ContactFields(display_name="Max", emails=tuple(f"m{n}@many.example" for n in range(4)))
    with pytest.raises(GraphError) as raised:
        await outlook.side.create(ANN, folder, many, crm_id="p-1", notes=False)
    assert raised.value.status == 400


async def test_an_expired_sync_state_or_a_deleted_folder_ends_the_link(outlook: ContactsHarness) -> None:
    folder = await outlook.side.owned_folder(ANN, FOLDER)
    for n in range(PAGE + 1):
        outlook.add(folder, f"p{n}@fabrikam.example")
    first = await outlook.side.read_page(ANN, folder, "")
    assert first.next_link
    outlook.expire()
    with pytest.raises(DeltaExpired):
        await outlook.side.read_page(ANN, folder, first.next_link)
    pages, delta = await round_of(outlook.side, folder)
    assert len(by_id(pages)) == PAGE + 1
    outlook.delete_folder(folder)
    with pytest.raises((DeltaExpired, GraphNotFound)):
        await outlook.side.read_page(ANN, folder, delta)
    with pytest.raises(GraphNotFound):
        await outlook.side.read_page(ANN, folder, "")
    again = await outlook.side.owned_folder(ANN, FOLDER)
    assert again != folder
    pages, _ = await round_of(outlook.side, again)
    assert by_id(pages) == {}


@pytest.mark.parametrize("retry_after", ["0.2", None], ids=["fractional", "missing"])
@pytest.mark.parametrize("status", [429, 503])
async def test_short_throttling_is_ridden_out(
    outlook: ContactsHarness, status: int, retry_after: str | None
) -> None:
    folder = await outlook.side.owned_folder(ANN, FOLDER)
    wanted = outlook.add(folder, "bob@fabrikam.example")
    outlook.fault(status, retry_after=retry_after, count=2)
    pages, _ = await round_of(outlook.side, folder)
    assert list(by_id(pages)) == [wanted]


async def test_a_long_retry_after_is_handed_to_the_engine(outlook: ContactsHarness) -> None:
    folder = await outlook.side.owned_folder(ANN, FOLDER)
    outlook.add(folder, "bob@fabrikam.example")
    outlook.fault(429, retry_after="3600")
    with pytest.raises(GraphThrottled) as raised:
        await outlook.side.read_page(ANN, folder, "")
    assert raised.value.retry_after is not None and raised.value.retry_after >= 3600
