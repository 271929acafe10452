"""The sweep's `$batch` delta probe on the real stack: idle users cost one Graph request and get no job;
changes, failures and rounds in progress always get a job; a probe never loses a change and never lets
the stored delta link age into a 410."""

from __future__ import annotations

from shared.model import Job
from tests.integration.stack import Stack

ANN = "ann@contoso.com"
BOB = "bob@contoso.com"


def batches(stack: Stack) -> int:
    return int(stack.graph.control.stats()["byRoute"].get("POST /$batch", 0))


async def synced(stack: Stack, *upns: str) -> None:
    for upn in upns:
        await stack.add_user(upn)
        outcomes = await stack.sync(upn)
        assert [o.status for o in outcomes] == ["done", "done"]


async def test_idle_users_share_a_batch_and_get_no_job(stack: Stack) -> None:
    await synced(stack, ANN, BOB)
    before = await stack.services.state.get_cursor(ANN, "mail:inbox")
    start = batches(stack)
    for _ in range(5):  # more sweeps than the delta token generations Graph keeps
        assert await stack.services.engine.sweep() == []
    assert batches(stack) - start == 5  # both users' links in one $batch per sweep
    after = await stack.services.state.get_cursor(ANN, "mail:inbox")
    assert after.link != before.link and after.link_kind == "delta"

    stack.deliver(ANN, subject="After five idle sweeps")
    jobs = await stack.services.engine.sweep()
    assert jobs == [Job(ANN, "mail:inbox", "sweep")]
    outcome = await stack.services.engine.run_job(jobs[0])
    assert outcome.status == "done" and outcome.stats["fresh_rounds"] == 0
    assert [j["subject"] for j in stack.journals().values()] == ["After five idle sweeps"]


async def test_a_probe_that_sees_changes_keeps_them_for_the_job(stack: Stack) -> None:
    await synced(stack, ANN)
    stored = await stack.services.state.get_cursor(ANN, "mail:inbox")
    stack.deliver(ANN, subject="Seen by the probe")
    for _ in range(2):
        assert await stack.services.engine.sweep() == [Job(ANN, "mail:inbox", "sweep")]
    assert (await stack.services.state.get_cursor(ANN, "mail:inbox")).link == stored.link
    outcome = await stack.services.engine.run_job(Job(ANN, "mail:inbox", "sweep"))
    assert outcome.status == "done"
    assert [j["subject"] for j in stack.journals().values()] == ["Seen by the probe"]
    assert await stack.services.engine.sweep() == []


async def test_a_failed_probe_gives_every_probed_stream_a_job(stack: Stack) -> None:
    await synced(stack, ANN)
    stack.graph.control.fault(500, count=1, pathContains="/$batch")  # not retried in the call
    jobs = await stack.services.engine.sweep()
    assert sorted(j.stream for j in jobs) == ["mail:inbox", "mail:sentitems"]


async def test_a_throttled_sub_request_gives_that_stream_a_job(stack: Stack) -> None:
    await synced(stack, ANN)
    stack.graph.control.fault(429, count=1, pathContains="/messages/delta", retryAfter=1)
    jobs = await stack.services.engine.sweep()
    assert len(jobs) == 1 and jobs[0].user == ANN


async def test_a_stream_without_a_delta_link_gets_a_job_without_a_probe(stack: Stack) -> None:
    await stack.add_user(ANN)
    start = batches(stack)
    jobs = await stack.services.engine.sweep()
    assert sorted(j.stream for j in jobs) == ["mail:inbox", "mail:sentitems"]
    assert batches(stack) == start


async def test_an_idle_probe_leaves_a_running_job_alone_and_owes_it_a_run(stack: Stack) -> None:
    await synced(stack, ANN)
    state = stack.services.state
    lease = await state.acquire(ANN, "mail:inbox", "running-job", 60)
    assert lease is not None
    cursor = await state.get_cursor(ANN, "mail:inbox")
    assert await stack.services.engine.sweep() == []
    assert (await state.get_cursor(ANN, "mail:inbox")).link == cursor.link  # not touched under a live lease
    assert await state.release(lease) is False  # the probe set the pending flag: the holder runs again
    assert await state.release(lease) is True
