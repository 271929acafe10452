"""The notification and lifecycle webhooks, called directly, for each class of input Graph (or anyone
who finds the URL) may send. Every test asserts on what the queue holds afterwards."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from functions import notifications
from shared.model import Job, SubscriptionRecord
from shared.notifications import (
    COALESCE_SECONDS,
    MAX_BODY_BYTES,
    MAX_DISTINCT_SUBSCRIPTIONS,
    MAX_REFUSED_SUBSCRIPTIONS,
    handle_changes,
)
from shared.state.memory import InMemoryJobQueue, InMemoryStateStore
from tests.functions.conftest import App, http_request

ANN, DAN = "ann@contoso.com", "dan@contoso.com"
TOKEN = "Validation: Testing client application reachability for subscription Request-Id: 3b2f6c1e-0000"


async def subscribe(app: App, user: str, stream: str, sid: str, client_state: str | None = None) -> str:
    """A subscription of ours, as the upkeep would have stored it; returns its clientState."""
    state = client_state or f"secret-{sid}"
    folder = stream.partition(":")[2]
    await app.state.put_subscription(
        SubscriptionRecord(
            user,
            f"users/{user}/mailFolders('{folder}')/messages",
            stream,
            sid,
            state,
            datetime.now(UTC) + timedelta(days=2),
        )
    )
    return state


def change(sid: str, client_state: str, change_type: str = "created", item: str = "AAMk1") -> dict[str, Any]:
    return {
        "subscriptionId": sid,
        "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
        "changeType": change_type,
        "resource": f"Users/x/Messages/{item}",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "id": item},
        "clientState": client_state,
        "tenantId": "00000000-0000-0000-0000-000000000001",
    }


async def post(
    body: bytes | dict[str, Any], *, lifecycle: bool = False, params: dict[str, str] | None = None
) -> func.HttpResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    name = "lifecycle" if lifecycle else "notifications"
    handler = notifications.graph_lifecycle if lifecycle else notifications.graph_notifications
    return await handler(http_request(name, raw, params=params))


@pytest.mark.parametrize("lifecycle", [False, True], ids=["notifications", "lifecycle"])
async def test_validation_handshake_echoes_the_decoded_token_as_plain_text(app: App, lifecycle: bool) -> None:
    response = await post(b"", lifecycle=lifecycle, params={"validationToken": TOKEN})
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_body().decode() == TOKEN
    assert app.jobs() == []


async def test_a_validation_token_past_the_cap_is_refused(app: App) -> None:
    response = await post(b"", params={"validationToken": "x" * 5000})
    assert response.status_code == 400 and app.jobs() == []


async def test_the_emulated_graph_validates_the_webhook_through_the_function(app: App) -> None:
    """Graph's own handshake (URL-encoded token, `?code=` kept) reaches the function and succeeds:
    the upkeep creates subscriptions only if both URLs answered it."""
    await app.add_user(ANN, MailFolders="inbox")
    report = await app.services.keeper.upkeep()
    assert (report.created, report.failed) == (1, [])
    assert [s["notificationUrl"].split("?")[0] for s in app.graph_subscriptions().values()] == [
        f"{app.webhook.base_url}/notifications"
    ]


async def test_a_valid_notification_queues_one_job_for_its_user_and_stream(app: App) -> None:
    secret = await subscribe(app, ANN, "mail:inbox", "sub-1")
    response = await post({"value": [change("sub-1", secret)]})
    assert response.status_code == 202
    assert app.jobs() == [Job(ANN, "mail:inbox", "notification")]


async def test_a_duplicate_notification_queues_nothing_more(app: App) -> None:
    secret = await subscribe(app, ANN, "mail:inbox", "sub-1")
    body = {"value": [change("sub-1", secret), change("sub-1", secret, "updated")]}
    assert (await post(body)).status_code == 202
    assert (await post(body)).status_code == 202
    assert app.jobs() == [Job(ANN, "mail:inbox", "notification")]


async def test_reordered_notifications_queue_the_same_jobs_as_ordered_ones(app: App) -> None:
    inbox = await subscribe(app, ANN, "mail:inbox", "sub-1")
    sent = await subscribe(app, ANN, "mail:sentitems", "sub-2")
    dan = await subscribe(app, DAN, "mail:inbox", "sub-3")
    ordered = [
        change("sub-1", inbox, "created", "m1"),
        change("sub-1", inbox, "updated", "m1"),
        change("sub-2", sent, "created", "m2"),
        change("sub-3", dan, "created", "m3"),
        change("sub-1", inbox, "deleted", "m1"),
    ]
    assert (await post({"value": ordered})).status_code == 202
    in_order = sorted(app.jobs(), key=lambda j: (j.user, j.stream))
    app.queue.messages.clear()
    for stream in ("mail:inbox", "mail:sentitems"):
        await app.state.clear_queued(ANN, stream)
    await app.state.clear_queued(DAN, "mail:inbox")

    reordered = list(reversed(ordered))
    for notification in reordered:  # and one request per notification, as Graph may also do
        assert (await post({"value": [notification]})).status_code == 202
    assert sorted(app.jobs(), key=lambda j: (j.user, j.stream)) == in_order
    assert in_order == [
        Job(ANN, "mail:inbox", "notification"),
        Job(ANN, "mail:sentitems", "notification"),
        Job(DAN, "mail:inbox", "notification"),
    ]


@pytest.mark.parametrize("lifecycle", [False, True], ids=["notifications", "lifecycle"])
async def test_a_forged_client_state_is_answered_202_and_changes_nothing(app: App, lifecycle: bool) -> None:
    secret = await subscribe(app, ANN, "mail:inbox", "sub-1")
    forgeries = [secret[:-1] + ("A" if secret[-1] != "A" else "B"), "", secret + "x", secret.upper()]
    for forged in forgeries:
        note = change("sub-1", forged) | ({"lifecycleEvent": "missed"} if lifecycle else {})
        assert (await post({"value": [note]}, lifecycle=lifecycle)).status_code == 202
    assert app.jobs() == []
    # and nothing was marked queued: the first genuine notification still gets through
    assert (await post({"value": [change("sub-1", secret)]})).status_code == 202
    assert app.jobs() == [Job(ANN, "mail:inbox", "notification")]


async def test_an_unknown_subscription_is_answered_202_and_changes_nothing(app: App) -> None:
    secret = await subscribe(app, ANN, "mail:inbox", "sub-1")
    response = await post({"value": [change("sub-unknown", secret), change("sub-2", "secret-sub-2")]})
    assert response.status_code == 202
    assert app.jobs() == []


async def test_a_forged_entry_does_not_spoil_the_genuine_one_beside_it(app: App) -> None:
    secret = await subscribe(app, ANN, "mail:inbox", "sub-1")
    await subscribe(app, DAN, "mail:inbox", "sub-3")
    response = await post({"value": [change("sub-3", "guessed"), change("sub-1", secret)]})
    assert response.status_code == 202
    assert app.jobs() == [Job(ANN, "mail:inbox", "notification")]


MALFORMED = {
    "not json": b"{value: [",
    "not utf-8": b'{"value": ["\xff\xfe"]}',
    "empty body": b"",
    "a list": b"[]",
    "no value": b'{"values": []}',
    "value not a list": b'{"value": {"subscriptionId": "sub-1"}}',
    "entry not an object": b'{"value": ["sub-1"]}',
    "subscriptionId a number": b'{"value": [{"subscriptionId": 7, "clientState": "secret-sub-1"}]}',
    "subscriptionId missing": b'{"value": [{"clientState": "secret-sub-1"}]}',
    "clientState a number": b'{"value": [{"subscriptionId": "sub-1", "clientState": 12}]}',
    "lifecycleEvent an object": b'{"value": [{"subscriptionId": "sub-1", "clientState": "secret-sub-1", '
    b'"lifecycleEvent": {"a": 1}}]}',
    # json.loads raises RecursionError past about 1,000 levels, ValueError past 4,300 digits
    "nested 100,000 deep": b'{"value": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
    "an integer of 5,000 digits": b'{"value": [], "tenant": ' + b"7" * 5_000 + b"}",
}


@pytest.mark.parametrize("lifecycle", [False, True], ids=["notifications", "lifecycle"])
@pytest.mark.parametrize("body", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_or_wrongly_typed_bodies_get_400_and_change_nothing(
    app: App, body: bytes, lifecycle: bool
) -> None:
    await subscribe(app, ANN, "mail:inbox", "sub-1")
    response = await post(body, lifecycle=lifecycle)
    assert response.status_code == 400
    assert response.mimetype == "text/plain"
    assert app.jobs() == []
    assert (await post({"value": [change("sub-1", "secret-sub-1")]})).status_code == 202
    assert len(app.jobs()) == 1  # nothing was marked queued by the bad request


@pytest.mark.parametrize("lifecycle", [False, True], ids=["notifications", "lifecycle"])
async def test_an_oversized_body_gets_413_and_changes_nothing(app: App, lifecycle: bool) -> None:
    secret = await subscribe(app, ANN, "mail:inbox", "sub-1")
    note = change("sub-1", secret)
    padding = "x" * (MAX_BODY_BYTES + 1)
    body = json.dumps({"value": [note], "padding": padding}).encode()
    response = await post(body, lifecycle=lifecycle)
    assert response.status_code == 413
    assert app.jobs() == []


async def test_a_burst_for_one_user_stream_queues_one_job_until_the_worker_starts(app: App) -> None:
    secret = await subscribe(app, ANN, "mail:inbox", "sub-1")
    burst = [post({"value": [change("sub-1", secret, "created", f"m{n}")] * 5}) for n in range(60)]
    responses = await asyncio.gather(*burst)
    assert {r.status_code for r in responses} == {202}
    assert app.jobs() == [Job(ANN, "mail:inbox", "notification")]

    # the worker starting the job clears the marker: the next doorbell queues a new job
    await app.state.clear_queued(ANN, "mail:inbox")
    await post({"value": [change("sub-1", secret, "created", "m-late")]})
    assert app.jobs() == [Job(ANN, "mail:inbox", "notification")] * 2


async def test_the_coalescing_marker_lapses_so_a_lost_job_cannot_silence_a_stream(app: App) -> None:
    secret = await subscribe(app, ANN, "mail:inbox", "sub-1")
    await post({"value": [change("sub-1", secret)]})
    app.queue.messages.clear()  # the queued job was lost (e.g. poisoned) without ever starting
    app.clock.offset = timedelta(seconds=COALESCE_SECONDS + 1)
    await post({"value": [change("sub-1", secret)]})
    assert app.jobs() == [Job(ANN, "mail:inbox", "notification")]


@pytest.mark.parametrize("event", ["reauthorizationRequired", "subscriptionRemoved", "missed"])
async def test_each_lifecycle_event_queues_a_lifecycle_job(app: App, event: str) -> None:
    secret = await subscribe(app, ANN, "mail:inbox", "sub-1")
    note = {"subscriptionId": "sub-1", "clientState": secret, "lifecycleEvent": event, "tenantId": "t"}
    assert (await post({"value": [note]}, lifecycle=True)).status_code == 202
    assert app.jobs() == [Job(ANN, "mail:inbox", f"lifecycle:{event}")]


async def test_lifecycle_jobs_are_queued_even_while_a_sync_job_waits(app: App) -> None:
    secret = await subscribe(app, ANN, "mail:inbox", "sub-1")
    await post({"value": [change("sub-1", secret)]})
    note = {"subscriptionId": "sub-1", "clientState": secret, "lifecycleEvent": "subscriptionRemoved"}
    await post({"value": [note]}, lifecycle=True)
    assert app.jobs() == [
        Job(ANN, "mail:inbox", "notification"),
        Job(ANN, "mail:inbox", "lifecycle:subscriptionRemoved"),
    ]


async def test_an_unknown_lifecycle_event_or_a_change_on_the_lifecycle_url_queues_nothing(app: App) -> None:
    secret = await subscribe(app, ANN, "mail:inbox", "sub-1")
    odd = {"subscriptionId": "sub-1", "clientState": secret, "lifecycleEvent": "somethingNew"}
    assert (await post({"value": [odd, change("sub-1", secret)]}, lifecycle=True)).status_code == 202
    assert app.jobs() == []


class CountingState(InMemoryStateStore):
    """The in-memory state store, counting the subscription look-ups (each a point read in Azure)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get_subscription(self, subscription_id: str) -> SubscriptionRecord | None:
        self.reads += 1
        return await super().get_subscription(subscription_id)


