"""The admin API, called directly: list, sync / resync, check, explain, the status page; 404s."""

from __future__ import annotations

import dataclasses
import importlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

import function_app
from functions import admin, worker
from shared.admin_access import ADMIN_ROLE
from shared.config import Settings
from shared.model import Job
from tests.functions.conftest import ADMIN_KEY, App, queue_message
from tests.unit.test_admin_access import principal

ANN, DAN = "ann@contoso.com", "dan@contoso.com"


def request(
    method: str, route: str, route_params: dict[str, str] | None = None, **params: str
) -> func.HttpRequest:
    """An admin's request: it carries the admin key."""
    url = f"http://127.0.0.1/api/{route}"
    headers = {"x-functions-key": ADMIN_KEY}
    return func.HttpRequest(
        method, url, params=params, route_params=route_params or {}, body=b"", headers=headers
    )


def body(response: func.HttpResponse) -> Any:
    assert response.mimetype == "application/json"
    return json.loads(response.get_body())


async def test_list_shows_every_user_with_status_and_stream_totals(app: App) -> None:
    await app.add_user(ANN, MailFolders="inbox")
    await app.state.put_config(DAN, {"Enabled": False})
    await app.state.put_config("bad@contoso.com", {"Enabled": True, "MailPolicy": "everything"})
    app.deliver(ANN, internetMessageId="<one@fabrikam.example>")
    await worker.sync_worker(queue_message(Job(ANN, "mail:inbox").to_json()))

    response = await admin.list_users(request("GET", "manage/users"))
    assert response.status_code == 200
    users = {u["upn"]: u for u in body(response)}
    assert sorted(users) == [ANN, "bad@contoso.com", DAN]
    assert users[ANN]["state"] == "ok" and users[ANN]["enabled"] is True and users[ANN]["last_sync_utc"]
    assert users[ANN]["streams"][0]["stream"] == "mail:inbox"
    assert users[ANN]["streams"][0]["phase"] == "up to date"
    assert users[ANN]["streams"][0]["totals"]["journaled"] == 1
    assert users[DAN]["enabled"] is False and users[DAN]["state"] == "new"
    assert (
        users["bad@contoso.com"]["state"] == "error"
        and "MailPolicy" in users["bad@contoso.com"]["last_error"]
    )


@pytest.mark.parametrize(
    ("action", "reason", "fresh"), [("sync", "manual", False), ("resync", "resync", True)]
)
async def test_sync_and_resync_queue_a_job_per_stream(
    app: App, action: str, reason: str, fresh: bool
) -> None:
    await app.add_user(ANN)
    response = await admin.force_sync(request("POST", "manage/users", {"upn": ANN, "action": action}))
    assert response.status_code == 202
    assert body(response) == {"queued": ["mail:inbox", "mail:sentitems"]}
    assert app.jobs() == [Job(ANN, "mail:inbox", reason, fresh), Job(ANN, "mail:sentitems", reason, fresh)]


