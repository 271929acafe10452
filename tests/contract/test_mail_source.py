"""The `MailSource` contract (shared/ports/graph.py): message delta as the engine relies on it.

Runs against the real adapter (`GraphMailReader`, msgraph-sdk → the Graph emulator over HTTP) and the
in-memory fake the model-based test uses (`tests/model/mailbox.py`). The fake may be used only because
it passes this suite; when Graph's behaviour (and so the emulator's) changes, this suite says where
the fake has to follow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest

from emulators.graph.launcher import GraphEmulator
from shared.errors import DeltaExpired, GraphThrottled, MailboxDenied
from shared.graph.mail import GraphMailReader
from shared.model import MailMessage, MessageChange, MessageRemoved, Page
from shared.ports.graph import MailSource
from tests.contract.graph_harness import EmulatedGraph, harness_of, quick_sleep
from tests.model.mailbox import InMemoryMailboxes

ANN = "ann@contoso.com"
PAGE = 3


class MailHarness(Protocol):
    source: MailSource

    def add_user(self, upn: str) -> None: ...
    def deliver(self, upn: str, *, folder: str = "inbox", subject: str = "Quote", days_ago: float = 0,
                categories: tuple[str, ...] = (), internet_message_id: str = "") -> str: ...  # fmt: skip
    def set_categories(self, upn: str, message_id: str, categories: tuple[str, ...]) -> None: ...
    def mark_read(self, upn: str, message_id: str) -> None: ...
    def move(self, upn: str, message_id: str, destination: str) -> None: ...
    def delete(self, upn: str, message_id: str) -> None: ...
    def expire(self, upn: str) -> None: ...
    def fault(self, status: int, *, retry_after: str | None = None, count: int = 1) -> None:
        """The next `count` delta reads answer `status`."""

    def deny(self, upn: str) -> None: ...
    def allow(self, upn: str) -> None: ...


class MemoryMail:
    def __init__(self) -> None:
        self.fake = InMemoryMailboxes(page_size=PAGE, sleep=quick_sleep)
        self.source: MailSource = self.fake

    def add_user(self, upn: str) -> None:
        self.fake.add_user(upn)

    def deliver(self, upn: str, *, folder: str = "inbox", subject: str = "Quote", days_ago: float = 0,
                categories: tuple[str, ...] = (), internet_message_id: str = "") -> str:  # fmt: skip
        return self.fake.deliver(
            upn, folder=folder, subject=subject, categories=categories,
            received=datetime.now(UTC) - timedelta(days=days_ago), internet_message_id=internet_message_id,
        )  # fmt: skip

    def set_categories(self, upn: str, message_id: str, categories: tuple[str, ...]) -> None:
        self.fake.set_categories(upn, message_id, categories)

    def mark_read(self, upn: str, message_id: str) -> None:
        self.fake.mark_read(upn, message_id)

    def move(self, upn: str, message_id: str, destination: str) -> None:
        self.fake.move(upn, message_id, destination)

    def delete(self, upn: str, message_id: str) -> None:
        self.fake.delete(upn, message_id)

    def expire(self, upn: str) -> None:
        self.fake.expire_delta_tokens(upn)

    def fault(self, status: int, *, retry_after: str | None = None, count: int = 1) -> None:
        self.fake.fault(status, count=count, operation="read_page", retry_after=retry_after)

    def deny(self, upn: str) -> None:
        self.fake.deny(upn)

    def allow(self, upn: str) -> None:
        self.fake.allow(upn)


class EmulatedMail(EmulatedGraph):
    def __init__(self, graph: GraphEmulator) -> None:
        super().__init__(graph, "/messages/delta", headers={"Prefer": 'IdType="ImmutableId"'})
        self.source = GraphMailReader(self.client, self.caller, page_size=PAGE)

    def deliver(self, upn: str, *, folder: str = "inbox", subject: str = "Quote", days_ago: float = 0,
                categories: tuple[str, ...] = (), internet_message_id: str = "") -> str:  # fmt: skip
        when = (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
        spec: dict[str, Any] = {
            "from": {"address": "bob@fabrikam.example"}, "to": [{"address": upn}], "subject": subject,
            "bodyHtml": "<p>Hello</p>", "folder": folder, "receivedDateTime": when,
            "categories": list(categories),
        }  # fmt: skip
        if internet_message_id:
            spec["internetMessageId"] = internet_message_id
        return str(self.graph.control.deliver(upn, spec)["immutableId"])

    def set_categories(self, upn: str, message_id: str, categories: tuple[str, ...]) -> None:
        self._outlook("PATCH", f"/users/{upn}/messages/{message_id}", {"categories": list(categories)})

    def mark_read(self, upn: str, message_id: str) -> None:
        self._outlook("PATCH", f"/users/{upn}/messages/{message_id}", {"isRead": True})

    def move(self, upn: str, message_id: str, destination: str) -> None:
        self._outlook("POST", f"/users/{upn}/messages/{message_id}/move", {"destinationId": destination})

    def delete(self, upn: str, message_id: str) -> None:
        self._outlook("DELETE", f"/users/{upn}/messages/{message_id}")

    def expire(self, upn: str) -> None:
        self.expire_tokens(upn)

    def deny(self, upn: str) -> None:
        self.graph.control.deny(upn)

    def allow(self, upn: str) -> None:
        self.graph.control.allow(upn)


@pytest.fixture(params=["memory", "emulator"])
async def mail(request: pytest.FixtureRequest) -> AsyncIterator[MailHarness]:
    async with harness_of(request.param, request, MemoryMail, EmulatedMail) as harness:
        harness.add_user(ANN)
        yield harness


async def round_of(
    source: MailSource, folder: str, link: str = "", since: datetime | None = None
) -> tuple[list[Page], str]:
    """Every page of one round, and the round's deltaLink."""
    pages: list[Page] = []
    while True:
        page = await source.read_page(ANN, folder, link, since)
        pages.append(page)
        assert bool(page.next_link) != bool(page.delta_link), "a page carries exactly one link"
        if page.delta_link:
            return pages, page.delta_link
        link = page.next_link
        assert len(pages) < 50


