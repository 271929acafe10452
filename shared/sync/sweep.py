"""The safety-net sweep at the price of at most one Graph request per idle user (fewer: users are packed).

Without a probe the sweep enqueues a job per enabled user and stream, and each job reads its delta
link: one Graph request per stream, plus a dozen table transactions, for every user every few minutes,
even when nothing changed. With `DeltaProbe`, the sweep instead reads the saved delta links of every
stream (mail folders, the owned contact folder, the calendarView) with `odata.maxpagesize=1`, packed
into `POST /$batch` requests of ≤ 20 sub-requests (a user's streams stay in one batch; several users
share one), and enqueues jobs only for the streams that need one:

- no saved link, or a saved nextLink (a round in progress), or open issues the stream retries → job;
- whatever the stream says needs a job anyway (`Stream.job_anyway`: contacts held by the mass-change
  brake or without their folder id yet; the calendar's window due to move forward or its hourly series
  check due for a user with recurring meetings) → job;
- the probe answered with items or a nextLink (changes), or failed (429, 410, 5xx …) → job;
- the CRM side has changes (below) → job;
- the probe answered an empty page with a deltaLink (nothing new) → no job; the new deltaLink is saved
  under the stream's lease, conditionally on the cursor's ETag.

The CRM side. Contacts (and the push of CRM appointments into Outlook) also change in the CRM, which
a Graph probe cannot see. For those streams the sweep asks the stream (`Stream.crm_changed`), which
peeks at the CRM's change feed from the cursor the stream saved: one CRM request per user and stream
per sweep when nothing changed. The peek only reads; the job reads the same changes again from the
same cursor. A connector without a change feed (`contact_change_feed=False`: it can only return every
contact) cannot be peeked cheaply, so its contacts streams get a job on every sweep; likewise when the
peek fails. A stream with no Graph side (the push) is asked only about its CRM side.

Correctness. The probe only reads: a probe that finds changes never saves anything, so the job re-reads
from the stored link and gets the same changes (a delta link can be read again; the stored one stays
among the newest generations Graph keeps, since the probe added only one). An empty answer is saved
because every read issues a new token generation and Graph keeps only the newest few: a stored link
probed three times without saving would expire (410) and force a full resync. Saving an empty
answer's deltaLink is what a job would have done (a page with no changes, then its deltaLink). It
happens under the lease, so it cannot overwrite a running job's cursor; if a job holds the lease, the
acquire sets its pending flag and the job runs again before it lets go; if the cursor changed since it
was read, the save loses the ETag race and the newer cursor stays.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial

from shared.errors import ConcurrencyError, GraphError, GraphThrottled, StateError
from shared.model import Cursor, Job, LinkKind, StreamKind, SubRequest, UserConfig
from shared.ports.graph import MAX_BATCH, DeltaBatch
from shared.ports.state import JobQueue, StateStore
from shared.retry_after import parse_retry_after
from shared.sync.stream import Stream

logger = logging.getLogger(__name__)

PROBE_PREFER = "odata.maxpagesize=1"
SWEEP_CONCURRENCY = 16  # users planned, and batches sent, at once
PROBE_LEASE_SECONDS = 30.0

Due = tuple[str, str, float]  # (user, stream, delay seconds)


@dataclass
class SweepStats:
    users: int = 0
    probed: int = 0  # streams probed
    idle: int = 0  # streams found with nothing new (no job)
    advanced: int = 0  # idle streams whose new deltaLink was saved
    jobs: int = 0
    batches: int = 0
    crm_peeks: int = 0  # reads of a CRM change feed


@dataclass(frozen=True)
class _Probe:
    user: str
    stream: str
    cursor: Cursor
    url: str


class DeltaProbe:
    """Decides, per user, which streams need a job: state and CRM first, then Graph in `$batch`es."""

    def __init__(
        self,
        state: StateStore,
        batch: DeltaBatch,
        streams: Mapping[StreamKind, Stream],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._state = state
        self._batch = batch
        self._streams = streams
        self._clock = clock

    async def plan(self, config: UserConfig, stats: SweepStats) -> tuple[list[Due], list[_Probe]]:
        """The streams that need a job whatever Graph says, and the Graph probes for the others."""
        user = config.upn
        cursors = await self._state.list_cursors(user)
        open_issues = await self._state.list_issues(user)
        due: list[Due] = []
        probes: list[_Probe] = []
        for stream_id in config.streams():
            stream = self._streams.get(stream_id.kind)
            if stream is None:
                due.append((user, stream_id, 0.0))
                continue
            cursor = cursors.get(stream_id)
            issues = any(i.stream == stream_id and stream.retries(i) for i in open_issues)
            if stream.probed:
                url = self._batch.relative_url(cursor.link) if cursor and cursor.link else None
                if (
                    cursor is None
                    or url is None
                    or await self._job_anyway(config, stream, cursor, issues, stats)
                ):
                    due.append((user, stream_id, 0.0))
                else:
                    probes.append(_Probe(user, stream_id, cursor, url))
            elif cursor is None or await self._job_anyway(config, stream, cursor, issues, stats):
                due.append((user, stream_id, 0.0))
        return due, probes

    async def _job_anyway(
        self, config: UserConfig, stream: Stream, cursor: Cursor, issues: bool, stats: SweepStats
    ) -> bool:
        """Does the stream need a job whatever its Graph delta says?"""
        if issues or (stream.probed and cursor.link_kind != LinkKind.DELTA):
            return True  # items to retry, or a round in progress
        if stream.job_anyway(config, cursor, self._clock()):
            return True
        if not stream.crm_side:
            return False
        return await self._peek(stream.kind, partial(stream.crm_changed, config, cursor), stats)

    @staticmethod
    async def _peek(kind: str, changed: Callable[[], Awaitable[bool]], stats: SweepStats) -> bool:
        """The stream's look at the CRM side; any failure means the stream gets a job (which tells)."""
        stats.crm_peeks += 1
        try:
            return await changed()
        except Exception as error:  # CRM down or refusing, or a transport error
            logger.info("sweep CRM peek failed (%s): the %s stream gets a job", type(error).__name__, kind)
            return True

    async def probe(self, probes: Sequence[_Probe], stats: SweepStats) -> list[Due]:
        """One `$batch` (≤ 20 probes, of one user or several); the streams that need a job."""
        if not probes:
            return []
        stats.batches += 1
        stats.probed += len(probes)
        requests = [SubRequest(str(i), p.url, headers={"Prefer": PROBE_PREFER}) for i, p in enumerate(probes)]
        try:
            answers = await self._batch.send(probes[0].user, requests)
        except GraphThrottled as error:
            return [(p.user, p.stream, max(0.0, error.retry_after or 0.0)) for p in probes]
        except GraphError as error:  # denied, expired, unreachable: the jobs report it on the user's row
            logger.info("sweep probe failed status=%s: every probed stream gets a job", error.status)
            return [(p.user, p.stream, 0.0) for p in probes]
        due: list[Due] = []
        for i, probe in enumerate(probes):
            answer = answers.get(str(i))
            body = answer.body if answer is not None and isinstance(answer.body, dict) else {}
            new_link = body.get("@odata.deltaLink")
            if answer is None or not answer.ok:
                wait = parse_retry_after(answer.header("Retry-After")) if answer is not None else None
                delay = wait if answer is not None and answer.status == 429 and wait else 0.0
                due.append((probe.user, probe.stream, delay))
            elif body.get("value") or body.get("@odata.nextLink") or not isinstance(new_link, str):
                due.append((probe.user, probe.stream, 0.0))  # changes: the job re-reads them
            else:
                stats.idle += 1
                if not await self._advance(probe, new_link, stats):
                    due.append((probe.user, probe.stream, 0.0))
        return due

    async def _advance(self, probe: _Probe, link: str, stats: SweepStats) -> bool:
        """Save the idle answer's deltaLink under the lease. False when a job must run after all."""
        user = probe.user
        lease = await self._state.acquire(
            user, probe.stream, "sweep-" + uuid.uuid4().hex, PROBE_LEASE_SECONDS
        )
        if lease is None:
            return True  # a job is running; the acquire set its pending flag, so it runs again
        run_again = False
        try:
            try:
                await self._state.save_cursor(
                    user, probe.stream, replace(probe.cursor, link=link, link_kind=LinkKind.DELTA)
                )
                stats.advanced += 1
            except ConcurrencyError:
                pass  # a job saved a newer cursor since we read it: keep that one
        finally:
            try:
                while not await self._state.release(lease):
                    run_again = True  # a job found the lease taken by us: it is owed a run
            except ConcurrencyError:
                pass
        return not run_again


