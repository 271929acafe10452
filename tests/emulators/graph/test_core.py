"""Errors and limits: faults, throttling, denied mailboxes, stats, $batch."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from emulators.graph.launcher import graph_emulator


async def test_injected_429_is_retried_by_the_sdk_after_retry_after(graph, emulator, upn):
    emulator.control.fault(429, 1, method="GET", pathContains=f"/users/{upn}/mailFolders", retryAfter=1)
    folders = await graph.users.by_user_id(upn).mail_folders.get()
    assert folders.value
    assert emulator.control.stats()["throttled"]["injected"] >= 1


async def test_injected_faults_shapes(raw, emulator, upn):
    emulator.control.fault(503, 1, pathContains=upn)
    emulator.control.fault(429, 1, pathContains=upn, retryAfter="2.128")
    emulator.control.fault(504, 1, pathContains=upn)
    r = raw.get(f"/users/{upn}")
    assert r.status_code == 503 and "Retry-After" not in r.headers
    r = raw.get(f"/users/{upn}")
    assert r.status_code == 429 and r.headers["Retry-After"] == "2.128"
    assert r.json()["error"]["code"] == "TooManyRequests"
    assert r.json()["error"]["innerError"]["status"] == "429"
    assert raw.get(f"/users/{upn}").status_code == 504
    assert raw.get(f"/users/{upn}").status_code == 200


async def test_injected_410_with_location_header(raw, emulator, upn):
    fresh = f"{emulator.base_url}/users/{upn}/mailFolders/inbox/messages/delta"
    emulator.control.fault(410, 1, pathContains="/messages/delta", headers={"Location": fresh})
    r = raw.get(f"/users/{upn}/mailFolders/inbox/messages/delta")
    assert r.status_code == 410 and r.headers["Location"] == fresh
    assert r.json()["error"]["code"] == "SyncStateNotFound"


async def test_retry_after_of_180_seconds_or_more_reaches_the_caller(graph, emulator, upn):
    emulator.control.fault(429, 1, pathContains=upn, retryAfter=200)
    with pytest.raises(ODataError) as e:
        await graph.users.by_user_id(upn).get()
    assert e.value.response_status_code == 429
    assert e.value.response_headers["retry-after"] == "200"


async def test_denied_mailbox_is_403_while_others_work(graph, emulator, upn):
    other = upn.replace("@", "o@")
    emulator.control.add_user(other, "Other")
    emulator.control.deny(upn)
    with pytest.raises(ODataError) as e:
        await graph.users.by_user_id(upn).mail_folders.get()
    assert e.value.response_status_code == 403
    assert (
        e.value.error.code == "ErrorAccessDenied" and e.value.error.message == "Access to OData is disabled."
    )
    assert (await graph.users.by_user_id(other).mail_folders.get()).value


async def test_more_than_four_concurrent_requests_per_mailbox_are_429(emulator, upn):
    emulator.control.settings(latency_ms=300)
    try:
        async with httpx.AsyncClient(base_url=emulator.base_url, headers={"Authorization": "Bearer t"}) as c:
            rs = await asyncio.gather(*(c.get(f"/users/{upn}/mailFolders") for _ in range(8)))
    finally:
        emulator.control.settings(latency_ms=0)
    codes = sorted(r.status_code for r in rs)
    assert codes.count(200) == 4 and codes.count(429) == 4
    throttled = next(r for r in rs if r.status_code == 429)
    assert throttled.json()["error"]["code"] == "ApplicationThrottled"
    assert "MailboxConcurrency" in throttled.json()["error"]["message"]
    assert throttled.headers["Retry-After"].isdigit()


async def test_request_budget_per_mailbox(raw, emulator, upn):
    other = upn.replace("@", "b@")
    emulator.control.add_user(other, "Other")
    emulator.control.settings(budget=5)
    try:
        codes = [raw.get(f"/users/{upn}/mailFolders").status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]
        r = raw.get(f"/users/{upn}")
        assert r.json()["error"]["code"] == "TooManyRequests" and int(r.headers["Retry-After"]) > 0
        assert raw.get(f"/users/{other}").status_code == 200  # budgets are per mailbox
    finally:
        emulator.control.settings(budget=10000)


async def test_stats_by_route_and_user(raw, emulator, upn):
    raw.get(f"/users/{upn}/mailFolders/inbox/messages/delta")
    s = emulator.control.stats()
    assert s["byRoute"]["GET /users/{user}/mailFolders/{folder}/messages/delta"] >= 1
    assert s["byUser"][upn] >= 1


async def test_batch_envelope_dependencies_and_throttled_sub_requests(raw, emulator, upn):
    emulator.control.fault(429, 1, pathContains=f"{upn}/mailFolders/drafts", retryAfter=7)
    body = {
        "requests": [
            {"id": "1", "method": "GET", "url": f"/users/{upn}/mailFolders/inbox"},
            {"id": "2", "method": "GET", "url": f"/users/{upn}/mailFolders/drafts"},
            {"id": "3", "method": "GET", "url": f"/users/{upn}/mailFolders/nope", "dependsOn": ["1"]},
            {"id": "4", "method": "GET", "url": f"/users/{upn}", "dependsOn": ["3"]},
            {
                "id": "5",
                "method": "POST",
                "url": f"/users/{upn}/mailFolders",
                "headers": {"Content-Type": "application/json"},
                "body": {"displayName": "FromBatch"},
            },
        ]
    }
    r = raw.post("/$batch", json=body)
    assert r.status_code == 200
    by_id = {x["id"]: x for x in r.json()["responses"]}
    assert by_id["1"]["status"] == 200 and by_id["1"]["body"]["displayName"] == "Inbox"
    assert by_id["2"]["status"] == 429 and by_id["2"]["headers"]["Retry-After"] == "7"
    assert by_id["3"]["status"] == 404
    assert by_id["4"]["status"] == 424
    assert by_id["5"]["status"] == 201


async def test_batch_limits(raw, upn):
    many = {"requests": [{"id": str(i), "method": "GET", "url": f"/users/{upn}"} for i in range(21)]}
    assert raw.post("/$batch", json=many).status_code == 400
    dup = {
        "requests": [
            {"id": "a", "method": "GET", "url": "/users"},
            {"id": "A", "method": "GET", "url": "/users"},
        ]
    }
    assert raw.post("/$batch", json=dup).status_code == 400


async def test_per_item_latency_holds_the_mailbox_slot_for_as_long_as_the_page_is_long(emulator, upn):
    """The per-item cost is paid inside the request, so a page of folders (7 items) at 100 ms an item
    keeps four requests in flight long enough for the next four to be throttled, while an empty page
    costs nothing and never overlaps."""
    emulator.control.settings(latency_per_item_ms=100)
    try:
        async with httpx.AsyncClient(base_url=emulator.base_url, headers={"Authorization": "Bearer t"}) as c:
            empty = await asyncio.gather(
                *(c.get(f"/users/{upn}/mailFolders/inbox/messages") for _ in range(8))
            )
            full = await asyncio.gather(*(c.get(f"/users/{upn}/mailFolders") for _ in range(8)))
    finally:
        emulator.control.settings(latency_per_item_ms=0)
    assert [r.status_code for r in empty] == [200] * 8
    assert sorted(r.status_code for r in full) == [200] * 4 + [429] * 4


async def test_latency_profile_sets_both_numbers_and_off_clears_them(emulator):
    try:
        got = emulator.control.settings(latency_profile="graph")
        assert (got["latency_ms"], got["latency_per_item_ms"]) == (100, 2.0)
        got = emulator.control.settings(latency_profile="graph", latency_ms=20)  # a named part wins
        assert (got["latency_ms"], got["latency_per_item_ms"]) == (20, 2.0)
    finally:
        got = emulator.control.settings(latency_profile="off")
    assert (got["latency_ms"], got["latency_per_item_ms"]) == (0, 0.0)


def test_latency_flags_reach_a_launched_emulator():
    with graph_emulator(latency_profile="graph", latency_per_item_ms=5) as g:
        got = g.control.settings()
    assert (got["latency_ms"], got["latency_per_item_ms"]) == (100, 5.0)
