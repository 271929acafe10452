"""Timers: the safety-net sweep, and the upkeep of Graph subscriptions."""

from __future__ import annotations

import logging

import azure.functions as func

from shared import wiring

bp = func.Blueprint()
logger = logging.getLogger(__name__)


@bp.timer_trigger(arg_name="timer", schedule="%SYNC_SCHEDULE%", run_on_startup=False)
async def sync_sweep(timer: func.TimerRequest) -> None:
    services = await wiring.services()
    jobs = await services.engine.sweep()
    logger.info("sweep enqueued=%d past_due=%s", len(jobs), timer.past_due)


# Not on startup: on Flex Consumption that would run on every scale-out and wake-up. Its schedule
# (every 30 minutes) covers a new deployment; until then the sweep syncs every 5 minutes.
@bp.timer_trigger(arg_name="timer", schedule="%SUBSCRIPTION_SCHEDULE%", run_on_startup=False)
async def subscription_upkeep(timer: func.TimerRequest) -> None:
    services = await wiring.services()
    report = await services.keeper.upkeep()
    logger.info("subscriptions created=%d renewed=%d deleted=%d failed=%d",
                report.created, report.renewed, report.deleted, len(report.failed))  # fmt: skip