def pack(groups: Sequence[Sequence[_Probe]], size: int = MAX_BATCH) -> list[list[_Probe]]:
    """Batches of ≤ `size` probes, in order: a user's probes stay together unless they alone exceed a
    batch (then they fill batches of their own); several users share a batch."""
    batches: list[list[_Probe]] = []
    current: list[_Probe] = []
    for group in groups:
        if len(group) > size:
            for start in range(0, len(group), size):
                batches.append(list(group[start : start + size]))
            continue
        if len(current) + len(group) > size:
            batches.append(current)
            current = []
        current.extend(group)
    if current:
        batches.append(current)
    return batches


class Sweeper:
    """Plans the sweep for the enabled users, probes their streams in packed `$batch`es, enqueues jobs."""

    def __init__(self, queue: JobQueue, probe: DeltaProbe, *, concurrency: int = SWEEP_CONCURRENCY) -> None:
        self._queue = queue
        self._probe = probe
        self._concurrency = concurrency
        self.last = SweepStats()

    async def sweep(self, configs: Sequence[UserConfig]) -> list[Job]:
        stats = SweepStats(users=len(configs))
        slots = asyncio.Semaphore(self._concurrency)
        due: list[Due] = []

        async def plan(config: UserConfig) -> list[_Probe]:
            async with slots:
                try:
                    now, probes = await self._probe.plan(config, stats)
                except (StateError, GraphError) as error:
                    logger.info(
                        "sweep plan failed (%s): every stream of the user gets a job", type(error).__name__
                    )
                    now, probes = [(config.upn, s, 0.0) for s in config.streams()], []
                due.extend(now)
                return probes

        async def probe(batch: list[_Probe]) -> None:
            async with slots:
                try:
                    due.extend(await self._probe.probe(batch, stats))
                except (StateError, GraphError) as error:
                    logger.info("sweep probe failed (%s): its streams get a job", type(error).__name__)
                    due.extend((p.user, p.stream, 0.0) for p in batch)

        groups = await asyncio.gather(*(plan(c) for c in configs))
        await asyncio.gather(*(probe(b) for b in pack(groups)))
        jobs = [Job(user=user, stream=stream, reason="sweep") for user, stream, _ in due]

        async def enqueue(job: Job, delay: float) -> None:
            async with slots:
                await self._queue.enqueue(job, delay_seconds=delay)

        await asyncio.gather(*(enqueue(job, d[2]) for job, d in zip(jobs, due, strict=True)))
        stats.jobs = len(jobs)
        self.last = stats
        return jobs