def changes(pages: list[Page]) -> list[MessageChange]:
    return [c for p in pages for c in p.changes]


def by_id(pages: list[Page]) -> dict[str, MessageChange]:
    """The last change per id (Graph may repeat an item within a round)."""
    return {c.id: c for c in changes(pages)}


def a_week_ago() -> datetime:
    return datetime.now(UTC) - timedelta(days=7)


async def test_a_first_round_pages_through_the_window(mail: MailHarness) -> None:
    inside = [mail.deliver(ANN, subject=f"Order {n}", days_ago=n % 5) for n in range(7)]
    mail.deliver(ANN, subject="Too old", days_ago=30)
    mail.deliver(ANN, subject="Elsewhere", folder="archive")
    pages, _ = await round_of(mail.source, "inbox", since=a_week_ago())
    found = by_id(pages)
    assert sorted(found) == sorted(inside)
    assert all(isinstance(c, MailMessage) for c in found.values())
    assert len(pages) >= 3 and all(len(p.changes) <= PAGE for p in pages)
    assert {c.subject for c in found.values() if isinstance(c, MailMessage)} == {
        f"Order {n}" for n in range(7)
    }


async def test_a_listing_pages_through_every_message_in_the_window_without_delta_links(
    mail: MailHarness,
) -> None:
    inside = [mail.deliver(ANN, subject=f"Listed {n}", days_ago=n % 5) for n in range(7)]
    mail.deliver(ANN, subject="Too old", days_ago=30)
    mail.deliver(ANN, subject="Elsewhere", folder="archive")
    found: dict[str, MessageChange] = {}
    link, pages = "", 0
    while True:
        page = await mail.source.list_page(ANN, "inbox", link, a_week_ago())
        pages += 1
        assert not page.delta_link and len(page.changes) <= PAGE
        found.update({c.id: c for c in page.changes})
        if not page.next_link:
            break
        link = page.next_link
        assert pages < 50
    assert sorted(found) == sorted(inside) and pages >= 3
    assert all(isinstance(c, MailMessage) for c in found.values())


