"""The reference CRM's API over raw HTTP: auth, keys in paths, lookups, paging, persistence, concurrency."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from emulators.crm.app import Crm, api_routes
from emulators.crm.db import Database
from emulators.crm.launcher import ReferenceCrm, reference_crm
from emulators.process import ROOT, free_port
from shared.crm.reference import ReferenceCrmConnector
from shared.errors import CrmRetryableError
from shared.model import Direction, Journal


def test_every_api_call_needs_the_token_as_bearer_or_api_key(server: ReferenceCrm) -> None:
    base = server.base_url
    assert httpx.get(f"{base}/health").status_code == 401
    assert httpx.get(f"{base}/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{base}/_crm/stats").status_code == 401
    denied = httpx.get(f"{base}/health", headers={"X-API-Key": "wrong"})
    assert denied.json()["error"]["code"] == "unauthorized"
    assert httpx.get(f"{base}/health", headers={"X-API-Key": server.token}).status_code == 200
    assert httpx.get(f"{base}/health", headers={"Authorization": f"bearer {server.token}"}).status_code == 200


async def test_the_connector_authenticates_with_an_api_key(server: ReferenceCrm) -> None:
    connector = server.connector("api-key")
    try:
        assert (await connector.check()).ok
    finally:
        await connector.aclose()


def test_keys_with_slashes_and_percent_signs_stay_one_key(server: ReferenceCrm, api: httpx.Client) -> None:
    body = {"subject": "s", "direction": "inbound", "owner": "o"}
    assert api.put("/journals/%3Ca%2Fb%2525c%40x%3E", json=body).status_code == 201
    times = {"start": "2024-01-01T00:00:00+00:00", "end": "2024-01-01T01:00:00+00:00"}
    assert api.put("/appointments/by-key/a%2Fcancel", json={**body, **times}).status_code == 201

    assert api.get("/journals/%3Ca%2Fb%2525c%40x%3E").json()["key"] == "<a/b%25c@x>"
    assert api.get("/appointments/by-key/a%2Fcancel").json()["cancelled"] is False
    assert api.get("/journals/%3Ca%3E").status_code == 404


def test_lookup_is_case_insensitive_on_the_server(server: ReferenceCrm, api: httpx.Client) -> None:
    ann = server.add_person(["Ann@Example.TEST"])

    matches = api.post("/people/lookup", json={"addresses": ["ANN@example.test"]}).json()["matches"]

    assert [p["id"] for p in matches["ann@example.test"]] == [ann]
    assert matches["ann@example.test"][0]["email"] == "Ann@Example.TEST"


def test_errors_are_json_with_a_code_and_message(server: ReferenceCrm, api: httpx.Client) -> None:
    bad_json = api.put("/journals/k", content=b"{not json", headers={"content-type": "application/json"})
    bad_field = api.put("/journals/k", json={"subject": 3})
    bad_cursor = api.get("/contacts/changes", params={"owner": "o", "cursor": "x"})
    unknown = api.get("/contacts/p-nope")

    assert [r.status_code for r in (bad_json, bad_field, bad_cursor, unknown)] == [400, 422, 400, 404]
    assert all(
        set(r.json()["error"]) == {"code", "message"} for r in (bad_json, bad_field, bad_cursor, unknown)
    )


def test_contact_feed_pages_follow_the_cursor(server: ReferenceCrm, api: httpx.Client) -> None:
    made = [server.add_person(f"c{i}@example.test", owner="o") for i in range(3)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"owner": "o", "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = api.get("/contacts/changes", params=params).json()
        seen += [c["id"] for c in page["changes"]]
        cursor, pages = page["cursor"], pages + 1
        if not page["hasMore"]:
            break

    assert (seen, pages) == (made, 2)
    assert api.get("/contacts/changes", params={"owner": "o", "cursor": cursor}).json()["changes"] == []


def test_a_database_file_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "crm.sqlite"
    with reference_crm(db=db) as first:
        person = first.add_person("ann@example.test", name="Ann")
    with reference_crm(db=db) as second:
        assert [p["id"] for p in second.people()] == [person]


async def test_concurrent_upserts_of_one_key_leave_one_journal(server: ReferenceCrm) -> None:
    connector = server.connector()
    journals = [
        Journal(
            key="<same@x.test>",
            subject=f"v{i}",
            body="",
            direction=Direction.INBOUND,
            sender=None,
            to=(),
            cc=(),
            sent_at=None,
            received_at=None,
            conversation_id="",
            attachments=(),
            owner="a",
            seen_by=(),
            people=(),
        )  # fmt: skip
        for i in range(30)
    ]
    try:
        refs = await asyncio.gather(*(connector.upsert_journal(j) for j in journals))
    finally:
        await connector.aclose()

    assert len({r.id for r in refs}) == 1
    assert [j["key"] for j in server.journals()] == ["<same@x.test>"]


def test_the_openapi_file_documents_exactly_the_routes_the_server_serves() -> None:
    spec = (ROOT / "docs" / "crm-api.yaml").read_text(encoding="utf-8")
    documented = {
        (path, method.upper())
        for path, block in re.findall(r"^  (/\S*):\n((?:    .*\n|\n)*)", spec, flags=re.M)
        for method in re.findall(r"^    (get|put|post|patch|delete):", block, flags=re.M)
    }
    served = {
        (route.path.replace(":path}", "}"), method)
        for route in api_routes(Crm(Database()))
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert documented == served


async def test_an_unreachable_crm_is_retryable_and_an_unhealthy_check() -> None:
    connector = ReferenceCrmConnector(
        f"http://127.0.0.1:{free_port()}", "t", max_retries=1, backoff_base=0.01
    )
    try:
        with pytest.raises(CrmRetryableError) as caught:
            await connector.find_people(["ann@example.test"])
        health = await connector.check()
    finally:
        await connector.aclose()
    assert "ConnectError" in str(caught.value)
    assert not health.ok and "ConnectError" in health.detail


async def test_a_long_address_list_is_looked_up_in_batches(server: ReferenceCrm) -> None:
    ann = server.add_person("ann@example.test")
    connector = server.connector()
    addresses = [f"a{i}@example.test" for i in range(1200)] + ["ANN@example.test"]
    try:
        found = await connector.find_people(addresses)
    finally:
        await connector.aclose()
    assert len(found) == 1201
    assert [p.id for p in found["ann@example.test"]] == [ann]
    assert server.stats()["byRoute"] == {"POST /people/lookup": 3}


def _journal(key: str) -> Journal:
    return Journal(
        key=key, subject="s", body="", direction=Direction.INBOUND, sender=None, to=(), cc=(), sent_at=None,
        received_at=None, conversation_id="", attachments=(), owner="a", seen_by=(), people=(),
    )  # fmt: skip


def test_a_bulk_write_answers_each_journal_in_order(server: ReferenceCrm, api: httpx.Client) -> None:
    body = {"subject": "s", "direction": "inbound", "owner": "o"}
    items = [
        {"key": "<a@x>", **body},
        {"key": "", **body},
        {"key": "<b@x>", **body, "people": [{"id": "p-x"}]},
    ]

    answer = api.post("/journals/bulk", json={"journals": items})

    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["key"] for r in results] == ["<a@x>", "", "<b@x>"]
    assert results[0]["created"] is True and "error" not in results[0]
    assert [results[1]["error"]["status"], results[2]["error"]["status"]] == [400, 422]
    assert [j["key"] for j in server.journals()] == ["<a@x>"]
    assert api.post("/journals/bulk", json={"journals": []}).status_code == 400
    assert server.stats()["journalWrites"] == 3


async def test_against_a_crm_without_the_bulk_route_journals_go_one_put_each(server: ReferenceCrm) -> None:
    server.fault(405, count=1, method="POST", path_contains="/journals/bulk")  # as an API 1.0 CRM answers
    connector = server.connector()
    try:
        first = await connector.upsert_journals([_journal("<one@x>"), _journal("<two@x>")])
        second = await connector.upsert_journals([_journal("<three@x>")])
    finally:
        await connector.aclose()

    assert [type(r).__name__ for r in [*first, *second]] == ["CrmRef"] * 3
    assert sorted(j["key"] for j in server.journals()) == ["<one@x>", "<three@x>", "<two@x>"]
    assert server.stats()["byRoute"] == {"POST /journals/bulk": 1, "PUT /journals/{key}": 3}
