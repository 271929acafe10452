"""The safety-net sweep at the price of at most one Graph request per idle user.

Without a probe the sweep enqueues a job per enabled user and stream, and each job reads its delta
link: one Graph request per stream, plus a dozen table transactions, for every user every few minutes,
even when nothing changed. With `DeltaProbe`, the sweep instead reads each user's saved mail delta links
in one `POST /$batch` (≤ 20 sub-requests), with `odata.maxpagesize=1`, and enqueues jobs only for the
streams that need one:

- no saved link, or a saved nextLink (a round in progress), or open issues to retry → job;
- the probe answered with items or a nextLink (changes), or failed (429, 410, 5xx …) → job;
- the probe answered an empty page with a deltaLink (nothing new) → no job; the new deltaLink is saved
  under the stream's lease, conditionally on the cursor's ETag.

Correctness. The probe only reads: a probe that finds changes never saves anything, so the job re-reads
from the stored link and gets the same changes (a delta link can be read again; the stored one stays
among the newest generations Graph keeps, since the probe added only one). An empty answer is saved
because every read issues a new token generation and Graph keeps only the newest few: a stored link
probed three times without saving would expire (410) and force a full resync. Saving an empty
answer's deltaLink is what a job would have done (a page with no changes, then its deltaLink). It
happens under the lease, so it cannot overwrite a running job's cursor; if a job holds the lease, the
acquire sets its pending flag and the job runs again before it lets go; if the cursor changed since it
was read, the save loses the ETag race and the newer cursor stays.

Streams whose changes also come from the CRM (contacts, calendar pushes) always get a job: a Graph
probe cannot see the CRM side.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from shared.errors import ConcurrencyError, GraphError, GraphThrottled, StateError
from shared.graph.batch import MAX_BATCH, GraphBatch, SubRequest
from shared.model import Job
from shared.retry_after import parse_retry_after
from shared.state.port import Cursor, JobQueue, StateStore
from shared.users import UserConfig

logger = logging.getLogger(__name__)

PROBED_KINDS = ("mail",)  # streams whose only source of change is Graph
PROBE_PREFER = "odata.maxpagesize=1"
SWEEP_CONCURRENCY = 16  # users probed at once (each probe is one request for one mailbox)
PROBE_LEASE_SECONDS = 30.0


@dataclass
class SweepStats:
    users: int = 0
    probed: int = 0  # streams probed
    idle: int = 0  # streams found with nothing new (no job)
    advanced: int = 0  # idle streams whose new deltaLink was saved
    jobs: int = 0
    batches: int = 0


@dataclass(frozen=True)
class _Probe:
    stream: str
    cursor: Cursor
    url: str


class DeltaProbe:
    """Decides, per user, which streams need a job, with one `$batch` of delta reads."""

    def __init__(self, state: StateStore, batch: GraphBatch) -> None:
        self._state = state
        self._batch = batch

    async def due(self, config: UserConfig, stats: SweepStats) -> list[tuple[str, float]]:
        """(stream, delay seconds) for each stream that needs a job now."""
        streams = config.streams()
        probed = [s for s in streams if s.partition(":")[0] in PROBED_KINDS]
        due: list[tuple[str, float]] = [(s, 0.0) for s in streams if s not in probed]
        if not probed:
            return due
        cursors = await self._state.list_cursors(config.upn)
        with_issues = {i.stream for i in await self._state.list_issues(config.upn)}
        probes: list[_Probe] = []
        for stream in probed:
            cursor = cursors.get(stream)
            url = self._batch.relative_url(cursor.link) if cursor and cursor.link else None
            if cursor is None or cursor.link_kind != "delta" or url is None or stream in with_issues:
                due.append((stream, 0.0))
            else:
                probes.append(_Probe(stream, cursor, url))
        for start in range(0, len(probes), MAX_BATCH):
            due.extend(await self._probe(config, probes[start : start + MAX_BATCH], stats))
        return due

    async def _probe(
        self, config: UserConfig, probes: Sequence[_Probe], stats: SweepStats
    ) -> list[tuple[str, float]]:
        stats.batches += 1
        stats.probed += len(probes)
        requests = [SubRequest(str(i), p.url, headers={"Prefer": PROBE_PREFER}) for i, p in enumerate(probes)]
        try:
            answers = await self._batch.send(config.upn, requests)
        except GraphThrottled as error:
            return [(p.stream, max(0.0, error.retry_after or 0.0)) for p in probes]
        except GraphError as error:  # denied, expired, unreachable: the jobs report it on the user's row
            logger.info("sweep probe failed status=%s: every probed stream gets a job", error.status)
            return [(p.stream, 0.0) for p in probes]
        due: list[tuple[str, float]] = []
        for i, probe in enumerate(probes):
            answer = answers.get(str(i))
            body = answer.body if answer is not None and isinstance(answer.body, dict) else {}
            new_link = body.get("@odata.deltaLink")
            if answer is None or not answer.ok:
                wait = parse_retry_after(answer.header("Retry-After")) if answer is not None else None
                due.append(
                    (probe.stream, wait if answer is not None and answer.status == 429 and wait else 0.0)
                )
            elif body.get("value") or body.get("@odata.nextLink") or not isinstance(new_link, str):
                due.append((probe.stream, 0.0))  # changes: the job re-reads them from the stored link
            else:
                stats.idle += 1
                if not await self._advance(config.upn, probe, new_link, stats):
                    due.append((probe.stream, 0.0))
        return due

    async def _advance(self, user: str, probe: _Probe, link: str, stats: SweepStats) -> bool:
        """Save the idle answer's deltaLink under the lease. False when a job must run after all."""
        lease = await self._state.acquire(
            user, probe.stream, "sweep-" + uuid.uuid4().hex, PROBE_LEASE_SECONDS
        )
        if lease is None:
            return True  # a job is running; the acquire set its pending flag, so it runs again
        run_again = False
        try:
            try:
                await self._state.save_cursor(
                    user, probe.stream, replace(probe.cursor, link=link, link_kind="delta")
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


class Sweeper:
    """Plans the sweep for the enabled users, probing several users at once, and enqueues the jobs."""

    def __init__(self, queue: JobQueue, probe: DeltaProbe, *, concurrency: int = SWEEP_CONCURRENCY) -> None:
        self._queue = queue
        self._probe = probe
        self._concurrency = concurrency
        self.last = SweepStats()

    async def sweep(self, configs: Sequence[UserConfig]) -> list[Job]:
        stats = SweepStats(users=len(configs))
        jobs: list[Job] = []
        slots = asyncio.Semaphore(self._concurrency)

        async def one(config: UserConfig) -> None:
            async with slots:
                try:
                    due = await self._probe.due(config, stats)
                except (StateError, GraphError) as error:
                    logger.info(
                        "sweep probe failed (%s): every stream of the user gets a job", type(error).__name__
                    )
                    due = [(s, 0.0) for s in config.streams()]
                for stream, delay in due:
                    job = Job(user=config.upn, stream=stream, reason="sweep")
                    await self._queue.enqueue(job, delay_seconds=delay)
                    jobs.append(job)

        await asyncio.gather(*(one(c) for c in configs))
        stats.jobs = len(jobs)
        self.last = stats
        return jobs