async def test_resync_starts_a_fresh_round_that_reads_a_widened_window(app: App) -> None:
    await app.add_user(ANN, MailFolders="inbox", DaysBack=3)
    ten_days_ago = (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    app.deliver(ANN, internetMessageId="<old@fabrikam.example>", receivedDateTime=ten_days_ago)
    app.deliver(ANN, internetMessageId="<new@fabrikam.example>")
    await worker.sync_worker(queue_message(Job(ANN, "mail:inbox").to_json()))
    assert list(app.crm.journals) == ["<new@fabrikam.example>"]

    await app.state.put_config(ANN, {"DaysBack": 14})  # the admin widens the window
    await worker.sync_worker(queue_message(Job(ANN, "mail:inbox").to_json()))
    assert list(app.crm.journals) == ["<new@fabrikam.example>"]  # a delta read sees no change
    await admin.force_sync(request("POST", "manage/users", {"upn": ANN, "action": "resync"}))
    for message in app.take_messages():
        await worker.sync_worker(message)
    assert sorted(app.crm.journals) == ["<new@fabrikam.example>", "<old@fabrikam.example>"]


async def test_sync_of_a_bad_row_is_a_400_saying_why(app: App) -> None:
    await app.state.put_config(ANN, {"Enabled": True, "DaysBack": "-3"})
    response = await admin.force_sync(request("POST", "manage/users", {"upn": ANN, "action": "sync"}))
    assert response.status_code == 400 and "DaysBack" in body(response)["error"]
    assert app.jobs() == []


async def test_check_reports_storage_crm_and_each_mailbox_folder(app: App) -> None:
    await app.add_user(ANN)
    response = await admin.check_user(request("GET", "manage/users", {"upn": ANN}))
    result = body(response)
    assert response.status_code == 200 and result["ok"] is True
    assert [c["name"] for c in result["checks"]] == [
        "storage",
        "crm",
        "mail folder inbox",
        "mail folder sentitems",
    ]

    app.graph.control.deny(ANN)
    app.crm.credentials_ok = False
    result = body(await admin.check_user(request("GET", "manage/users", {"upn": ANN})))
    assert result["ok"] is False
    assert {c["name"]: c["ok"] for c in result["checks"]} == {
        "storage": True,
        "crm": False,
        "mail folder inbox": False,
        "mail folder sentitems": False,
    }
    assert "Mail.Read" in result["checks"][2]["detail"]


async def test_explain_says_why_a_message_did_or_did_not_become_a_journal(app: App) -> None:
    await app.add_user(ANN, MailFolders="inbox", ExcludedDomains="northwind.example")
    app.deliver(ANN, internetMessageId="<kept@fabrikam.example>")
    app.deliver(
        ANN, internetMessageId="<dropped@northwind.example>", **{"from": {"address": "x@northwind.example"}}
    )
    await worker.sync_worker(queue_message(Job(ANN, "mail:inbox").to_json()))

    def explain(message: str) -> func.HttpRequest:
        return request("GET", "manage/users", {"upn": ANN}, message=message)

    kept = body(await admin.explain_message(explain("<kept@fabrikam.example>")))["explanation"]
    assert kept.startswith("synced at") and "CRM record" in kept
    dropped = body(await admin.explain_message(explain("<dropped@northwind.example>")))["explanation"]
    assert dropped.startswith("skipped at") and "northwind.example" in dropped
    unseen = body(await admin.explain_message(explain("<never@fabrikam.example>")))["explanation"]
    assert unseen.startswith("No decision is recorded")
    missing = await admin.explain_message(request("GET", "manage/users", {"upn": ANN}))
    assert missing.status_code == 400


@pytest.mark.parametrize("call", ["sync", "resync", "check", "explain"])
async def test_an_unknown_user_is_a_404(app: App, call: str) -> None:
    await app.add_user(ANN)
    nobody = {"upn": "nobody@contoso.com"}
    if call in {"sync", "resync"}:
        response = await admin.force_sync(request("POST", "manage/users", nobody | {"action": call}))
    elif call == "check":
        response = await admin.check_user(request("GET", "manage/users", nobody))
    else:
        response = await admin.explain_message(request("GET", "manage/users", nobody, message="<m@x>"))
    assert response.status_code == 404
    assert "nobody@contoso.com" in body(response)["error"]
    assert app.jobs() == []


async def test_the_status_page_is_html_with_a_row_per_user(app: App) -> None:
    await app.add_user(ANN)
    await app.state.update_status(ANN, {"State": "error", "LastError": "<script>alert(1)</script>"})
    response = await admin.status(request("GET", "manage/status"))
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_body().decode()
    assert f"data-user='{ANN}'" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# ---------------------------------------------------------------------------------------------
# Every admin function, enumerated from the Function App: refused without the admin credential


def admin_functions() -> list[tuple[str, Any]]:
    """(route, user function) of every HTTP function under manage/ that function_app registers
    (a FunctionApp indexes once, so function_app is imported anew)."""
    found = []
    for function in importlib.reload(function_app).app.get_functions():
        for binding in function.get_bindings_dict()["bindings"]:
            if binding.get("type") == "httpTrigger" and str(binding["route"]).startswith("manage/"):
                found.append((str(binding["route"]), function.get_user_function()))
    return found


def bare(headers: dict[str, str] | None = None, **params: str) -> func.HttpRequest:
    route, url = {"upn": ANN, "action": "sync"}, "http://127.0.0.1/api/manage/x"
    return func.HttpRequest("GET", url, params=params, route_params=route, headers=headers or {}, body=b"")


async def test_every_admin_function_refuses_the_webhook_key_and_no_key(app: App) -> None:
    functions = admin_functions()
    assert len(functions) == 6
    await app.add_user(ANN)
    for route, handler in functions:
        for request_ in (
            bare(),
            bare(code=app.webhook.key),
            bare({"x-functions-key": app.webhook.key}),
            bare({"x-ms-client-principal": principal(ADMIN_ROLE)}),  # App Service auth is off
        ):
            response = await handler(request_)
            assert response.status_code == 401, route
    assert app.jobs() == []  # nothing was queued by a refused sync


async def test_under_app_service_auth_every_admin_function_takes_the_app_role_only(
    app: App, settings: Settings
) -> None:
    app.services.settings = dataclasses.replace(settings, easy_auth=True)
    await app.add_user(ANN)
    for route, handler in admin_functions():
        assert (await handler(bare({"x-functions-key": ADMIN_KEY}))).status_code == 401, route
        assert (await handler(bare({"x-ms-client-principal": principal("Reader")}))).status_code == 403, route
        allowed = await handler(bare({"x-ms-client-principal": principal(ADMIN_ROLE)}, message="<m@x>"))
        assert allowed.status_code in (200, 202), (route, allowed.get_body())