async def test_a_delta_link_with_nothing_changed_returns_nothing(mail: MailHarness) -> None:
    mail.deliver(ANN)
    _, delta = await round_of(mail.source, "inbox", since=a_week_ago())
    pages, again = await round_of(mail.source, "inbox", delta)
    assert changes(pages) == [] and again


async def test_new_edited_and_read_messages_come_in_the_next_round_with_their_ids(mail: MailHarness) -> None:
    first = mail.deliver(ANN, subject="First")
    other = mail.deliver(ANN, subject="Other")
    _, delta = await round_of(mail.source, "inbox", since=a_week_ago())
    mail.set_categories(ANN, first, ("CRM",))
    mail.mark_read(ANN, other)
    new = mail.deliver(ANN, subject="New")
    pages, _ = await round_of(mail.source, "inbox", delta)
    found = by_id(pages)
    assert set(found) == {first, other, new}
    edited = found[first]
    assert isinstance(edited, MailMessage) and edited.categories == ("CRM",) and edited.subject == "First"


async def test_a_move_is_removed_from_the_source_and_added_to_the_destination_with_the_same_id(
    mail: MailHarness,
) -> None:
    moved = mail.deliver(ANN, subject="Contract", internet_message_id="<contract@fabrikam.example>")
    _, inbox = await round_of(mail.source, "inbox", since=a_week_ago())
    _, archive = await round_of(mail.source, "archive", since=a_week_ago())
    mail.move(ANN, moved, "archive")
    inbox_pages, _ = await round_of(mail.source, "inbox", inbox)
    archive_pages, _ = await round_of(mail.source, "archive", archive)
    assert changes(inbox_pages) == [MessageRemoved(moved)]
    arrived = by_id(archive_pages)[moved]
    assert isinstance(arrived, MailMessage) and arrived.internet_message_id == "<contract@fabrikam.example>"
    fetched = await mail.source.get_message(ANN, moved)
    assert fetched is not None and fetched.id == moved and fetched.folder_id == arrived.folder_id


async def test_a_deleted_message_is_removed_and_no_longer_found(mail: MailHarness) -> None:
    gone = mail.deliver(ANN)
    kept = mail.deliver(ANN)
    _, delta = await round_of(mail.source, "inbox", since=a_week_ago())
    mail.delete(ANN, gone)
    pages, _ = await round_of(mail.source, "inbox", delta)
    assert changes(pages) == [MessageRemoved(gone)]
    assert await mail.source.get_message(ANN, gone) is None
    assert (await mail.source.get_message(ANN, kept)) is not None


async def test_a_message_removed_before_the_first_round_is_not_reported(mail: MailHarness) -> None:
    gone = mail.deliver(ANN)
    mail.delete(ANN, gone)
    moved = mail.deliver(ANN)
    mail.move(ANN, moved, "archive")
    pages, _ = await round_of(mail.source, "inbox", since=a_week_ago())
    assert changes(pages) == []


async def test_moved_away_and_back_between_rounds_surfaces_only_as_a_removal(mail: MailHarness) -> None:
    """Graph's documented quirk with immutable ids (docs/graph-behaviour.md §1.2): A→B→A between two rounds is
    reported in A as `@removed` and never re-added. The engine must not lose the message because of it."""
    known = mail.deliver(ANN, subject="Known")
    _, delta = await round_of(mail.source, "inbox", since=a_week_ago())
    fresh = mail.deliver(ANN, subject="Arrived after the round")
    for message_id in (known, fresh):
        mail.move(ANN, message_id, "archive")
        mail.move(ANN, message_id, "inbox")
    pages, _ = await round_of(mail.source, "inbox", delta)
    assert set(changes(pages)) == {MessageRemoved(known), MessageRemoved(fresh)}
    back = await mail.source.get_message(ANN, fresh)
    assert back is not None and back.subject == "Arrived after the round"
    assert back.folder_id == await mail.source.folder_id(ANN, "inbox")  # how the engine sees it is back


