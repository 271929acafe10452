"""Streams, jobs and what became of a job."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum


class StreamKind(StrEnum):
    """What a stream syncs. A mail stream is one chosen folder: `mail:<folder>`."""

    MAIL = "mail"
    CONTACTS = "contacts"
    CALENDAR = "calendar"
    PUSH = "push"  # CRM appointments made for the user, pushed into their calendar
    TASKS = "tasks"  # the owned To Do list and the user's CRM tasks


class StreamId(str):
    """A stream of one user: its kind, and for mail the folder (`mail:inbox`, `contacts`, `calendar`).

    A `str`, so it is a table key, a queue field and a dict key as it is; `kind` and `scope` read it."""

    __slots__ = ()

    def __new__(cls, value: str) -> StreamId:
        kind, _, scope = str(value).partition(":")
        if kind not in StreamKind.__members__.values():
            raise ValueError(f"unknown stream {value!r}")
        if (kind == StreamKind.MAIL) != bool(scope):
            raise ValueError(f"a mail stream names one folder (mail:<folder>), got {value!r}")
        return super().__new__(cls, value)

    @classmethod
    def of(cls, kind: StreamKind, scope: str = "") -> StreamId:
        return cls(f"{kind.value}:{scope}" if scope else kind.value)

    @property
    def kind(self) -> StreamKind:
        return StreamKind(self.partition(":")[0])

    @property
    def scope(self) -> str:
        return self.partition(":")[2]


class JobStatus(StrEnum):
    """What became of a job. Only `DONE` wrote `State=ok`; the others say why not."""

    DONE = "done"
    BUSY = "busy"  # another job holds the user+stream; it runs again before letting go
    DISABLED = "disabled"  # no row, or not enabled
    INVALID = "invalid"  # the user's row is invalid (LastError says why)
    DENIED = "denied"  # the app may not read the mailbox
    NOT_FOUND = "not-found"  # the mailbox or folder does not exist
    THROTTLED = "throttled"  # re-queued after Graph's Retry-After
    REVIEW = "review"  # held by the mass-change brake until an admin approves
    SUPERSEDED = "superseded"  # the lease was lost to another job, which carries on
    UNKNOWN_STREAM = "unknown-stream"  # not a stream this user syncs


@dataclass(frozen=True)
class JobOutcome:
    status: JobStatus
    detail: str = ""
    stats: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """One unit of work on the `sync-jobs` queue: one user, one stream."""

    user: str  # user principal name (RowKey of SyncUsers)
    stream: str  # a StreamId: "mail:<folder>", "contacts", "calendar", "push", "tasks"
    reason: str = "sweep"  # sweep | notification | lifecycle | resync | manual
    fresh_round: bool = False  # drop the stored link and start a new initial round

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        data = json.loads(text)
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("user"), str)
            or not isinstance(data.get("stream"), str)
        ):
            raise ValueError("a job needs string fields 'user' and 'stream'")
        return cls(
            user=data["user"],
            stream=data["stream"],
            reason=str(data.get("reason", "sweep")),
            fresh_round=bool(data.get("fresh_round", False)),
        )
