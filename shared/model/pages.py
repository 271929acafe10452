"""One page of a delta round or a listing, as every source hands it to the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """The changes of one page, and where reading goes on: a nextLink (more pages in this round) or
    the round's deltaLink (the round is done; the next round starts there)."""

    changes: list[T] = field(default_factory=list)
    next_link: str = ""
    delta_link: str = ""
