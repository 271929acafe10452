"""The queue worker, called directly with the message the queue trigger would hand it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from functions import worker
from shared.errors import CrmRetryableError
from shared.model import Job, SubscriptionRecord
from shared.telemetry import user_tag
from tests.functions.conftest import App, queue_message

ANN = "ann@contoso.com"


async def run(message_text: str | bytes, dequeue_count: int = 1) -> None:
    await worker.sync_worker(queue_message(message_text, dequeue_count))


async def wait_for_jobs(app: App, count: int = 1) -> list[Job]:
    """The Graph emulator posts notifications from its own process; wait until they were queued."""
    for _ in range(200):
        if len(app.jobs()) >= count:
            break
        await asyncio.sleep(0.05)
    return app.jobs()


@pytest.mark.parametrize(
    "text",
    [b"not json at all <bob@fabrikam.example>", b'{"user": 7, "stream": "mail:inbox"}', b"[1, 2]", b""],
    ids=["not json", "wrong types", "a list", "empty"],
)
async def test_a_malformed_message_is_dropped_with_an_error_log(
    app: App, caplog: pytest.LogCaptureFixture, text: bytes
) -> None:
    await app.add_user(ANN)
    with caplog.at_level(logging.INFO):
        await run(text)  # returns: the message is deleted, not retried into the poison queue
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "malformed queue message" in errors[0].getMessage()
    assert "fabrikam" not in caplog.text
    assert app.crm.journals == {} and app.jobs() == []
    row = await app.state.get_user(ANN)
    assert row is not None and "State" not in row.columns


async def test_a_job_runs_journals_the_mail_and_logs_one_line_without_personal_data(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    await app.add_user(ANN, MailFolders="inbox")
    for n in range(3):
        app.deliver(ANN, subject=f"Order {n}", internetMessageId=f"<order-{n}@fabrikam.example>")
    with caplog.at_level(logging.INFO, logger="functions.worker"):
        await run(Job(ANN, "mail:inbox", "notification").to_json())
    assert sorted(app.crm.journals) == [f"<order-{n}@fabrikam.example>" for n in range(3)]
    row = await app.state.get_user(ANN)
    assert row is not None and row.columns["State"] == "ok" and not row.columns["LastError"]
    summaries = [r.getMessage() for r in caplog.records if r.name == "functions.worker"]
    assert len(summaries) == 1
    assert f"user={user_tag(ANN)}" in summaries[0] and "outcome=done" in summaries[0]
    assert "journaled=3" in summaries[0]
    for secret in (ANN, "Order", "fabrikam", "deltatoken"):
        assert secret not in caplog.text


async def test_a_job_that_keeps_failing_says_why_on_the_users_status_at_the_last_dequeue(app: App) -> None:
    await app.add_user(ANN, MailFolders="inbox")
    app.deliver(ANN, subject="Order", internetMessageId="<order@fabrikam.example>")
    app.crm.fail_next("*", CrmRetryableError("CRM unavailable", status=503), times=10_000)
    message = Job(ANN, "mail:inbox", "notification").to_json()

    for attempt in range(1, worker.MAX_DEQUEUE_COUNT):
        with pytest.raises(CrmRetryableError):
            await run(message, dequeue_count=attempt)
        row = await app.state.get_user(ANN)
        assert row is not None and row.columns["State"] == "error"
        assert "poison" not in row.columns["LastError"]

    with pytest.raises(CrmRetryableError):
        await run(message, dequeue_count=worker.MAX_DEQUEUE_COUNT)
    row = await app.state.get_user(ANN)
    assert row is not None and row.columns["State"] == "error"
    assert row.columns["LastError"].startswith("mail:inbox: failed 5 times, moved to the poison queue")
    assert "CRM unavailable" in row.columns["LastError"]
    assert app.crm.journals == {}


async def test_graphs_notifications_reach_the_worker_as_one_job_and_become_journals(app: App) -> None:
    await app.add_user(ANN, MailFolders="inbox")
    await app.services.keeper.upkeep()
    for n in range(5):
        app.deliver(ANN, subject=f"Order {n}", internetMessageId=f"<burst-{n}@fabrikam.example>")
    jobs = await wait_for_jobs(app)
    assert jobs == [Job(ANN, "mail:inbox", "notification")]
    assert app.graph.control.stats()["notifications"]["posts"] >= 1
    for message in app.take_messages():
        await worker.sync_worker(message)
    assert sorted(app.crm.journals) == [f"<burst-{n}@fabrikam.example>" for n in range(5)]


async def subscription(app: App) -> SubscriptionRecord:
    records = await app.state.list_subscriptions(ANN)
    assert len(records) == 1
    return records[0]


async def test_subscription_removed_recreates_it_and_syncs_the_mail_of_the_gap(app: App) -> None:
    await app.add_user(ANN, MailFolders="inbox")
    await app.services.keeper.upkeep()
    old = await subscription(app)
    app.graph.control.lifecycle(old.subscription_id, "subscriptionRemoved")
    app.deliver(ANN, subject="Sent while unsubscribed", internetMessageId="<gap@fabrikam.example>")
    jobs = await wait_for_jobs(app)
    assert jobs == [Job(ANN, "mail:inbox", "lifecycle:subscriptionRemoved")]

    for message in app.take_messages():
        await worker.sync_worker(message)
    new = await subscription(app)
    assert new.subscription_id != old.subscription_id and new.client_state != old.client_state
    assert list(app.graph_subscriptions()) == [new.subscription_id]
    assert list(app.crm.journals) == ["<gap@fabrikam.example>"]


async def test_reauthorization_required_renews_the_same_subscription(app: App) -> None:
    await app.add_user(ANN, MailFolders="inbox")
    await app.services.keeper.upkeep()
    old = await subscription(app)
    soon = datetime.now(UTC) + timedelta(minutes=30)
    await app.state.put_subscription(replace(old, expires=soon))
    app.graph.control.lifecycle(old.subscription_id, "reauthorizationRequired")
    assert await wait_for_jobs(app) == [Job(ANN, "mail:inbox", "lifecycle:reauthorizationRequired")]

    for message in app.take_messages():
        await worker.sync_worker(message)
    renewed = await subscription(app)
    assert (renewed.subscription_id, renewed.client_state) == (old.subscription_id, old.client_state)
    assert renewed.expires > datetime.now(UTC) + timedelta(days=2)
    assert list(app.graph_subscriptions()) == [old.subscription_id]


async def test_missed_notifications_are_covered_by_a_delta_sync(app: App) -> None:
    await app.add_user(ANN, MailFolders="inbox")
    await app.services.keeper.upkeep()
    old = await subscription(app)
    app.deliver(ANN, subject="Missed", internetMessageId="<missed@fabrikam.example>")
    await wait_for_jobs(app)
    app.queue.messages.clear()  # as if Graph had dropped that notification
    app.graph.control.lifecycle(old.subscription_id, "missed")
    assert await wait_for_jobs(app) == [Job(ANN, "mail:inbox", "lifecycle:missed")]
    for message in app.take_messages():
        await worker.sync_worker(message)
    assert list(app.crm.journals) == ["<missed@fabrikam.example>"]
    assert await subscription(app) == old
