"""The local Functions host running the sample app against a real Azurite, over real HTTP."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.storage.queue import QueueClient

from emulators.azurite import AzuriteStack, azurite
from emulators.funchost.launcher import FunctionRunFailed, RunningHost, function_host
from emulators.graph.launcher import GraphEmulator, graph_emulator
from emulators.process import free_port, python_module, running

pytestmark = pytest.mark.integration

APP = "tests.emulators.funchost.sample_app:app"
NEVER = "0 0 0 1 1 *"  # once a year: fires only when a test asks
QUEUE_OPTIONS = "AzureFunctionsJobHost__extensions__queues__"


@pytest.fixture(scope="module")
def stack() -> Iterator[AzuriteStack]:
    with azurite() as s:
        yield s


def host_settings(stack: AzuriteStack, name: str, **extra: str) -> dict[str, str]:
    return {
        "AzureWebJobsStorage": stack.connection_string,
        "WORK_QUEUE": f"work-{name}",
        "TICK_QUEUE": f"tick-{name}",
        "TICK_SCHEDULE": NEVER,
        "SLOW_SCHEDULE": NEVER,
        f"{QUEUE_OPTIONS}maxPollingInterval": "00:00:00.2",
        f"{QUEUE_OPTIONS}maxDequeueCount": "3",
        f"{QUEUE_OPTIONS}visibilityTimeout": "00:00:00",
        **extra,
    }


@pytest.fixture(scope="module")
def host(stack: AzuriteStack) -> Iterator[RunningHost]:
    """Failed messages are visible again at once; three dequeues make a message poison."""
    settings = host_settings(
        stack,
        "fast",
        FUNCTIONS_KEY_echo="echo-only-key",
        **{f"{QUEUE_OPTIONS}batchSize": "4", f"{QUEUE_OPTIONS}newBatchThreshold": "2"},
    )
    with function_host(APP, settings) as h:
        yield h


@pytest.fixture(scope="module")
def patient_host(stack: AzuriteStack) -> Iterator[RunningHost]:
    """Failed messages stay hidden for an hour; `slow_tick` is due every second but runs 1.5 s."""
    settings = host_settings(
        stack, "patient", SLOW_SCHEDULE="*/1 * * * * *", **{f"{QUEUE_OPTIONS}visibilityTimeout": "01:00:00"}
    )
    with function_host(APP, settings) as h:
        yield h


def queue(stack: AzuriteStack, name: str) -> QueueClient:
    return QueueClient.from_connection_string(stack.connection_string, name)


def wait_for(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout} s")


def peek(stack: AzuriteStack, name: str) -> list[str]:
    """The visible messages of a queue, as stored (a missing queue is empty)."""
    with queue(stack, name) as q:
        try:
            return [m.content for m in q.peek_messages(max_messages=32)]
        except Exception:
            return []


def seen(stack: AzuriteStack, name: str, job_id: str | None = None) -> list[dict[str, Any]]:
    items = [json.loads(c) for c in peek(stack, f"{name}-seen")]
    return [i for i in items if job_id is None or i.get("id") == job_id]


def message_count(stack: AzuriteStack, name: str) -> int:
    """Visible and hidden messages of a queue."""
    with queue(stack, name) as q:
        return int(q.get_queue_properties().approximate_message_count)


def submit(stack: AzuriteStack, name: str, job: dict[str, Any]) -> None:
    with queue(stack, name) as q:
        try:
            q.create_queue()
        except Exception:
            pass
        q.send_message(base64.b64encode(json.dumps(job).encode()).decode())


# HTTP -------------------------------------------------------------------------------------------


def test_anonymous_function_gets_route_params_query_and_headers(host: RunningHost) -> None:
    r = httpx.get(f"{host.base_url}/hello/ada", params={"q": "1"}, headers={"X-Test": "t"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body == {
        "name": "ada",
        "q": "1",
        "method": "GET",
        "header": "t",
        "url": f"{host.base_url}/hello/ada?q=1",
    }


def test_function_level_needs_a_function_host_or_master_key(host: RunningHost) -> None:
    url = f"{host.base_url}/echo"
    assert httpx.post(url, content=b"x").status_code == 401
    assert httpx.post(url, content=b"x", params={"code": "wrong"}).status_code == 401
    assert httpx.post(url, content=b"x", params={"code": ""}).status_code == 401
    for key in (host.function_key, host.master_key, "echo-only-key"):
        r = httpx.post(url, content=b"\x00body", params={"code": key})
        assert (r.status_code, r.content, r.headers["x-echo"]) == (201, b"\x00body", "yes")
        assert r.headers["content-type"] == "application/octet-stream"
    r = httpx.put(url, content=b"y", headers={"x-functions-key": host.function_key})
    assert r.status_code == 201


def test_a_function_key_opens_only_its_own_function(host: RunningHost) -> None:
    assert httpx.get(f"{host.base_url}/items/1", params={"code": "echo-only-key"}).status_code == 401


def test_admin_level_needs_the_master_key(host: RunningHost) -> None:
    url = f"{host.base_url}/keys/rotate"
    assert httpx.post(url).status_code == 401
    assert httpx.post(url, params={"code": host.function_key}).status_code == 401
    r = httpx.post(url, headers={"x-functions-key": host.master_key})
    assert (r.status_code, r.text, r.headers["content-type"]) == (200, "rotated", "text/plain; charset=utf-8")


def test_async_function_with_constrained_and_catch_all_route(host: RunningHost) -> None:
    key = {"code": host.function_key}
    r = httpx.get(f"{host.base_url}/items/42/a/b", params=key)
    assert r.json() == {"id": 42, "rest": "a/b", "fn": "item"}
    assert httpx.delete(f"{host.base_url}/items/7", params=key).json()["rest"] is None
    assert httpx.get(f"{host.base_url}/items/x", params=key).status_code == 404


def test_unknown_route_wrong_method_and_failing_function(host: RunningHost) -> None:
    assert httpx.get(f"{host.base_url}/nope").status_code == 404
    assert httpx.get(f"{host.root_url}/hello/ada").status_code == 404  # outside the route prefix
    r = httpx.post(f"{host.base_url}/hello/ada")
    assert (r.status_code, r.headers["allow"]) == (405, "GET")
    assert httpx.get(f"{host.base_url}/boom").status_code == 500


def test_admin_api_needs_the_master_key(host: RunningHost) -> None:
    assert httpx.get(f"{host.root_url}/admin/host/status").status_code == 401
    status = httpx.get(f"{host.root_url}/admin/host/status", params={"code": host.master_key}).json()
    assert status == {"state": "Running", "errors": []}
    r = httpx.post(f"{host.root_url}/admin/functions/tick", params={"code": host.function_key}, json={})
    assert r.status_code == 401
    assert {f["name"] for f in host.functions()} >= {"hello", "tick", "work"}


# Timers -----------------------------------------------------------------------------------------


def test_a_timer_fires_on_demand(stack: AzuriteStack, host: RunningHost) -> None:
    assert peek(stack, "tick-fast") == []
    host.fire("tick")
    assert [json.loads(base64.b64decode(m)) for m in peek(stack, "tick-fast")] == [{"past_due": False}]
    with pytest.raises(httpx.HTTPStatusError):
        host.fire("no-such-function")
    with pytest.raises(httpx.HTTPStatusError):
        host.fire("hello")  # HTTP functions are called over HTTP


def test_run_on_startup(stack: AzuriteStack, host: RunningHost) -> None:
    messages = wait_for(lambda: peek(stack, "tick-fast-startup"))
    assert [base64.b64decode(m) for m in messages] == [b"started"]


def test_runs_of_one_timer_never_overlap(stack: AzuriteStack, patient_host: RunningHost) -> None:
    runs = wait_for(lambda: (r := seen(stack, "tick-patient")) and len(r) >= 2 and r)
    assert [r["concurrent"] for r in runs] == [1] * len(runs)


# Queues -----------------------------------------------------------------------------------------


def test_success_deletes_the_message(stack: AzuriteStack, host: RunningHost) -> None:
    job = str(uuid.uuid4())
    submit(stack, "work-fast", {"id": job})
    attempts = wait_for(lambda: seen(stack, "work-fast", job))
    wait_for(lambda: message_count(stack, "work-fast") == 0)
    assert [(a["dequeue_count"], a["has_times"]) for a in attempts] == [(1, True)]
    assert not [m for m in peek(stack, "work-fast-poison") if job in base64.b64decode(m).decode()]


def test_an_output_binding_feeds_the_queue_trigger(stack: AzuriteStack, host: RunningHost) -> None:
    job = str(uuid.uuid4())
    assert httpx.post(f"{host.base_url}/enqueue", content=json.dumps({"id": job})).status_code == 202
    assert wait_for(lambda: seen(stack, "work-fast", job))[0]["dequeue_count"] == 1


def test_a_retry_sees_the_next_dequeue_count(stack: AzuriteStack, host: RunningHost) -> None:
    job = str(uuid.uuid4())
    submit(stack, "work-fast", {"id": job, "fail_times": 1})
    attempts = wait_for(lambda: (a := seen(stack, "work-fast", job)) and len(a) >= 2 and a)
    wait_for(lambda: message_count(stack, "work-fast") == 0)
    assert [a["dequeue_count"] for a in attempts] == [1, 2]
    assert len({a["message_id"] for a in attempts}) == 1


def test_a_failing_message_ends_in_the_poison_queue(stack: AzuriteStack, host: RunningHost) -> None:
    job = str(uuid.uuid4())
    submit(stack, "work-fast", {"id": job, "fail_times": 99})
    poisoned = wait_for(
        lambda: [m for m in peek(stack, "work-fast-poison") if job in base64.b64decode(m).decode()]
    )
    assert json.loads(base64.b64decode(poisoned[0])) == {"id": job, "fail_times": 99}  # as it was sent
    assert [a["dequeue_count"] for a in seen(stack, "work-fast", job)] == [1, 2, 3]  # maxDequeueCount 3
    assert wait_for(lambda: message_count(stack, "work-fast") == 0)  # deleted just after the poison copy


def test_a_message_that_is_not_base64_is_poison_at_once(stack: AzuriteStack, host: RunningHost) -> None:
    with queue(stack, "work-fast") as q:
        q.send_message("not base64 {}")
    wait_for(lambda: "not base64 {}" in peek(stack, "work-fast-poison"))
    assert wait_for(lambda: message_count(stack, "work-fast") == 0)  # deleted just after the poison copy


def test_a_failed_message_stays_hidden_for_the_visibility_timeout(
    stack: AzuriteStack, patient_host: RunningHost
) -> None:
    job = str(uuid.uuid4())
    submit(stack, "work-patient", {"id": job, "fail_times": 1})
    wait_for(lambda: seen(stack, "work-patient", job))
    time.sleep(2.0)  # ten polling intervals: a message released at once would have been retried
    assert [a["dequeue_count"] for a in seen(stack, "work-patient", job)] == [1]
    assert message_count(stack, "work-patient") == 1  # kept, not deleted
    assert peek(stack, "work-patient") == []  # but hidden
    assert peek(stack, "work-patient-poison") == []


def test_messages_run_in_parallel_up_to_batch_size_plus_threshold(
    stack: AzuriteStack, host: RunningHost
) -> None:
    with queue(stack, "work-fast-parallel") as q:
        q.create_queue()
        for i in range(12):
            q.send_message(base64.b64encode(f"m{i}".encode()).decode())
    runs = wait_for(lambda: (r := seen(stack, "work-fast-parallel")) and len(r) == 12 and r)
    assert sorted(r["id"] for r in runs) == sorted(f"m{i}" for i in range(12))  # str parameter: the body
    assert 1 < max(r["concurrent"] for r in runs) <= 4 + 2  # batchSize 4 + newBatchThreshold 2


def test_a_function_run_by_hand_that_raises_is_reported(host: RunningHost) -> None:
    with pytest.raises(FunctionRunFailed):
        host.fire("work", input="not json")  # the queue function, run through the admin API


def test_the_command_line_reads_a_local_settings_file(stack: AzuriteStack, tmp_path: Path) -> None:
    values = host_settings(
        stack, "cli", FUNCTIONS_HOST_KEY="key-from-file", FUNCTIONS_MASTER_KEY="master-from-file"
    )
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    port = free_port()
    args = python_module("emulators.funchost", "--app", APP, "--port", str(port), "--settings", str(settings))
    with running(args, ports=(port,), ready_url=f"http://127.0.0.1:{port}/admin/host/ping"):
        url = f"http://127.0.0.1:{port}/api/echo"
        assert httpx.post(url, content=b"x", params={"code": "key-from-file"}).status_code == 201
        assert httpx.post(url, content=b"x", params={"code": "wrong"}).status_code == 401


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphEmulator]:
    with graph_emulator() as g:
        yield g


def subscribe(graph: GraphEmulator, upn: str, notification_url: str) -> httpx.Response:
    body = {
        "changeType": "created",
        "resource": f"users/{upn}/messages",
        "expirationDateTime": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "clientState": "state-1",
        "notificationUrl": notification_url,
    }
    return httpx.post(f"{graph.base_url}/subscriptions", json=body, headers={"Authorization": "Bearer local"})


def test_graph_notifications_reach_the_app_through_the_host(
    stack: AzuriteStack, host: RunningHost, graph: GraphEmulator
) -> None:
    upn = "ada@contoso.test"
    graph.control.add_user(upn)
    assert subscribe(graph, upn, f"{host.base_url}/graph/notify").status_code == 400  # no key: 401
    created = subscribe(graph, upn, f"{host.base_url}/graph/open")
    assert created.status_code == 201
    graph.control.deliver(upn, {"from": {"emailAddress": {"address": "bob@ext.test"}}, "subject": "x"})
    notes = wait_for(lambda: seen(stack, "work-fast-graph"))
    expected = {"subscriptionId": created.json()["id"], "clientState": "state-1", "changeType": "created"}
    assert all(n == expected for n in notes)  # Graph may send a notification twice


def test_graph_validates_a_key_protected_notification_url(host: RunningHost, graph: GraphEmulator) -> None:
    graph.control.add_user("bo@contoso.test")
    url = f"{host.base_url}/graph/notify?code={host.function_key}"
    assert subscribe(graph, "bo@contoso.test", url).status_code == 201
