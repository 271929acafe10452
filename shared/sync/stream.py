"""What every stream is to the engine, the runner and the sweep.

A stream keeps one kind of thing of one user in step (`StreamKind`: a mail folder, the owned contact
folder, the calendar, CRM appointments pushed into the calendar). It is one module with its pure plan
beside it; `shared/sync/runner.py` gives it the page loop, checkpoints, lease renewal, issue retries
and totals, so a stream only says how to read, what a page means and what it writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from shared.errors import GraphError
from shared.model import Cursor, Decision, Issue, Link, Page, StreamId, StreamKind, UserConfig

if TYPE_CHECKING:
    from shared.sync.runner import Run

T = TypeVar("T")
Progress = Callable[[str, Mapping[str, int]], None]


class Stats(dict[str, int]):
    """A run's counters by name (every name the stream declares is there, from 0)."""

    def __init__(self, names: Iterable[str]) -> None:
        super().__init__(dict.fromkeys(names, 0))

    def add(self, name: str, count: int = 1) -> None:
        self[name] = self.get(name, 0) + int(count)

    def as_dict(self) -> dict[str, int]:
        return dict(self)


COMMON_STATS = ("pages", "failed", "issues_retried", "fresh_rounds")


@dataclass
class Applied:
    """What a page (or a retried item) left to record: link rows and decisions, written in that order
    after its effects and before its checkpoint."""

    decisions: list[Decision] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(d.outcome == "failed" for d in self.decisions)


@dataclass(frozen=True)
class Reading(Generic[T]):
    """How a stream reads one round of pages (the runner's page loop does the reading).

    - `read(link)`: one page from a link ("" = start: a new round, or a listing from its start).
    - `apply(page)`: what the page means, its effects done; returns what to record.
    - `checkpoint(cursor, page)`: the cursor to save after the page, built on the saved one (None: no
      cursor is saved per page; the stream saves once the round is read).
    - `start_over(error, cursor)`: the cursor to read again from after an expired or unusable link
      (410, or 404 on a stored link), or None to give up with the error.
    - `position(cursor)`: the link the round goes on from.
    - `read_ahead`: read page N+1 while page N is written, and record page N while N+1 is written
      (only for streams whose pages do not depend on the rows an earlier page writes).
    """

    read: Callable[[str], Awaitable[Page[T]]]
    apply: Callable[[Page[T]], Awaitable[Applied]]
    start_over: Callable[[GraphError, Cursor], Cursor | None]
    position: Callable[[Cursor], str] = lambda cursor: cursor.link
    checkpoint: Callable[[Cursor, Page[T]], Cursor] | None = None
    read_ahead: bool = False


class Stream(Protocol):
    """One kind of stream: how a job runs it, and what the sweep needs to know about it."""

    kind: StreamKind
    stats: tuple[str, ...]  # the counters of a run (COMMON_STATS are added)
    totals: tuple[str, ...]  # the counters kept as running totals on the cursor (the status page)
    probed: bool  # the sweep can tell from its Graph delta link whether it changed

    @property
    def crm_side(self) -> bool:
        """Whether the stream reads a CRM change feed the sweep can peek at (`crm_changed`)."""
        ...

    async def run(self, run: Run, *, fresh_round: bool) -> None:
        """Bring the stream up to date (the runner's `run` holds the cursor, lease and counters)."""
        ...

    def job_anyway(self, config: UserConfig, cursor: Cursor, now: datetime) -> bool:
        """Whether the stream needs a job whatever its Graph side says (a round due, a held run …)."""
        ...

    async def crm_changed(self, config: UserConfig, cursor: Cursor) -> bool:
        """Whether the CRM side changed since the cursor (True when it cannot tell). One read at most:
        the sweep asks for every idle user with a `crm_side`."""
        ...

    def retries(self, issue: Issue) -> bool:
        """Whether an open issue of this stream is retried by a job (so the sweep queues one)."""
        ...

    def subscription(self, config: UserConfig, stream: StreamId, cursor: Cursor) -> str | None:
        """The Graph resource whose change notifications wake this stream (None: it has none, or it is
        not known yet)."""
        ...
