"""Service protection limits (per user: requests and execution time per sliding window, requests at
once) answered with 429, `Retry-After` and the documented codes; fault injection and counts."""

from __future__ import annotations

import concurrent.futures
import time

import httpx

from emulators.dataverse.launcher import DataverseStandIn
from tests.emulators.dataverse.conftest import HEADERS, error_code


def test_over_the_request_limit_a_user_gets_429_with_retry_after_until_the_window_frees(
    web: httpx.Client, dv: DataverseStandIn
) -> None:
    dv.settings(limits={"requests": 3, "windowSeconds": 1.5})
    other_user = {**HEADERS, "Authorization": "Bearer another-user"}

    answers = [web.get("WhoAmI") for _ in range(4)]
    throttled = answers[-1]

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert (error_code(throttled), throttled.headers["Retry-After"]) == ("0x80072322", "2")
    assert "Number of requests exceeded the limit of 3 over time window of 1 seconds" in throttled.text
    assert web.get("WhoAmI", headers=other_user).status_code == 200  # limits are per user
    time.sleep(float(throttled.headers["Retry-After"]))
    assert web.get("WhoAmI").status_code == 200
    assert dv.stats()["throttled"] == {"requests": 1}


def test_execution_time_and_concurrency_limits_answer_their_own_codes(dv: DataverseStandIn) -> None:
    dv.settings(limits={"concurrency": 2}, latency_ms=300)
    with (
        httpx.Client(base_url=dv.api_url, headers=HEADERS, verify=dv.ssl_context()) as web,
        concurrent.futures.ThreadPoolExecutor(4) as pool,
    ):
        answers = list(pool.map(lambda _: web.get("WhoAmI"), range(4)))
        assert sorted(a.status_code for a in answers) == [200, 200, 429, 429]
        assert {error_code(a) for a in answers if a.status_code == 429} == {"0x80072326"}

        dv.settings(limits={"concurrency": 52, "executionMs": 500, "windowSeconds": 60}, latency_ms=300)
        fresh = {"Authorization": "Bearer a-user-with-time-left"}
        spent = [web.get("WhoAmI", headers=fresh).status_code for _ in range(3)]
        assert spent[:2] == [200, 200] and spent[2] == 429
        assert dv.stats()["throttled"]["execution"] == 1


def test_a_batch_counts_as_one_request_and_injected_faults_hit_requests_or_operations(
    web: httpx.Client, dv: DataverseStandIn
) -> None:
    dv.fault(503, retry_after="0.5", path_contains="contacts", method="POST")
    failed = web.post("contacts", json={"lastname": "Lee"})
    assert (failed.status_code, failed.headers["Retry-After"]) == (503, "0.5")
    assert web.get("contacts").json()["value"] == []

    dv.fault(502, apply_then_fail=True, method="POST", path_contains="contacts")
    ambiguous = web.post("contacts", json={"lastname": "Applied"})
    assert ambiguous.status_code == 502
    assert [c["lastname"] for c in web.get("contacts?$select=lastname").json()["value"]] == ["Applied"]

    dv.clear_stats()
    dv.fault(429, scope="operation", path_contains="WhoAmI", retry_after="7")
    head = "--b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    body = "".join(f"{head}GET {dv.api_url}WhoAmI HTTP/1.1\r\n\r\n\r\n" for _ in range(3))
    response = web.post(
        "$batch",
        content=(body + "--b--\r\n").encode(),
        headers={"Content-Type": "multipart/mixed; boundary=b", "Prefer": "odata.continue-on-error"},
    )
    assert response.status_code == 200
    assert response.text.count("HTTP/1.1 429") == 1 and response.text.count("HTTP/1.1 200") == 2
    stats = dv.stats()
    assert (stats["requests"], stats["batchOperations"], stats["byRoute"]) == (1, 3, {"POST $batch": 1})
