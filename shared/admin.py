"""Admin operations, shared by the admin HTTP functions and the `crmsync` command line.

Status per user (the row's status columns plus each stream's cursor), force a sync, a fresh initial
round ("resync", the seeds' Initial Sync), explain one message, and connectivity checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.errors import StateError, SyncError, UserConfigError
from shared.graph.probe import Check, MailboxProbe
from shared.model import Cursor, Job, LinkKind, StreamId, StreamKind
from shared.ports.crm import CrmPort
from shared.ports.state import JobQueue, StateStore
from shared.printable import printable
from shared.users import is_enabled, parse_user


@dataclass(frozen=True)
class StreamStatus:
    stream: str
    phase: str  # "initial round" | "up to date" | "not started"
    last_page_utc: datetime | None
    totals: Mapping[str, int]


@dataclass(frozen=True)
class UserStatus:
    upn: str
    enabled: bool
    state: str
    last_sync_utc: datetime | None
    last_error: str
    warnings: str
    open_issues: int
    streams: list[StreamStatus] = field(default_factory=list)
    config_error: str = ""
    # Stored values that could not be read (e.g. a cursor total that is not a number): left out of the
    # counts and named here, so one bad row never hides the others.
    unreadable: list[str] = field(default_factory=list)

    def lag_seconds(self, now: datetime) -> float | None:
        return (now - self.last_sync_utc).total_seconds() if self.last_sync_utc else None

    def totals(self) -> dict[str, int]:
        summed: dict[str, int] = {}
        for stream in self.streams:
            for name, value in stream.totals.items():
                summed[name] = summed.get(name, 0) + value
        return summed


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value).astimezone(UTC)
        except ValueError:
            return None
    return None


def _phase(cursor: Cursor) -> str:
    if cursor.link:
        return "up to date" if cursor.link_kind == LinkKind.DELTA else "initial round"
    return "up to date" if cursor.crm_cursor else "not started"  # a stream with only a CRM side


async def user_statuses(state: StateStore, upn: str | None = None) -> list[UserStatus]:
    rows = [r for r in await state.list_users() if upn is None or r.upn.lower() == upn.lower()]
    statuses: list[UserStatus] = []
    for row in rows:
        config_error = ""
        streams: list[StreamId] = []
        try:
            config = parse_user(row.upn, row.columns)
            streams = config.streams()
        except UserConfigError as error:
            config_error = str(error)
        cursors = await state.list_cursors(row.upn)
        stream_status: list[StreamStatus] = []
        unreadable: list[str] = []
        for name in dict.fromkeys([*streams, *cursors]):
            c = cursors.get(name) or Cursor()
            unreadable += [f"{name}: {note}" for note in c.unreadable]
            stream_status.append(
                StreamStatus(stream=name, phase=_phase(c), last_page_utc=c.last_page, totals=dict(c.totals))
            )
        columns = row.columns
        statuses.append(
            UserStatus(
                upn=row.upn,
                enabled=is_enabled(columns),
                state=str(columns.get("State", "") or ("error" if config_error else "new")),
                last_sync_utc=_when(columns.get("LastSyncUtc")),
                last_error=str(columns.get("LastError", "") or config_error),
                warnings=str(columns.get("Warnings", "") or ""),
                open_issues=len(await state.list_issues(row.upn)),
                streams=stream_status,
                config_error=config_error,
                unreadable=unreadable,
            )
        )
    return statuses


async def request_sync(state: StateStore, queue: JobQueue, upn: str, *, fresh: bool) -> list[Job]:
    """Queue a job per stream of the user now; `fresh` starts a new initial round (resync)."""
    row = await state.get_user(upn)
    if row is None:
        raise UserConfigError(f"no SyncUsers row for {upn!r}")
    config = parse_user(row.upn, row.columns)
    jobs = [
        Job(config.upn, stream, reason="resync" if fresh else "manual", fresh_round=fresh)
        for stream in config.streams()
    ]
    for job in jobs:
        await queue.enqueue(job)
    return jobs


async def explain(state: StateStore, upn: str, message: str) -> str:
    """Why a message (internetMessageId, or Graph id for one without) did or did not become a journal."""
    decision = await state.get_decision(upn, message.strip())
    if decision is None:
        return (
            f"No decision is recorded for {message!r} in {upn}'s mailbox: the message was not seen by a "
            "sync (outside the chosen folders or the DaysBack window, or not yet synced)."
        )
    text = (
        f"{decision.outcome} at {decision.at:%Y-%m-%d %H:%M:%S} UTC ({decision.stream}): "
        f"{printable(decision.reason)}"
    )
    if decision.outcome == "synced":
        record = await state.get_key(decision.crm_key or message)
        if record is not None:
            text += f"\nCRM record {record.crm_ref}; seen by {', '.join(record.mailboxes)}"
            text += f"; linked people: {len(record.people)}"
    issues = [i for i in await state.list_issues(upn) if i.item_key == message.strip()]
    for issue in issues:
        text += f"\nopen issue: {printable(issue.reason)} (attempts: {issue.attempts})"
    return text


async def check(state: StateStore, crm: CrmPort, probe: MailboxProbe | None, upn: str | None) -> list[Check]:
    checks: list[Check] = []
    try:
        await state.list_users()
        checks.append(Check("storage", True, "tables reachable"))
    except (StateError, OSError) as error:
        checks.append(Check("storage", False, str(error)))
    try:
        health = await crm.check()
        checks.append(Check("crm", health.ok, health.detail))
    except SyncError as error:
        checks.append(Check("crm", False, str(error)))
    if upn and probe is not None:
        row = await state.get_user(upn)
        if row is None:
            checks.append(Check("user", False, f"no SyncUsers row for {upn!r}"))
        else:
            try:
                checks += await probe.check(parse_user(row.upn, row.columns))
            except UserConfigError as error:
                checks.append(Check("user", False, str(error)))
    return checks


async def approve(state: StateStore, queue: JobQueue, upn: str, now: datetime | None = None) -> str:
    """Let a contacts or tasks run held by the mass-change brake apply its changes: stamps the approval
    on the user's row (`ContactsApprovedUtc`, `TasksApprovedUtc`) and queues the held stream's job. The
    next run applies as many deletes/changes as were held, plus the threshold; more than that holds it
    again."""
    row = await state.get_user(upn)
    if row is None:
        raise UserConfigError(f"no SyncUsers row for {upn!r}")
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    said: list[str] = []
    for kind, column, things in (
        (StreamKind.CONTACTS, "ContactsApprovedUtc", "contact"),
        (StreamKind.TASKS, "TasksApprovedUtc", "task"),
    ):
        cursor = await state.get_cursor(row.upn, StreamId.of(kind))
        held = cursor.contacts.held if kind == StreamKind.CONTACTS else cursor.tasks.held
        if held is None:
            continue
        await state.put_config(row.upn, {column: stamp.isoformat()})
        await queue.enqueue(Job(row.upn, kind.value, reason="manual"))
        said.append(
            f"approved {held.changes} held {things} deletes/changes of {row.upn}; "
            f"the {kind.value} sync runs again now"
        )
    return "; ".join(said) or f"nothing of {row.upn} is waiting for approval"
