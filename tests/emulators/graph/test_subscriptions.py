"""Subscriptions and change/lifecycle notifications, with a real webhook endpoint."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.subscription import Subscription

from tests.emulators.graph.conftest import mail_from


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def expiry(minutes=4000):
    return datetime.now(UTC) + timedelta(minutes=minutes)


def sub_body(upn, receiver, resource=None, **kw):
    return {
        "changeType": "created,updated,deleted",
        "notificationUrl": f"{receiver.url}/hook?tenant=t1",
        "resource": resource or f"users/{upn}/mailFolders('inbox')/messages",
        "expirationDateTime": expiry().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "clientState": "s3cret",
        **kw,
    }


async def test_create_with_sdk_runs_the_validation_handshake(graph, upn, receiver):
    s = await graph.subscriptions.post(
        Subscription(
            change_type="created,updated",
            notification_url=f"{receiver.url}/hook",
            lifecycle_notification_url=f"{receiver.url}/life",
            resource=f"users/{upn}/messages",
            expiration_date_time=expiry(),
            client_state="abc",
        )
    )
    assert s.id and s.client_state == "abc" and s.resource == f"users/{upn}/messages"
    assert receiver.validations == ["/hook", "/life"]


async def test_expiration_beyond_4230_minutes_is_refused(graph, upn, receiver):
    with pytest.raises(ODataError) as e:
        too_far = Subscription(
            change_type="created",
            notification_url=f"{receiver.url}/hook",
            resource=f"users/{upn}/messages",
            expiration_date_time=expiry(4232),
        )
        await graph.subscriptions.post(too_far)
    assert e.value.error.code == "ExtensionError" and "4230 minutes" in e.value.error.message


async def test_endpoint_that_does_not_echo_the_token_fails_creation(raw, upn, receiver):
    receiver.echo_token = False
    r = raw.post("/subscriptions", json=sub_body(upn, receiver))
    assert r.status_code == 400 and "validation" in r.json()["error"]["message"].lower()


async def test_denied_mailbox_cannot_subscribe(raw, emulator, upn, receiver):
    emulator.control.deny(upn)
    r = raw.post("/subscriptions", json=sub_body(upn, receiver))
    assert r.status_code == 403 and r.json()["error"]["code"] == "ExtensionError"


async def test_notifications_shape_batching_and_query_string(raw, emulator, upn, receiver):
    sub = raw.post("/subscriptions", json=sub_body(upn, receiver)).json()
    for i in range(3):
        emulator.control.deliver(upn, mail_from("a@ext.test", f"m{i}"))
    assert wait_for(lambda: len(receiver.notifications()) >= 3)
    assert len(receiver.posts) < 3  # several notifications in one POST
    assert all(p["path"] == "/hook" and p["query"] == {"tenant": ["t1"]} for p in receiver.posts)
    n = receiver.notifications()[0]
    assert n["subscriptionId"] == sub["id"] and n["changeType"] == "created" and n["clientState"] == "s3cret"
    assert n["resourceData"]["@odata.type"] == "#Microsoft.Graph.Message"
    user_id = raw.get(f"/users/{upn}").json()["id"]
    item = n["resourceData"]["id"]
    assert n["resource"] in (f"Users/{user_id}/Messages/{item}", f"Users('{user_id}')/messages('{item}')")
    assert n["tenantId"] and n["subscriptionExpirationDateTime"]


async def test_folder_subscription_sees_only_its_folder_and_moves_are_deleted(raw, emulator, upn, receiver):
    raw.post("/subscriptions", json=sub_body(upn, receiver))
    m = emulator.control.deliver(upn, mail_from("a@ext.test"))
    emulator.control.deliver(upn, {**mail_from("a@ext.test"), "folder": "archive"})
    raw.post(f"/users/{upn}/messages/{m['id']}/move", json={"destinationId": "archive"})
    assert wait_for(lambda: len(receiver.notifications()) >= 2)
    time.sleep(0.3)
    assert [n["changeType"] for n in receiver.notifications()] == ["created", "deleted"]


async def test_failed_delivery_is_retried(raw, emulator, upn, receiver):
    emulator.control.settings(notify_retry_delay=0.1)
    try:
        receiver.fail_next = 2
        raw.post("/subscriptions", json=sub_body(upn, receiver))
        emulator.control.deliver(upn, mail_from("a@ext.test"))
        assert wait_for(lambda: len(receiver.posts) >= 3)
        attempts = [d for d in emulator.control.notifications() if d["url"] == f"{receiver.url}/hook"]
        assert [d["ok"] for d in attempts[-3:]] == [False, False, True]
    finally:
        emulator.control.settings(notify_retry_delay=1.0)


async def test_duplicates_as_graph_sends_them(raw, emulator, upn, receiver):
    emulator.control.settings(duplicate_rate=1.0)
    try:
        raw.post("/subscriptions", json=sub_body(upn, receiver, resource=f"users/{upn}/contacts"))
        raw.post(f"/users/{upn}/contacts", json={"givenName": "A"})
        assert wait_for(lambda: len(receiver.notifications()) >= 2)
    finally:
        emulator.control.settings(duplicate_rate=0.0)
    assert sorted(n["changeType"] for n in receiver.notifications()) == ["created", "updated"]


async def test_one_event_edit_gives_two_to_four_updates(raw, emulator, upn, receiver):
    ev = {
        "subject": "x",
        "start": {"dateTime": "2026-03-01T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-03-01T11:00:00", "timeZone": "UTC"},
    }
    e = raw.post(f"/users/{upn}/events", json=ev).json()
    emulator.control.settings(duplicate_rate=1.0)
    try:
        raw.post(
            "/subscriptions",
            json=sub_body(upn, receiver, resource=f"users/{upn}/events", changeType="updated"),
        )
        raw.patch(f"/users/{upn}/events/{e['id']}", json={"subject": "y"})
        assert wait_for(lambda: len(receiver.notifications()) >= 2)
        time.sleep(0.3)
    finally:
        emulator.control.settings(duplicate_rate=0.0)
    kinds = [n["changeType"] for n in receiver.notifications()]
    assert set(kinds) == {"updated"} and 2 <= len(kinds) <= 4


async def test_event_changes_notify(raw, upn, receiver):
    raw.post("/subscriptions", json=sub_body(upn, receiver, resource=f"users/{upn}/events"))
    ev = {
        "subject": "x",
        "start": {"dateTime": "2026-03-01T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-03-01T11:00:00", "timeZone": "UTC"},
    }
    e = raw.post(f"/users/{upn}/events", json=ev).json()
    raw.delete(f"/users/{upn}/events/{e['id']}")
    assert wait_for(lambda: len(receiver.notifications()) >= 2)
    assert [n["changeType"] for n in receiver.notifications()] == ["created", "deleted"]
    assert receiver.notifications()[0]["resourceData"]["@odata.type"] == "#Microsoft.Graph.Event"


async def test_renew_reauthorize_delete_and_lifecycle(raw, emulator, upn, receiver):
    sub = raw.post(
        "/subscriptions", json=sub_body(upn, receiver, lifecycleNotificationUrl=f"{receiver.url}/life")
    ).json()
    r = raw.patch(
        f"/subscriptions/{sub['id']}",
        json={"expirationDateTime": expiry(4200).strftime("%Y-%m-%dT%H:%M:%SZ")},
    )
    assert r.status_code == 200
    assert (
        raw.patch(
            f"/subscriptions/{sub['id']}", json={"expirationDateTime": expiry(5000).isoformat()}
        ).status_code
        == 400
    )
    assert raw.post(f"/subscriptions/{sub['id']}/reauthorize").status_code == 204
    emulator.control.lifecycle(sub["id"], "reauthorizationRequired")
    emulator.control.lifecycle(sub["id"], "subscriptionRemoved")
    assert wait_for(lambda: len([p for p in receiver.posts if p["path"] == "/life"]) >= 1)
    time.sleep(0.2)
    events = [n["lifecycleEvent"] for p in receiver.posts if p["path"] == "/life" for n in p["body"]["value"]]
    assert events == ["reauthorizationRequired", "subscriptionRemoved"]
    assert raw.get(f"/subscriptions/{sub['id']}").status_code == 404
    other = raw.post("/subscriptions", json=sub_body(upn, receiver)).json()
    assert raw.delete(f"/subscriptions/{other['id']}").status_code == 204
