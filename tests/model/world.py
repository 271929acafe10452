"""The outside world a model run drives: two mailboxes (Graph), the CRM and the state store, either in
memory (`MemoryWorld`, adapters that pass their contract suites) or the real stack (`tests/model/real.py`:
msgraph-sdk → the Graph emulator, the reference CRM over HTTP, Azurite)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shared.crm.memory import InMemoryCrm
from shared.errors import CrmRejectedError, CrmRetryableError
from shared.state.memory import InMemoryJobQueue, InMemoryStateStore
from shared.state.port import StateStore
from tests.model.mailbox import InMemoryMailboxes

ANN = "ann@contoso.com"  # policy all
DAN = "dan@contoso.com"  # policy category ("CRM")
USERS = (ANN, DAN)
CHOSEN = ("inbox", "archive")
FOLDERS = ("inbox", "archive", "sentitems", "deleteditems")
ORG_DOMAINS = ("contoso.com",)
BOB = "bob@fabrikam.example"
EVE = "eve@northwind.example"
PERSONS = (BOB, EVE)


@dataclass(frozen=True)
class Template:
    imid: str
    sender: str
    cc: tuple[str, ...]
    subject: str

    @property
    def internal(self) -> bool:
        return all(a.endswith("@contoso.com") for a in (self.sender, *self.cc))

    @property
    def people(self) -> frozenset[str]:
        return frozenset(a for a in (self.sender, *self.cc) if a in PERSONS)


TEMPLATES = (
    Template("<t1@fabrikam.example>", BOB, (), "Quote"),
    Template("<t2@northwind.example>", EVE, (BOB,), "Offer"),
    Template("<t3@unknown.example>", "zed@unknown.example", (), "Cold call"),
    Template("<t4@contoso.com>", "carol@contoso.com", (), "Internal"),
    Template("<t5@fabrikam.example>", BOB, (EVE,), "Meeting notes"),
)

# Graph faults: (name, status, Retry-After, error code)
GRAPH_FAULTS = (
    ("429-fractional", 429, "0.5", ""),
    ("429-missing", 429, None, ""),
    ("429-long", 429, "7200", ""),
    ("503", 503, "1", ""),
    ("410", 410, None, "SyncStateNotFound"),
)
CRM_FAULTS = ("503", "timeout", "ambiguous", "rejected")


@dataclass(frozen=True)
class JournalView:
    subject: str
    seen_by: frozenset[str]
    people: frozenset[str]  # addresses of the linked CRM people


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)


class World(Protocol):
    clock: Clock
    state: StateStore
    crm: Any
    mail: Any
    queue: InMemoryJobQueue

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def deliver(self, user: str, folder: str, template: Template, categories: tuple[str, ...]) -> str: ...
    def set_categories(self, user: str, message_id: str, categories: tuple[str, ...]) -> None: ...
    def mark_read(self, user: str, message_id: str) -> None: ...
    def move(self, user: str, message_id: str, folder: str) -> None: ...
    def delete(self, user: str, message_id: str) -> None: ...
    def expire_links(self, user: str) -> None: ...
    def graph_fault(self, name: str, count: int) -> None: ...
    def crm_fault(self, name: str, count: int) -> None: ...
    def clear_faults(self) -> None: ...
    def journals(self) -> tuple[dict[str, JournalView], int]:
        """Journals by key, and how many journal records the CRM holds (a duplicate makes them differ)."""

    def link_position(self, link: str) -> tuple[int, int] | None:
        """(sync state, position) of a delta link when the world can read it; None otherwise."""

    def covered(self, user: str, folder: str, link: str) -> set[str] | None:
        """Message ids a cursor with `link` has been given; None when the world cannot tell."""


class MemoryWorld:
    def __init__(self) -> None:
        self.clock = Clock()
        self.state: StateStore = InMemoryStateStore(clock=self.clock)
        self.crm = InMemoryCrm()
        self.mail = InMemoryMailboxes(page_size=2, clock=self.clock, sleep=self.clock.sleep)
        self.queue = InMemoryJobQueue(clock=self.clock)
        self._person_ids: dict[str, str] = {}

    async def start(self) -> None:
        for user in USERS:
            self.mail.add_user(user)
        for address in PERSONS:
            self._person_ids[self.crm.add_person(address, name=address.split("@")[0], owner=ANN)] = address

    async def close(self) -> None:
        return None

    def deliver(self, user: str, folder: str, template: Template, categories: tuple[str, ...]) -> str:
        return self.mail.deliver(
            user, folder=folder, sender=template.sender, to=USERS, cc=template.cc, subject=template.subject,
            body_html=f"<p>{template.subject}</p>", internet_message_id=template.imid, categories=categories,
            received=self.clock.now - timedelta(minutes=1),
        )  # fmt: skip

    def set_categories(self, user: str, message_id: str, categories: tuple[str, ...]) -> None:
        self.mail.set_categories(user, message_id, categories)

    def mark_read(self, user: str, message_id: str) -> None:
        self.mail.mark_read(user, message_id)

    def move(self, user: str, message_id: str, folder: str) -> None:
        self.mail.move(user, message_id, folder)

    def delete(self, user: str, message_id: str) -> None:
        self.mail.delete(user, message_id)

    def expire_links(self, user: str) -> None:
        self.mail.expire_delta_tokens(user)

    def graph_fault(self, name: str, count: int) -> None:
        _, status, retry_after, code = next(f for f in GRAPH_FAULTS if f[0] == name)
        self.mail.fault(status, count=count, operation="read_page", retry_after=retry_after, code=code)

    def crm_fault(self, name: str, count: int) -> None:
        if name == "rejected":
            self.crm.fail_next(
                "upsert_journal", CrmRejectedError("CRM rejected (422)", status=422), times=count
            )
        elif name == "timeout":
            self.crm.fail_next("*", CrmRetryableError("CRM PUT /journals failed: ReadTimeout"), times=count)
        else:
            error = CrmRetryableError("CRM answered 503", status=503)
            self.crm.fail_next("upsert_journal", error, times=count, after_apply=name == "ambiguous")

    def clear_faults(self) -> None:
        self.mail.clear_faults()
        self.crm._failures.clear()  # noqa: SLF001 - the fake has no public "clear" and the model needs one

    def journals(self) -> tuple[dict[str, JournalView], int]:
        views = {
            key: JournalView(
                j.subject,
                frozenset(s.lower() for s in j.seen_by),
                frozenset(p.email.lower() for p in j.people),
            )
            for key, j in self.crm.journals.items()
        }
        return views, len(set(self.crm._journal_ids.values()))  # noqa: SLF001

    def link_position(self, link: str) -> tuple[int, int] | None:
        state, pos = InMemoryMailboxes.position(link)
        return (int(state, 16) if state else 0, pos)

    def covered(self, user: str, folder: str, link: str) -> set[str] | None:
        return self.mail.covered(user, folder, link)
