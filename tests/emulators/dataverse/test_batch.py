"""`$batch` edge cases written as raw multipart, as "Execute batch operations using the Web API"
shows it (Microsoft's client covers the common path in `test_client.py`)."""

from __future__ import annotations

import httpx

from tests.emulators.dataverse.conftest import error_code

CRLF = "\r\n"


def part(method: str, url: str, body: str = "", content_id: str = "") -> str:
    head = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id:
        head.append(f"Content-ID: {content_id}")
    request = [f"{method} {url} HTTP/1.1"]
    if body:
        request.append("Content-Type: application/json; type=entry")
    return CRLF.join(head) + CRLF + CRLF + CRLF.join(request) + CRLF + CRLF + body + CRLF


def batch(*parts: str | list[str], end: str = CRLF) -> tuple[str, str]:
    out = []
    for item in parts:
        if isinstance(item, list):
            inner = "".join(f"--changeset_C1{CRLF}{p}" for p in item) + f"--changeset_C1--{CRLF}"
            out.append(
                f"--batch_B1{CRLF}Content-Type: multipart/mixed; boundary=changeset_C1{CRLF}{CRLF}{inner}"
            )
        else:
            out.append(f"--batch_B1{CRLF}{item}")
    return "".join(out) + "--batch_B1--" + end, "multipart/mixed; boundary=batch_B1"


def send(web: httpx.Client, body: str, content_type: str, **headers: str) -> httpx.Response:
    return web.post("$batch", content=body.encode(), headers={"Content-Type": content_type, **headers})


def test_a_change_set_uses_content_id_references_and_answers_each_part_in_order(web: httpx.Client) -> None:
    base = str(web.base_url)
    body, kind = batch(
        [
            part("POST", f"{base}contacts", '{"lastname":"Lee"}', "1"),
            part(
                "POST",
                f"{base}emails",
                '{"subject":"Quote","regardingobjectid_contact_email@odata.bind":"$1"}',
                "2",
            ),
            part("PATCH", "$2", '{"statecode":1,"statuscode":4}', "3"),
        ],
        part("GET", f"{base}emails?$select=subject,statecode,_regardingobjectid_value"),
    )

    response = send(web, body, kind)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("multipart/mixed; boundary=batchresponse_")
    text = response.text
    assert text.count("HTTP/1.1 204 No Content") == 3 and "HTTP/1.1 200 OK" in text
    assert text.index("Content-ID: 1") < text.index("Content-ID: 2") < text.index("Content-ID: 3")
    assert '"statecode": 1' in text and "OData-EntityId: " in text and "Location: " in text


def test_a_failed_change_set_is_rolled_back_and_a_forward_reference_fails_it(web: httpx.Client) -> None:
    base = str(web.base_url)
    body, kind = batch(
        [
            part("POST", f"{base}contacts", '{"lastname":"Rolled back"}', "1"),
            part("PATCH", "$2", '{"lastname":"x"}', "2"),
        ]
    )

    response = send(web, body, kind)

    assert response.status_code == 400
    assert "Content-ID Reference: '$2' does not exist in the batch context." in response.text
    assert web.get("contacts").json()["value"] == []


def test_a_batch_without_its_final_crlf_or_with_a_get_in_a_change_set_is_refused(web: httpx.Client) -> None:
    base = str(web.base_url)
    unreadable = send(web, *batch(part("GET", f"{base}contacts"), end=""))
    get_in_set = send(web, *batch([part("GET", f"{base}contacts", content_id="1")]))
    too_many = send(web, *batch(*[part("GET", f"{base}WhoAmI")] * 1001))

    assert (unreadable.status_code, error_code(unreadable)) == (400, "0x80048d19")
    assert get_in_set.status_code == 400 and "GET is not allowed inside a change set" in get_in_set.text
    assert too_many.status_code == 400 and "limit of 1000" in too_many.text


def test_continue_on_error_runs_every_operation_and_answers_200(web: httpx.Client) -> None:
    base = str(web.base_url)
    body, kind = batch(
        part("POST", f"{base}contacts", '{"lastname":"' + "x" * 60 + '"}'),
        part("POST", f"{base}contacts", '{"lastname":"Kept"}'),
    )

    response = send(web, body, kind, Prefer="odata.continue-on-error")

    assert response.status_code == 200
    assert "HTTP/1.1 400 Bad Request" in response.text and "0x80044331" in response.text
    assert [c["lastname"] for c in web.get("contacts?$select=lastname").json()["value"]] == ["Kept"]
