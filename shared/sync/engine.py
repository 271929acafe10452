"""Runs jobs (one user, one stream) under the user+stream lease, and plans the safety-net sweep.

    run_job(job)
      └ user row → parse_user (a bad row: LastError, skipped; others go on)
      └ lease (taken: set pending, return "busy"; the holder runs again before letting go)
          └ loop: clear the queued marker → run the stream → release (False: pending was set → run again)
      └ status columns on the SyncUsers row

Outcomes never raise for conditions that retrying the same queue message cannot fix (invalid row,
mailbox denied, throttled: re-queued with a delay). Transient failures (CRM down, storage errors)
raise after writing the status, so the queue retries and, after `maxDequeueCount`, poisons the job.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.errors import (
    ConcurrencyError,
    GraphNotFound,
    GraphThrottled,
    MailboxDenied,
    MassChangeRefused,
    StateError,
    SyncError,
    UserConfigError,
)
from shared.model import Job, JobOutcome, JobStatus, Lease, StreamId, StreamKind, UserConfig
from shared.ports.state import JobQueue, StateStore
from shared.sync.runner import LEASE_SECONDS, Runner
from shared.sync.stream import Progress, Stream
from shared.users import EVERYTHING, Granted, parse_user

if TYPE_CHECKING:
    from shared.sync.sweep import Sweeper

logger = logging.getLogger(__name__)

HOLDER = f"{socket.gethostname()}:{os.getpid()}"  # who takes a lease: this host and process
MAX_BACKOFF = timedelta(hours=6)
BASE_BACKOFF = timedelta(minutes=5)


class Engine:
    def __init__(
        self,
        state: StateStore,
        queue: JobQueue,
        streams: Mapping[StreamKind, Stream],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sweeper: Sweeper | None = None,
        granted: Granted = EVERYTHING,
    ) -> None:
        self._state = state
        self._queue = queue
        self._streams = streams
        self._runner = Runner(state, clock=clock)
        self._clock = clock
        self._sweeper = sweeper  # probes delta links in one $batch per user (shared/sync/sweep.py)
        self._granted = granted  # the streams the deployment's Graph permissions cover

    @property
    def streams(self) -> Mapping[StreamKind, Stream]:
        return self._streams

    async def load_user(self, upn: str) -> UserConfig | None:
        """The user's parsed config; None when there is no row. A bad row raises UserConfigError."""
        row = await self._state.get_user(upn)
        return None if row is None else parse_user(row.upn, row.columns, self._granted)

    async def run_job(self, job: Job, progress: Progress | None = None) -> JobOutcome:
        try:
            config = await self.load_user(job.user)
        except UserConfigError as error:
            await self._status(job.user, State="error", LastError=str(error), LastErrorUtc=self._clock())
            return JobOutcome(JobStatus.INVALID, str(error))
        if config is None or not config.enabled:
            return JobOutcome(JobStatus.DISABLED, "the user is not enabled in SyncUsers")
        try:
            stream_id = StreamId(job.stream)
        except ValueError:
            stream_id = None
        stream = self._streams.get(stream_id.kind) if stream_id is not None else None
        if stream is None or stream_id is None or stream_id not in config.streams():
            return JobOutcome(JobStatus.UNKNOWN_STREAM, f"{job.stream!r} is not a stream this user syncs")

        lease = await self._state.acquire(config.upn, stream_id, uuid.uuid4().hex, LEASE_SECONDS, HOLDER)
        if lease is None:
            return JobOutcome(JobStatus.BUSY, busy(await self._state.get_lease(config.upn, stream_id)))
        fresh = job.fresh_round
        try:
            while True:
                await self._state.clear_queued(config.upn, stream_id)
                stats, lease = await self._runner.run(
                    stream, config, stream_id, lease, fresh_round=fresh, progress=progress
                )
                fresh = False
                if await self._state.release(lease):
                    break
        except ConcurrencyError:
            return JobOutcome(JobStatus.SUPERSEDED, "the lease was lost to another job; it carries on")
        except MassChangeRefused as error:
            await self._let_go(lease)
            await self._status(
                config.upn, State="review", LastError=f"{job.stream}: {error}", ReviewPending=str(error)
            )
            return JobOutcome(JobStatus.REVIEW, str(error))
        except MailboxDenied as error:
            await self._let_go(lease)
            await self._status(
                config.upn, State="error", LastError=f"{job.stream}: {error}", LastErrorUtc=self._clock()
            )
            return JobOutcome(JobStatus.DENIED, str(error))
        except GraphNotFound as error:  # the mailbox or folder does not exist: retrying will not help
            await self._let_go(lease)
            detail = f"{job.stream}: the mailbox or folder was not found in Graph ({error})"
            await self._status(config.upn, State="error", LastError=detail, LastErrorUtc=self._clock())
            return JobOutcome(JobStatus.NOT_FOUND, detail)
        except GraphThrottled as error:
            await self._let_go(lease)
            delay = max(1.0, error.retry_after or 30.0)
            await self._queue.enqueue(replace(job, reason="throttled"), delay_seconds=delay)
            await self._status(
                config.upn,
                State="throttled",
                LastError=f"{job.stream}: Graph throttled, retry in {delay:.0f} s",
            )
            return JobOutcome(JobStatus.THROTTLED, f"re-queued in {delay:.1f} s")
        except Exception as error:  # transient (CRM down, storage) or a bug: the queue retries, then poisons
            if not await self._let_go_if_reachable(lease):
                raise  # storage is down: no status can be written; the queue sees the run's own error
            text = str(error) if isinstance(error, SyncError) else f"unexpected {type(error).__name__}"
            await self._status(
                config.upn, State="error", LastError=f"{job.stream}: {text}", LastErrorUtc=self._clock()
            )
            raise
        stats_dict = stats.as_dict()
        counts = await self._counts(config.upn) if any(stats_dict.values()) else {}
        await self._status(
            config.upn,
            State="ok",
            LastSyncUtc=self._clock(),
            LastError="",
            ErrorCount=0,
            Warnings="; ".join(config.warnings),
            **counts,
        )
        counts_text = " ".join(f"{k}={v}" for k, v in stats_dict.items())
        logger.info("job done stream=%s reason=%s %s", stream_id.kind, job.reason, counts_text)
        return JobOutcome(JobStatus.DONE, stats=stats_dict)

    async def _counts(self, upn: str) -> dict[str, int]:
        """Item counts over all the user's streams (`Items<Name>` columns) and open issues."""
        totals: dict[str, int] = {}
        for cursor in (await self._state.list_cursors(upn)).values():
            for name, value in cursor.totals.items():
                column = "Items" + str(name).capitalize()
                totals[column] = totals.get(column, 0) + int(value)
        totals["OpenIssues"] = len(await self._state.list_issues(upn))
        return totals

    async def _let_go(self, lease: Lease) -> None:
        try:
            while not await self._state.release(lease):
                pass
        except ConcurrencyError:
            pass

    async def _let_go_if_reachable(self, lease: Lease) -> bool:
        """Let go after a failed run; False when storage cannot be reached (the lease then expires by
        itself), so the caller raises the error that stopped the run, not this one."""
        try:
            await self._let_go(lease)
        except StateError as error:
            logger.warning("job failed; storage unreachable, the lease is left to expire (%s)", error)
            return False
        return True

    async def _status(self, upn: str, **columns: Any) -> None:
        if columns.get("State") == "ok":
            row = await self._state.get_user(upn)
            pending = str(row.columns.get("ReviewPending") or "") if row else ""
            if pending:  # another stream of this user waits for an admin: keep saying so
                columns.update(State="review", LastError=pending)
        if columns.get("State") == "error":
            row = await self._state.get_user(upn)
            count = int((row.columns.get("ErrorCount") or 0) if row else 0)
            columns["ErrorCount"] = count + 1
        await self._state.update_status(upn, columns)

    async def sweep(self) -> list[Job]:
        """Enqueue a job per enabled user and stream (the safety net). Users in error back off.
        With a sweeper, only the streams whose probe found changes (or could not tell) get a job."""
        now = self._clock()
        jobs: list[Job] = []
        due: list[UserConfig] = []
        for row in await self._state.list_users():
            try:
                config = parse_user(row.upn, row.columns, self._granted)
            except UserConfigError as error:
                if row.columns.get("LastError") != str(error):
                    await self._state.update_status(row.upn, {"State": "error", "LastError": str(error)})
                continue
            if not config.enabled or backing_off(row.columns, now):
                continue
            if self._sweeper is not None:
                due.append(config)
                continue
            for stream in config.streams():
                job = Job(user=config.upn, stream=stream, reason="sweep")
                await self._queue.enqueue(job)
                jobs.append(job)
        if self._sweeper is not None:
            jobs = await self._sweeper.sweep(due)
        return jobs


def busy(lease: Lease | None) -> str:
    """What an admin needs to know about a lease that is taken: who holds it, since and until when."""
    if lease is None:
        return "another job held this user+stream a moment ago; it will run again before letting go"
    since = f" since {lease.acquired:%Y-%m-%d %H:%M:%S} UTC" if lease.acquired else ""
    return (
        f"another job holds this user+stream ({lease.holder or 'holder not recorded'}{since}, until "
        f"{lease.expires:%Y-%m-%d %H:%M:%S} UTC); it will run again before letting go. If that process is "
        "gone (killed), `crmsync sync --take-over` frees the lease once it is stale"
    )


def backing_off(columns: Mapping[str, Any], now: datetime) -> bool:
    """A user in error waits 5 min × 2^(errors-1), at most 6 h, between sweeps."""
    if columns.get("State") != "error":
        return False
    since = columns.get("LastErrorUtc")
    if not isinstance(since, datetime):
        return False
    errors = max(1, int(columns.get("ErrorCount") or 1))
    wait = min(MAX_BACKOFF, BASE_BACKOFF * 2 ** min(errors - 1, 10))
    return bool(now < since.astimezone(UTC) + wait)
