"""The timers, called directly: the safety-net sweep and the upkeep of Graph subscriptions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import azure.functions as func
from azure.functions.timer import TimerRequest

from functions import timers
from shared.model import Job
from tests.functions.conftest import App

ANN, DAN, EVE, FAY, GUS = (f"{n}@contoso.com" for n in ("ann", "dan", "eve", "fay", "gus"))


async def sweep() -> None:
    await timers.sync_sweep(TimerRequest(past_due=False))


async def upkeep() -> None:
    await timers.subscription_upkeep(TimerRequest(past_due=False))


async def test_the_sweep_queues_one_job_per_enabled_user_and_stream_and_backs_off_users_in_error(
    app: App,
) -> None:
    now = datetime.now(UTC)
    await app.state.put_config(ANN, {"Enabled": True})  # default streams: inbox and sent items
    await app.state.put_config(DAN, {"Enabled": True, "MailFolders": "inbox,archive"})
    await app.state.put_config(EVE, {"Enabled": False})
    await app.state.put_config(FAY, {"Enabled": True, "MailFolders": "inbox"})
    await app.state.update_status(
        FAY, {"State": "error", "LastErrorUtc": now - timedelta(minutes=1), "ErrorCount": 1}
    )
    await app.state.put_config(GUS, {"Enabled": True, "MailFolders": "inbox"})
    await app.state.update_status(
        GUS, {"State": "error", "LastErrorUtc": now - timedelta(minutes=30), "ErrorCount": 2}
    )
    await app.state.put_config("bad@contoso.com", {"Enabled": True, "DaysBack": "a fortnight"})

    await sweep()
    assert sorted(app.jobs(), key=lambda j: (j.user, j.stream)) == [
        Job(ANN, "mail:inbox"),
        Job(ANN, "mail:sentitems"),
        Job(DAN, "mail:archive"),
        Job(DAN, "mail:inbox"),
        Job(GUS, "mail:inbox"),  # 2 errors: waits 10 min, and 30 have passed
    ]
    bad = await app.state.get_user("bad@contoso.com")
    assert bad is not None and bad.columns["State"] == "error" and "DaysBack" in bad.columns["LastError"]

    app.queue.messages.clear()
    app.clock.offset = timedelta(minutes=5)  # Fay's back-off (one error: 5 min) is over
    await sweep()
    assert Job(FAY, "mail:inbox") in app.jobs()


async def test_the_upkeep_creates_a_subscription_per_enabled_user_and_stream(app: App) -> None:
    await app.add_user(ANN)
    await app.add_user(DAN, MailFolders="inbox")
    await app.add_user(EVE, Enabled=False)
    await upkeep()
    records = {(r.user, r.stream): r for r in await app.state.list_subscriptions()}
    assert sorted(records) == [(ANN, "mail:inbox"), (ANN, "mail:sentitems"), (DAN, "mail:inbox")]
    in_graph = app.graph_subscriptions()
    assert sorted(in_graph) == sorted(r.subscription_id for r in records.values())
    assert len({r.client_state for r in records.values()}) == 3  # random per subscription
    for record in records.values():
        graph_side = in_graph[record.subscription_id]
        assert graph_side["resource"] == record.resource
        assert graph_side["notificationUrl"] == f"{app.webhook.base_url}/notifications?code={app.webhook.key}"
        assert graph_side["lifecycleNotificationUrl"].startswith(f"{app.webhook.base_url}/lifecycle?code=")

    await upkeep()  # nothing to do the second time
    assert {(r.user, r.stream): r.subscription_id for r in await app.state.list_subscriptions()} == {
        key: r.subscription_id for key, r in records.items()
    }
    assert sorted(app.graph_subscriptions()) == sorted(in_graph)


async def test_the_upkeep_renews_those_near_expiry_and_recreates_those_graph_removed(app: App) -> None:
    await app.add_user(ANN)
    await upkeep()
    inbox, sent = sorted(await app.state.list_subscriptions(ANN), key=lambda r: r.stream)
    soon = datetime.now(UTC) + timedelta(hours=2)
    for record in (inbox, sent):
        await app.state.put_subscription(replace(record, expires=soon))
    app.graph.control.lifecycle(sent.subscription_id, "subscriptionRemoved")  # Graph dropped this one

    await upkeep()
    after = {r.stream: r for r in await app.state.list_subscriptions(ANN)}
    assert after["mail:inbox"].subscription_id == inbox.subscription_id
    assert after["mail:inbox"].expires > datetime.now(UTC) + timedelta(days=2)
    graph_side = app.graph_subscriptions()
    assert datetime.fromisoformat(graph_side[inbox.subscription_id]["expirationDateTime"]) > soon
    assert after["mail:sentitems"].subscription_id != sent.subscription_id
    assert sorted(graph_side) == sorted(r.subscription_id for r in after.values())


async def test_the_upkeep_deletes_the_subscriptions_of_disabled_users_and_dropped_folders(app: App) -> None:
    await app.add_user(ANN)
    await app.add_user(DAN)
    await upkeep()
    await app.state.put_config(DAN, {"Enabled": False})
    await app.state.put_config(ANN, {"MailFolders": "inbox"})
    await upkeep()
    records = await app.state.list_subscriptions()
    assert [(r.user, r.stream) for r in records] == [(ANN, "mail:inbox")]
    assert list(app.graph_subscriptions()) == [records[0].subscription_id]


async def test_the_upkeep_records_a_mailbox_graph_refuses_and_carries_on(app: App) -> None:
    await app.add_user(ANN, MailFolders="inbox")
    await app.add_user(DAN, MailFolders="inbox")
    app.graph.control.deny(DAN)
    await upkeep()
    assert [r.user for r in await app.state.list_subscriptions()] == [ANN]
    dan = await app.state.get_user(DAN)
    assert dan is not None and dan.columns["LastError"].startswith("subscription for mail:inbox:")


def test_no_timer_runs_on_startup() -> None:
    """On Flex Consumption a startup run happens on every scale-out and wake-up; the schedules cover a
    new deployment (subscriptions within 30 minutes, the sweep's syncs within 5)."""
    app = func.FunctionApp()
    app.register_functions(timers.bp)
    found = {f.get_function_name(): f.get_trigger().get_dict_repr() for f in app.get_functions()}
    assert set(found) == {"sync_sweep", "subscription_upkeep"}
    assert {name: trigger["runOnStartup"] for name, trigger in found.items()} == dict.fromkeys(found, False)
