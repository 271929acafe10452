"""Fault injection and request counts of the reference CRM, seen over raw HTTP and through the connector."""

from __future__ import annotations

import httpx
import pytest

from emulators.crm.launcher import ReferenceCrm
from shared.errors import CrmRetryableError
from shared.model import Direction, Journal

JOURNAL = {"subject": "s", "direction": "outbound", "owner": "alice@contoso.test"}


def test_a_fault_answers_its_status_count_times_then_the_api_answers_again(
    server: ReferenceCrm, api: httpx.Client
) -> None:
    server.fault(503, count=2, path_contains="/health", retry_after="0.5")

    first, second, third = (api.get("/health") for _ in range(3))

    assert [first.status_code, second.status_code, third.status_code] == [503, 503, 200]
    assert first.headers["retry-after"] == "0.5"
    assert first.json()["error"]["code"] == "injected"


def test_a_fault_only_hits_its_method_and_path(server: ReferenceCrm, api: httpx.Client) -> None:
    server.fault(429, count=None, method="PUT", path_contains="/journals/", retry_after=7)

    assert api.get("/journals/nothing-here").status_code == 404
    assert api.post("/people/lookup", json={"addresses": []}).status_code == 200
    throttled = api.put("/journals/k1", json=JOURNAL)
    assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "7")
    assert api.put("/journals/k1", json=JOURNAL).status_code == 429  # count=None: until cleared

    server.clear_faults()

    assert api.put("/journals/k1", json=JOURNAL).status_code == 201


def test_apply_then_fail_applies_the_write_and_answers_5xx(server: ReferenceCrm, api: httpx.Client) -> None:
    server.fault(500, apply_then_fail=True, path_contains="/journals/")

    assert api.put("/journals/k2", json=JOURNAL).status_code == 500
    assert [j["key"] for j in server.journals()] == ["k2"]


async def test_a_slow_response_times_the_connector_out_as_retryable(server: ReferenceCrm) -> None:
    server.fault(None, delay_seconds=3, path_contains="/journals/")
    connector = server.connector(max_retries=0, timeout=0.3)
    journal = Journal(
        key="<slow@x.test>", subject="", body="", direction=Direction.INBOUND, sender=None, to=(), cc=(),
        sent_at=None, received_at=None, conversation_id="", attachments=(), owner="a", seen_by=(), people=(),
    )  # fmt: skip
    try:
        with pytest.raises(CrmRetryableError) as caught:
            await connector.upsert_journal(journal)
    finally:
        await connector.aclose()
    assert "Timeout" in str(caught.value)


def test_stats_count_api_requests_by_route_template_but_not_control_calls(
    server: ReferenceCrm, api: httpx.Client
) -> None:
    server.add_person("ann@example.test")
    api.put("/journals/%3Ca%40x%3E", json=JOURNAL)
    api.put("/journals/%3Cb%40x%3E", json=JOURNAL)
    api.put("/contacts/by-key/k", json={"owner": "o"})
    server.fault(429, path_contains="/people/lookup")
    api.post("/people/lookup", json={"addresses": ["ann@example.test"]})
    server.journals()

    stats = server.stats()

    assert stats["byRoute"] == {
        "PUT /journals/{key}": 2,
        "PUT /contacts/by-key/{key}": 1,
        "POST /people/lookup": 1,
    }
    assert stats["byStatus"] == {"201": 3, "429": 1}
    assert stats["total"] == 4
    server.clear_stats()
    assert server.stats()["total"] == 0


def test_reset_forgets_records_faults_and_counts(server: ReferenceCrm, api: httpx.Client) -> None:
    server.add_person("ann@example.test")
    api.put("/journals/k", json=JOURNAL)
    server.fault(503, count=None)

    server.reset()

    assert server.people() == [] and server.journals() == []
    assert server.stats()["total"] == 0
    assert api.get("/health").status_code == 200
