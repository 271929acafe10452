"""The whole Function App in the local host: Graph emulator → webhook → queue → worker → CRM journal."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from emulators.localapp import LocalApp, local_app
from shared.state.tables import TableStateStore

pytestmark = pytest.mark.e2e
ANN = "ann@contoso.com"


@pytest.fixture(scope="module")
def app() -> Iterator[LocalApp]:
    with local_app() as running:
        yield running


@pytest.fixture(scope="module")
async def state(app: LocalApp) -> AsyncIterator[TableStateStore]:
    store = TableStateStore.from_connection_string(app.settings["AzureWebJobsStorage"])
    await store.ensure_tables()
    yield store
    await store.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def graph(app: LocalApp, method: str, path: str) -> Any:
    response = httpx.request(method, f"{app.graph.base_url}{path}", headers={"Authorization": "Bearer admin"})
    response.raise_for_status()
    return response.json() if response.content else None


def deliver(app: LocalApp, key: str) -> None:
    app.graph.control.deliver(
        ANN,
        {"from": {"address": "bob@fabrikam.example"}, "to": [{"address": ANN}], "subject": key,
         "internetMessageId": f"<{key}@fabrikam.example>", "bodyHtml": f"<p>{key}</p>"},
    )  # fmt: skip


def has_journal(app: LocalApp, key: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return any(j["key"] == f"<{key}@fabrikam.example>" for j in app.crm.journals())

    return check


@pytest.fixture(scope="module")
async def enabled(app: LocalApp, state: TableStateStore) -> str:
    """Ann is enabled, subscribed, and her first round is done."""
    app.graph.control.add_user(ANN)
    app.crm.add_person("bob@fabrikam.example", name="Bob", owner=ANN)
    await state.put_config(ANN, {"Enabled": True, "MailFolders": "inbox"})
    await app.host.fire_async("subscription_upkeep")
    [subscription] = await state.list_subscriptions(ANN)
    await app.host.fire_async("sync_sweep")

    async def round_done() -> bool:
        return (await state.get_cursor(ANN, "mail:inbox")).link_kind == "delta"

    await eventually(round_done, "the first round finished")
    return subscription.subscription_id


async def test_a_delivered_mail_becomes_a_journal_through_the_webhook(app: LocalApp, enabled: str) -> None:
    assert [s["id"] for s in graph(app, "GET", "/subscriptions")["value"]] == [enabled]
    deliver(app, "via-webhook")
    await eventually(has_journal(app, "via-webhook"), "journal written from the notification")
    journal = next(j for j in app.crm.journals() if j["key"] == "<via-webhook@fabrikam.example>")
    assert journal["seenBy"] == [ANN] and [p["email"] for p in journal["people"]] == ["bob@fabrikam.example"]


async def test_without_notifications_the_sweep_still_brings_the_journal(
    app: LocalApp, state: TableStateStore, enabled: str
) -> None:
    [record] = await state.list_subscriptions(ANN)
    graph(app, "DELETE", f"/subscriptions/{record.subscription_id}")  # Graph stops notifying, silently
    deliver(app, "via-sweep")
    await asyncio.sleep(2.0)
    assert not await has_journal(app, "via-sweep")()  # nothing woke the worker
    await app.host.fire_async("sync_sweep")
    await eventually(has_journal(app, "via-sweep"), "journal written by the sweep")
    await app.host.fire_async("subscription_upkeep")  # renews: finds it gone, recreates it
    deliver(app, "after-upkeep")
    await eventually(has_journal(app, "after-upkeep"), "journal written from the recreated subscription")


async def test_after_subscription_removed_it_is_recreated_and_the_gap_is_synced(
    app: LocalApp, state: TableStateStore, enabled: str
) -> None:
    [before] = await state.list_subscriptions(ANN)
    app.graph.control.lifecycle(before.subscription_id, "subscriptionRemoved")
    deliver(app, "in-the-gap")

    async def recreated() -> bool:
        records = await state.list_subscriptions(ANN)
        return len(records) == 1 and records[0].subscription_id != before.subscription_id

    await eventually(recreated, "subscription recreated")
    await eventually(has_journal(app, "in-the-gap"), "mail that arrived meanwhile journaled")
    [after] = await state.list_subscriptions(ANN)
    assert [s["id"] for s in graph(app, "GET", "/subscriptions")["value"]] == [after.subscription_id]
    deliver(app, "after-recreate")
    await eventually(has_journal(app, "after-recreate"), "journal from the new subscription")


async def test_a_contact_added_in_the_owned_folder_reaches_the_crm_through_the_webhook(
    app: LocalApp, state: TableStateStore
) -> None:
    cara = "cara@contoso.com"
    app.graph.control.add_user(cara)
    app.crm.add_person("dora@fabrikam.example", name="Dora Crm", owner=cara)
    await state.put_config(cara, {"Enabled": True, "Mail": False, "Contacts": True})
    await app.host.fire_async("sync_sweep")  # the first sync creates and fills the owned folder

    async def first_sync_done() -> bool:
        return (await state.get_cursor(cara, "contacts")).link_kind == "delta"

    await eventually(first_sync_done, "the first contacts sync finished")
    folder = (await state.get_cursor(cara, "contacts")).contacts.folder_id
    await app.host.fire_async("subscription_upkeep")  # subscribes to the owned folder
    assert [r.resource for r in await state.list_subscriptions(cara)] == [
        f"users/{cara}/contactFolders/{folder}/contacts"
    ]
    response = httpx.post(
        f"{app.graph.base_url}/users/{cara}/contactFolders/{folder}/contacts",
        json={"displayName": "Olga Outlook", "emailAddresses": [{"address": "olga@northwind.example"}]},
        headers={"Authorization": "Bearer outlook"},
    )
    response.raise_for_status()

    async def in_crm() -> bool:
        return any(p["emails"] == ["olga@northwind.example"] for p in app.crm.contacts(cara))

    await eventually(in_crm, "the contact created in the CRM from the notification")
    assert sorted(p["displayName"] for p in app.crm.contacts(cara)) == ["Dora Crm", "Olga Outlook"]


# ---------------------------------------------------------------------------------------------
# Keys: Graph's webhook key opens the two webhook functions only; the admin API takes the admin key


def admin_calls(app: LocalApp) -> list[tuple[str, str]]:
    """(method, URL) of every admin route the host indexed, with its parameters filled in."""
    calls = []
    for function in app.host.functions():
        route = str(function.get("route", ""))
        if not route.startswith("manage/"):
            continue
        path = re.sub(r"\{action:[^}]*\}\}?", "sync", route).replace("{upn}", ANN)
        calls += [(method, f"{app.host.base_url}/{path}") for method in function["methods"]]
    return calls


FORGED_PRINCIPAL = base64.b64encode(
    json.dumps({"auth_typ": "aad", "claims": [{"typ": "roles", "val": "CrmSync.Admin"}]}).encode()
).decode()


def test_the_admin_routes_are_anonymous_to_the_host_and_the_webhook_routes_take_function_keys(
    app: LocalApp,
) -> None:
    levels = {f["name"]: (f["route"], f["authLevel"]) for f in app.host.functions() if f["trigger"] == "http"}
    admin = {name: level for name, (route, level) in levels.items() if route.startswith("manage/")}
    assert len(admin) == 6 and set(admin.values()) == {"anonymous"}  # the app checks every request
    assert {n: levels[n] for n in ("graph_notifications", "graph_lifecycle")} == {
        "graph_notifications": ("notifications", "function"),
        "graph_lifecycle": ("lifecycle", "function"),
    }
    assert set(levels) == set(admin) | {"graph_notifications", "graph_lifecycle"}


def test_the_webhook_key_and_the_hosts_own_keys_get_401_on_every_admin_route(app: LocalApp) -> None:
    calls = admin_calls(app)
    assert len(calls) == 6
    refused = [
        {"params": {"code": app.webhook_key}},
        {"headers": {"x-functions-key": app.webhook_key}},
        {"params": {"code": app.host.function_key}},  # the host key
        {"params": {"code": app.host.master_key}},
        {"headers": {"x-ms-client-principal": FORGED_PRINCIPAL}},  # no App Service auth: not trusted
        {},
    ]
    for method, url in calls:
        for credential in refused:
            response = httpx.request(method, url, timeout=30, **credential)  # type: ignore[arg-type]
            assert response.status_code == 401, (method, url, credential, response.text)


def test_the_admin_key_opens_every_admin_route(app: LocalApp) -> None:
    for method, url in admin_calls(app):
        response = httpx.request(
            method, url, params={"message": "<m@x>"}, headers={"x-functions-key": app.admin_key}, timeout=30
        )
        assert response.status_code in (200, 202, 404), (method, url, response.text)  # 404: no such user
    page = httpx.get(f"{app.host.base_url}/manage/status", params={"code": app.admin_key}, timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("route", ["notifications", "lifecycle"])
def test_graph_validates_notifies_and_reports_lifecycle_with_the_webhook_key_only(
    app: LocalApp, route: str
) -> None:
    url = f"{app.host.base_url}/{route}"
    token = "Validation: Testing client application reachability"
    handshake = httpx.post(url, params={"code": app.webhook_key, "validationToken": token}, timeout=30)
    assert (handshake.status_code, handshake.text) == (200, token)
    doorbell = {"value": [{"subscriptionId": "not-ours", "clientState": "x", "lifecycleEvent": "missed"}]}
    assert httpx.post(url, params={"code": app.webhook_key}, json=doorbell, timeout=30).status_code == 202
    for other in (app.admin_key, "", "wrong"):
        assert httpx.post(url, params={"code": other}, json=doorbell, timeout=30).status_code == 401


@pytest.mark.parametrize(
    "body",
    [b'{"value": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", b'{"value": [], "n": ' + b"7" * 5_000 + b"}"],
    ids=["nested 100,000 deep", "an integer of 5,000 digits"],
)
def test_json_too_deep_or_a_number_too_long_is_a_400_through_the_host(app: LocalApp, body: bytes) -> None:
    response = httpx.post(
        f"{app.host.base_url}/notifications", params={"code": app.webhook_key}, content=body, timeout=30
    )
    assert response.status_code == 400 and response.text
