"""Queue: run one sync job (one user, one stream) under its lease. Logs one summary line per job."""

from __future__ import annotations

import logging
import time

import azure.functions as func

from shared import wiring
from shared.model import Job
from shared.telemetry import user_tag

bp = func.Blueprint()
logger = logging.getLogger(__name__)
MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount


@bp.queue_trigger(arg_name="msg", queue_name="sync-jobs", connection="AzureWebJobsStorage")
async def sync_worker(msg: func.QueueMessage) -> None:
    try:
        job = Job.from_json(msg.get_body())
    except ValueError as error:
        logger.error("job dropped: malformed queue message id=%s (%s)", msg.id, error)
        return
    services = await wiring.services()
    started = time.perf_counter()
    try:
        if job.reason.startswith("lifecycle:"):
            await services.keeper.on_lifecycle(job.user, job.stream, job.reason.partition(":")[2])
        outcome = await services.engine.run_job(job)
    except Exception as error:
        if (msg.dequeue_count or 0) >= MAX_DEQUEUE_COUNT:
            reason = f"{job.stream}: failed {MAX_DEQUEUE_COUNT} times, moved to the poison queue: {error}"
            await services.state.update_status(job.user, {"State": "error", "LastError": reason})
        raise
    stats = " ".join(f"{k}={v}" for k, v in outcome.stats.items())
    logger.info("job user=%s stream=%s reason=%s outcome=%s duration_ms=%d %s", user_tag(job.user),
                job.stream.split(":")[0], job.reason, outcome.status,
                (time.perf_counter() - started) * 1000, stats)  # fmt: skip