async def test_a_folder_named_by_well_known_name_has_the_id_its_messages_carry(mail: MailHarness) -> None:
    filed = mail.deliver(ANN, folder="archive")
    message = await mail.source.get_message(ANN, filed)
    assert message is not None
    archive, inbox = await mail.source.folder_id(ANN, "archive"), await mail.source.folder_id(ANN, "inbox")
    assert message.folder_id == archive != inbox
    assert await mail.source.folder_id(ANN, archive) == archive


async def test_a_change_during_a_round_comes_in_that_round_or_the_next(mail: MailHarness) -> None:
    ids = [mail.deliver(ANN, subject=f"M{n}") for n in range(2 * PAGE)]
    first = await mail.source.read_page(ANN, "inbox", "", a_week_ago())
    late = mail.deliver(ANN, subject="Late")
    edited = ids[-1]
    mail.set_categories(ANN, edited, ("CRM",))
    rest, delta = await round_of(mail.source, "inbox", first.next_link)
    following, _ = await round_of(mail.source, "inbox", delta)
    seen = {c.id: c for c in first.changes + changes(rest) + changes(following)}
    assert set(ids) | {late} <= set(seen)
    final = seen[edited]
    assert isinstance(final, MailMessage) and final.categories == ("CRM",)


async def test_an_expired_sync_state_answers_delta_expired_on_delta_and_next_links(mail: MailHarness) -> None:
    for n in range(PAGE + 1):
        mail.deliver(ANN, subject=f"M{n}")
    first = await mail.source.read_page(ANN, "inbox", "", a_week_ago())
    assert first.next_link
    mail.expire(ANN)
    with pytest.raises(DeltaExpired):
        await mail.source.read_page(ANN, "inbox", first.next_link, None)
    pages, delta = await round_of(mail.source, "inbox", since=a_week_ago())
    assert len(by_id(pages)) == PAGE + 1
    mail.expire(ANN)
    with pytest.raises(DeltaExpired):
        await mail.source.read_page(ANN, "inbox", delta, None)


@pytest.mark.parametrize("retry_after", ["0.2", None, "1"], ids=["fractional", "missing", "integer"])
@pytest.mark.parametrize("status", [429, 503])
async def test_short_throttling_is_ridden_out(
    mail: MailHarness, status: int, retry_after: str | None
) -> None:
    wanted = mail.deliver(ANN)
    mail.fault(status, retry_after=retry_after, count=2)
    pages, _ = await round_of(mail.source, "inbox", since=a_week_ago())
    assert list(by_id(pages)) == [wanted]


async def test_a_long_retry_after_is_handed_to_the_engine(mail: MailHarness) -> None:
    mail.deliver(ANN)
    mail.fault(429, retry_after="3600")
    with pytest.raises(GraphThrottled) as raised:
        await mail.source.read_page(ANN, "inbox", "", a_week_ago())
    assert raised.value.retry_after is not None and raised.value.retry_after >= 3600
    pages, _ = await round_of(mail.source, "inbox", since=a_week_ago())
    assert len(by_id(pages)) == 1


async def test_a_denied_mailbox_is_denied_until_allowed(mail: MailHarness) -> None:
    mail.deliver(ANN)
    mail.deny(ANN)
    with pytest.raises(MailboxDenied):
        await mail.source.read_page(ANN, "inbox", "", a_week_ago())
    mail.allow(ANN)
    pages, _ = await round_of(mail.source, "inbox", since=a_week_ago())
    assert len(by_id(pages)) == 1
