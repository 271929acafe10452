"""Two workers given the same user+stream at once, on the real stack (Azurite, the Graph emulator,
the reference CRM over HTTP), each with its own adapters as two Functions instances would have.

The contract (docs/architecture.md §3.3): one writer per user+stream. The job that finds the lease
taken sets the pending flag and returns "busy"; the holder runs the stream again before it lets go. So:

- no journal is written twice: every journal write in the CRM's counts (`journalWrites`: a PUT, or
  one item of a bulk write) is for a key never written before (the expectation is exact: one write
  per message, because a message read again, by the pending re-run or a repeated delta item, is
  recognised by its SyncKeys fingerprint and not written again; retries would add writes, and none
  are injected here);
- no change is skipped: mail delivered while the holder runs is journaled by the holder's re-run,
  without any further job.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from shared import wiring
from shared.model import Job, JobOutcome
from tests.integration.stack import Stack, settings_for, unique_prefix

pytestmark = pytest.mark.integration
ANN = "ann@contoso.com"
JOB = Job(ANN, "mail:inbox", "notification")


@pytest.fixture
async def workers(stack: Stack) -> AsyncIterator[tuple[wiring.Services, wiring.Services]]:
    """Two sets of services (two Function instances) over the same tables."""
    settings = settings_for(stack.azurite, stack.graph, stack.crm)
    prefix = unique_prefix()
    first = await wiring.build(settings, table_prefix=prefix)
    second = await wiring.build(settings, table_prefix=prefix)
    try:
        stack.graph.control.add_user(ANN)
        await first.state.put_config(ANN, {"Enabled": True, "MailFolders": "inbox"})
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


def puts(stack: Stack) -> int:
    return int(stack.crm.stats()["journalWrites"])


async def deliver(stack: Stack, label: str, count: int) -> list[str]:
    keys = [f"<{label}-{n}@fabrikam.example>" for n in range(count)]
    for key in keys:
        await asyncio.to_thread(stack.deliver, ANN, subject=label, internetMessageId=key)
    return keys


async def when_writing(stack: Stack) -> None:
    """Until the CRM has received a journal write of this run (the holder is mid-run)."""
    before = await asyncio.to_thread(puts, stack)
    for _ in range(400):
        if await asyncio.to_thread(puts, stack) > before:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the holder never wrote a journal")


@pytest.mark.parametrize("first_round", [True, False], ids=["initial round", "after the initial round"])
async def test_two_workers_at_once_write_each_journal_once_and_the_holder_reruns_for_new_mail(
    stack: Stack, workers: tuple[wiring.Services, wiring.Services], first_round: bool
) -> None:
    first, second = workers
    delivered: list[str] = []
    if not first_round:
        delivered += await deliver(stack, "earlier", 4)
        assert (await first.engine.run_job(JOB)).status == "done"
    delivered += await deliver(stack, "before", 12)
    writes_before = puts(stack)
    # slow journal writes down so that the run is still going when the second job and the new mail arrive
    stack.crm.fault(None, count=None, method="PUT", path_contains="/journals/", delay_seconds=0.1)

    async def mail_during_the_run() -> list[str]:
        await when_writing(stack)
        return await deliver(stack, "during", 3)

    outcomes: list[JobOutcome]
    *outcomes, during = await asyncio.gather(
        first.engine.run_job(JOB), second.engine.run_job(JOB), mail_during_the_run()
    )
    delivered += during

    assert sorted(o.status for o in outcomes) == ["busy", "done"]
    journals = stack.journals()
    assert sorted(journals) == sorted(delivered)  # nothing skipped, with no job after these two
    assert all(j["seenBy"] == [ANN] for j in journals.values())
    new = len(delivered) - (4 if not first_round else 0)
    assert puts(stack) - writes_before == new  # each new message written exactly once


async def test_racing_pairs_of_workers_never_write_twice_nor_lose_mail(
    stack: Stack, workers: tuple[wiring.Services, wiring.Services]
) -> None:
    """Rounds of two jobs started a random moment apart, mail arriving before and during each round.
    Mail delivered before a round starts is journaled when the round ends; mail delivered during a
    round is journaled by the end of the next round at the latest (in production its notification
    brings a job of its own)."""
    first, second = workers
    rng = random.Random(4)
    stack.crm.fault(None, count=None, method="PUT", path_contains="/journals/", delay_seconds=0.03)
    delivered_before: list[str] = []
    delivered_during: list[str] = []
    statuses: list[str] = []

    async def later(services: wiring.Services, delay: float) -> JobOutcome:
        await asyncio.sleep(delay)
        return await services.engine.run_job(JOB)

    async def mail_during(label: str, delay: float) -> list[str]:
        await asyncio.sleep(delay)
        return await deliver(stack, label, 1)

    for round_ in range(6):
        delivered_before += await deliver(stack, f"r{round_}-before", rng.randint(1, 4))
        pair = [first, second] if rng.random() < 0.5 else [second, first]
        results = await asyncio.gather(
            later(pair[0], 0.0),
            later(pair[1], rng.uniform(0.0, 0.3)),
            mail_during(f"r{round_}-during", rng.uniform(0.0, 0.3)),
        )
        statuses += [results[0].status, results[1].status]
        journals = stack.journals()
        assert set(delivered_before) <= set(journals), f"round {round_} lost mail delivered before it"
        assert set(delivered_during) <= set(journals), f"round {round_} lost an earlier round's mail"
        delivered_during += results[2]

    await first.engine.run_job(JOB)  # the quiet job after the last round's mail
    journals = stack.journals()
    assert sorted(journals) == sorted(delivered_before + delivered_during)
    assert puts(stack) == len(journals)  # not one journal written twice
    assert set(statuses) <= {"done", "busy"} and "done" in statuses
