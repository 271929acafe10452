"""Hostile webhook bodies (hypothesis): malformed JSON, wrong types, huge bodies, odd encodings, forged
clientState. Against `shared/notifications.py` and the real `functions/notifications.py` function, called
directly with the services installed through `wiring.use()`. No crash, a clear 4xx, and nothing queued
but one job per genuine user+stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions import notifications as webhook
from shared import notifications, wiring
from shared.crm.memory import InMemoryCrm
from shared.errors import BadNotification
from shared.model import Job, SubscriptionRecord
from shared.state.memory import InMemoryJobQueue, InMemoryStateStore
from shared.sync.engine import Engine
from tests.model.mailbox import InMemoryMailboxes

ANN = "ann@contoso.com"
GENUINE = {"sub-ann-inbox": ("mail:inbox", "s3cret-inbox"), "sub-ann-sent": ("mail:sentitems", "s3cret-sent")}
HANDLER = webhook.graph_notifications.build().get_user_function()
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
entry = st.fixed_dictionaries(
    {},
    optional={
        "subscriptionId": st.one_of(st.sampled_from([*GENUINE, "sub-unknown", ""]), json_values),
        "clientState": st.one_of(
            st.sampled_from([s for _, s in GENUINE.values()] + ["forged", "S3CRET-INBOX", ""]), json_values
        ),
        "changeType": st.sampled_from(["created", "updated", "deleted", "weird"]),
        "resource": st.text(max_size=40),
        "lifecycleEvent": st.one_of(st.sampled_from(["missed", "subscriptionRemoved"]), json_values),
        "tenantId": json_values,
    },
)
documents = st.one_of(
    st.fixed_dictionaries({"value": st.lists(entry, max_size=8)}),
    st.fixed_dictionaries({"value": json_values}),
    json_values,
)


def encoded(document: Any, encoding: str) -> bytes:
    text = json.dumps(document, ensure_ascii=encoding == "ascii")
    return text.encode("utf-8" if encoding == "ascii" else encoding, errors="surrogatepass")


bodies = st.one_of(
    st.builds(encoded, documents, st.sampled_from(["utf-8", "ascii", "utf-16", "utf-32"])),
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", errors="surrogatepass")),
)


async def fresh_state() -> tuple[InMemoryStateStore, InMemoryJobQueue]:
    state, queue = InMemoryStateStore(), InMemoryJobQueue()
    await state.put_config(ANN, {"Enabled": True})
    expires = datetime.now(UTC) + timedelta(days=2)
    for sub_id, (stream, secret) in GENUINE.items():
        await state.put_subscription(
            SubscriptionRecord(ANN, f"users/{ANN}/{stream}", stream, sub_id, secret, expires)
        )
    return state, queue


def genuine_targets(body: bytes) -> tuple[set[str], bool]:
    """The streams a body may wake (entries whose subscriptionId and clientState are both right), and
    whether it must wake all of them: not when enough distinct ids were refused before one of them
    that the handler stopped reading (`MAX_REFUSED_SUBSCRIPTIONS`)."""
    try:
        document = json.loads(body.decode("utf-8"))
        items = document["value"]
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, RecursionError):
        return set(), True
    found, refused, complete = set(), set(), True
    for item in items if isinstance(items, list) else []:
        sid = item.get("subscriptionId") if isinstance(item, dict) else None
        if not isinstance(sid, str):
            continue
        stream, secret = GENUINE.get(sid, ("", None))
        if item.get("clientState") == secret:
            found.add(stream)
            complete = complete and len(refused) < notifications.MAX_REFUSED_SUBSCRIPTIONS
        else:
            refused.add(sid)
    return found, complete


def queued_streams(queue: InMemoryJobQueue) -> list[str]:
    return [Job.from_json(m.text).stream for m in queue.messages]


@FAST
@given(body=bodies)
def test_any_body_is_a_clear_answer_and_queues_only_genuine_streams(body: bytes) -> None:
    async def scenario() -> None:
        state, queue = await fresh_state()
        try:
            result = await notifications.handle_changes(body, state, state, queue)
        except BadNotification as error:
            assert str(error)  # a reason the function answers with
            assert queue.messages == []
            return
        targets, complete = genuine_targets(body)
        assert result.enqueued + result.coalesced <= len(targets)
        assert set(queued_streams(queue)) <= targets and len(queue.messages) == len(
            set(queued_streams(queue))
        )
        if complete:
            assert set(queued_streams(queue)) == targets

    asyncio.run(scenario())


@pytest.fixture
def installed() -> Iterator[tuple[InMemoryStateStore, InMemoryJobQueue]]:
    state, queue = asyncio.run(fresh_state())
    crm, mail = InMemoryCrm(), InMemoryMailboxes()
    engine = Engine(state, queue, {})
    wiring.use(wiring.Services(state, queue, crm, mail, engine, keeper=None))  # type: ignore[arg-type]
    yield state, queue
    wiring.use(None)


def request(body: bytes, **params: str) -> func.HttpRequest:
    return func.HttpRequest("POST", "http://localhost/api/notifications", body=body, params=params)


@settings(FAST, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_the_function_answers_202_or_a_clear_4xx(
    installed: tuple[InMemoryStateStore, InMemoryJobQueue], body: bytes
) -> None:
    _, queue = installed
    queue.messages.clear()
    response = asyncio.run(HANDLER(request(body)))
    targets, _ = genuine_targets(body)
    if response.status_code == 202:
        assert set(queued_streams(queue)) <= targets
    else:
        assert response.status_code == 400 and response.get_body(), response.get_body()
        assert queue.messages == []


def test_a_huge_body_is_refused_with_413_and_queues_nothing(
    installed: tuple[InMemoryStateStore, InMemoryJobQueue],
) -> None:
    _, queue = installed
    entry = {"subscriptionId": "sub-ann-inbox", "clientState": "s3cret-inbox", "resource": "x" * 1000}
    body = json.dumps({"value": [entry] * 2000}).encode()
    assert len(body) > notifications.MAX_BODY_BYTES
    response = asyncio.run(HANDLER(request(body)))
    assert response.status_code == 413 and queue.messages == []


def test_too_many_entries_are_refused(installed: tuple[InMemoryStateStore, InMemoryJobQueue]) -> None:
    _, queue = installed
    body = json.dumps({"value": [{"subscriptionId": "sub-ann-inbox", "clientState": "s3cret-inbox"}] * 1001})
    response = asyncio.run(HANDLER(request(body.encode())))
    assert response.status_code == 400 and queue.messages == []


def test_forged_client_state_is_accepted_silently_and_wakes_nothing(
    installed: tuple[InMemoryStateStore, InMemoryJobQueue],
) -> None:
    _, queue = installed
    body = {"value": [{"subscriptionId": "sub-ann-inbox", "clientState": "s3cret-inboy"}] * 5}
    response = asyncio.run(HANDLER(request(json.dumps(body).encode())))
    assert response.status_code == 202 and queue.messages == []  # Graph's guidance: reveal nothing


def test_a_long_validation_token_is_refused_and_a_normal_one_echoed(
    installed: tuple[InMemoryStateStore, InMemoryJobQueue],
) -> None:
    refused = asyncio.run(HANDLER(request(b"", validationToken="t" * 5000)))
    echoed = asyncio.run(HANDLER(request(b"", validationToken="Validation: <script>")))
    assert refused.status_code == 400
    assert echoed.status_code == 200 and echoed.get_body() == b"Validation: <script>"
    assert echoed.mimetype == "text/plain"