async def subscribed(state: InMemoryStateStore, users: int) -> dict[str, str]:
    """One inbox subscription per user; returns clientState by subscription id."""
    secrets = {}
    for n in range(users):
        user, sid = f"user{n}@contoso.com", f"sub-{n}"
        secrets[sid] = f"secret-{n}"
        await state.put_subscription(
            SubscriptionRecord(user, f"users/{user}/mailFolders('inbox')/messages", "mail:inbox", sid,
                               secrets[sid], datetime.now(UTC) + timedelta(days=2))
        )  # fmt: skip
    return secrets


async def test_a_thousand_unknown_subscription_ids_cost_a_few_reads_and_queue_nothing() -> None:
    state, queue = CountingState(), InMemoryJobQueue()
    body = {"value": [change(f"unknown-{n}", "guess") for n in range(1000)]}

    result = await handle_changes(json.dumps(body).encode(), state, state, queue)

    assert state.reads == MAX_REFUSED_SUBSCRIPTIONS  # was 1,000 sequential point reads
    assert (result.ignored, result.unread, queue.messages) == (1000, 1000 - MAX_REFUSED_SUBSCRIPTIONS, [])


async def test_forged_client_states_on_known_ids_also_stop_the_reads() -> None:
    state, queue = CountingState(), InMemoryJobQueue()
    await subscribed(state, 50)
    body = {"value": [change(f"sub-{n}", "guess") for n in range(50)]}

    result = await handle_changes(json.dumps(body).encode(), state, state, queue)

    assert state.reads == MAX_REFUSED_SUBSCRIPTIONS and result.accepted == 0 and queue.messages == []


async def test_a_genuine_burst_across_many_users_with_a_few_stale_ids_wakes_every_user() -> None:
    state, queue = CountingState(), InMemoryJobQueue()
    users = MAX_DISTINCT_SUBSCRIPTIONS - MAX_REFUSED_SUBSCRIPTIONS
    secrets = await subscribed(state, users)
    stale = [change(f"deleted-{n}", "old") for n in range(MAX_REFUSED_SUBSCRIPTIONS - 1)]  # first, even
    genuine = [change(sid, secret, item=f"m{k}") for sid, secret in secrets.items() for k in range(2)]

    result = await handle_changes(json.dumps({"value": stale + genuine}).encode(), state, state, queue)

    assert result.accepted == 2 * users and result.unread == 0
    assert len(queue.messages) == users
    assert state.reads == users + len(stale)  # one read per distinct id


async def test_past_the_cap_on_distinct_ids_the_rest_waits_for_the_sweep() -> None:
    state, queue = CountingState(), InMemoryJobQueue()
    secrets = await subscribed(state, MAX_DISTINCT_SUBSCRIPTIONS + 20)
    body = {"value": [change(sid, secret) for sid, secret in secrets.items()]}

    result = await handle_changes(json.dumps(body).encode(), state, state, queue)

    assert state.reads == MAX_DISTINCT_SUBSCRIPTIONS
    assert (result.accepted, result.unread) == (MAX_DISTINCT_SUBSCRIPTIONS, 20)


async def test_the_function_answers_202_to_999_unknown_ids(app: App) -> None:
    secret = await subscribe(app, ANN, "mail:inbox", "sub-1")
    body = {"value": [change(f"unknown-{n}", "guess") for n in range(999)] + [change("sub-1", secret)]}
    response = await post(body)
    assert response.status_code == 202
    assert app.jobs() == []  # the genuine entry came after the cap: the sweep reads that stream anyway
