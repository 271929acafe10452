"""The admin status page as an admin sees it: served by the real `status` function in the local
Functions host (state in Azurite), rendered by headless Chromium, asserted on the DOM.

Chromium is Debian's `chromium` package, installed by `scripts/ensure-chromium.sh` when missing; the
test skips (saying why) only when it cannot be installed here. A screenshot of the page is saved in
the test's temporary directory (`--basetemp` to keep it) so a person can check that it reads well.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, async_playwright

from emulators.azurite import AzuriteStack, azurite
from emulators.funchost.launcher import RunningHost, function_host
from shared.model import Cursor, Issue
from shared.state.queue import StorageJobQueue
from shared.state.tables import TableStateStore

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NEVER = "0 0 0 1 1 *"  # timers that must not fire while the page is looked at (1 January, midnight)
DELTA_SECRET = "DeltaTokenThatMustNeverShow"
ANN, BOB, CAROL, DAVE, ERIN = (f"{n}@contoso.com" for n in ("ann", "bob", "carol", "dave", "erin"))
FRANK, GRACE = "frank@contoso.com", "grace@contoso.com"
ADMIN_KEY = secrets.token_urlsafe(32)
LONG_ERROR = "mail:inbox: CRM answered 500: " + "x" * 29_954 + "END-OF-THE-ERROR"  # one "word"


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        result = subprocess.run(
            [str(ROOT / "scripts" / "ensure-chromium.sh")], capture_output=True, text=True, timeout=900
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"cannot install Chromium here: {error}")
    if result.returncode != 0:
        pytest.skip(f"cannot install Chromium here: {result.stderr.strip()}")
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def storage() -> Iterator[AzuriteStack]:
    with azurite() as stack:
        yield stack


async def seed(connection_string: str) -> None:
    now = datetime.now(UTC)
    store = TableStateStore.from_connection_string(connection_string)
    queue = StorageJobQueue.from_connection_string(connection_string)
    try:
        await store.ensure_tables()
        await queue.ensure_queue()
        # ok: synced three minutes ago, both folders up to date
        await store.put_config(ANN, {"Enabled": True})
        await store.update_status(
            ANN, {"State": "ok", "LastSyncUtc": now - timedelta(minutes=3), "LastError": ""}
        )
        for stream, totals in (("mail:inbox", (12, 3)), ("mail:sentitems", (5, 0))):
            cursor = await store.get_cursor(ANN, stream)
            await store.save_cursor(
                ANN,
                stream,
                Cursor(
                    link=f"https://graph.microsoft.com/v1.0/delta?$deltatoken={DELTA_SECRET}",
                    link_kind="delta",
                    totals={"journaled": totals[0], "skipped": totals[1], "failed": 0},
                    last_page=now - timedelta(minutes=3),
                    etag=cursor.etag,
                ),
            )
        # error: the CRM refused, with markup in the error text (it must show as text, not run)
        await store.put_config(BOB, {"Enabled": True, "MailFolders": "inbox"})
        await store.update_status(
            BOB,
            {
                "State": "error",
                "LastSyncUtc": now - timedelta(hours=5),
                "LastError": "mail:inbox: CRM answered 500: <script>window.pwned = 1</script><b>boom</b>",
                "LastErrorUtc": now - timedelta(minutes=20),
                "ErrorCount": 3,
            },
        )
        for n in range(2):
            await store.record_issue(
                Issue(
                    BOB,
                    f"<m{n}@fabrikam.example>",
                    "mail:inbox",
                    "CRM: 422 subject too long",
                    first_seen=now,
                    last_seen=now,
                )
            )
        # a row an admin mistyped
        await store.put_config(
            CAROL, {"Enabled": True, "DaysBack": "a fortnight", "MailPolicy": "everything"}
        )
        # throttled by Graph
        await store.put_config(DAVE, {"Enabled": True, "MailFolders": "inbox"})
        await store.update_status(
            DAVE,
            {
                "State": "throttled",
                "LastSyncUtc": now - timedelta(minutes=40),
                "LastError": "mail:inbox: Graph throttled, retry in 30 s",
            },
        )
        # switched off
        await store.put_config(ERIN, {"Enabled": False})
        # a cursor row with a total that is not a number (written by hand, or by a bug)
        await store.put_config(FRANK, {"Enabled": True})
        await store.update_status(FRANK, {"State": "ok", "LastSyncUtc": now - timedelta(minutes=1)})
        frank_totals: dict[str, dict[str, object]] = {
            "mail:inbox": {"journaled": 4, "skipped": 1},
            "mail:sentitems": {"journaled": "lots"},
        }
        for stream, totals in frank_totals.items():
            cursor = await store.get_cursor(FRANK, stream)
            saved = Cursor(link="x", link_kind="delta", extra={"totals": totals}, etag=cursor.etag)
            await store.save_cursor(FRANK, stream, saved)
        # an error text of 30,000 characters (stored as it came, before texts were capped)
        await store.put_config(GRACE, {"Enabled": True})
        await store.put_config(GRACE, {"State": "error", "LastError": LONG_ERROR})
    finally:
        await store.aclose()
        await queue.aclose()


@pytest.fixture(scope="module")
async def host(storage: AzuriteStack) -> AsyncIterator[RunningHost]:
    await seed(storage.connection_string)
    settings = {
        "AzureWebJobsStorage": storage.connection_string,
        "GRAPH_BASE_URL": "http://127.0.0.1:9/v1.0",  # never called: the page reads only the tables
        "GRAPH_AUTH_MODE": "static-token",
        "GRAPH_STATIC_TOKEN": "status-page-test",
        "CRM_BASE_URL": "http://127.0.0.1:9",
        "SYNC_SCHEDULE": NEVER,
        "SUBSCRIPTION_SCHEDULE": NEVER,
        "ADMIN_KEY": ADMIN_KEY,
    }
    with function_host("function_app:app", settings) as running:
        yield running


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[BrowserContext]:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=chromium,
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1400, "height": 800},
            )
            try:
                yield context
            finally:
                await context.close()


async def open_status(browser: BrowserContext, host: RunningHost) -> Page:
    page = await browser.new_page()
    response = await page.goto(f"{host.base_url}/manage/status?code={ADMIN_KEY}")
    assert response is not None and response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    return page


def test_the_status_page_needs_the_admin_key_not_a_functions_key(host: RunningHost) -> None:
    url = f"{host.base_url}/manage/status"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, params={"code": host.function_key}).status_code == 401  # the host key
    assert httpx.get(url, params={"code": ADMIN_KEY}).status_code == 200


def test_the_users_list_skips_and_flags_a_bad_total_and_shows_everyone(host: RunningHost) -> None:
    response = httpx.get(f"{host.base_url}/manage/users", headers={"x-functions-key": ADMIN_KEY})
    assert response.status_code == 200
    users = {u["upn"]: u for u in response.json()}
    assert sorted(users) == sorted([ANN, BOB, CAROL, DAVE, ERIN, FRANK, GRACE])
    frank = {s["stream"]: s["totals"] for s in users[FRANK]["streams"]}
    assert frank == {"mail:inbox": {"journaled": 4, "skipped": 1}, "mail:sentitems": {}}
    assert users[FRANK]["unreadable"] == [
        "mail:sentitems: total 'journaled' is not a whole number ('lots'), left out"
    ]


async def test_the_status_page_shows_each_user_state_counts_and_escaped_errors(
    browser: BrowserContext, host: RunningHost, tmp_path: Path
) -> None:
    page = await open_status(browser, host)
    await page.screenshot(path=str(tmp_path / "status.png"), full_page=True)

    rows = page.locator("#users tbody tr")
    assert await rows.count() == 7
    users = await rows.evaluate_all("rows => rows.map(r => r.dataset.user)")
    assert sorted(users) == [ANN, BOB, CAROL, DAVE, ERIN, FRANK, GRACE]

    async def cell(user: str, column: str) -> str:
        return (await page.locator(f"tr[data-user='{user}'] td[data-col='{column}']").inner_text()).strip()

    assert [await cell(u, "state") for u in (ANN, BOB, CAROL, DAVE, ERIN)] == [
        "ok",
        "error",
        "error",
        "throttled",
        "disabled",
    ]
    assert await cell(ANN, "journaled") == "17" and await cell(ANN, "skipped") == "3"
    assert await cell(ANN, "last-sync") == "3 min ago"
    assert "mail:inbox: up to date" in await cell(ANN, "streams")
    assert await cell(BOB, "issues") == "2"
    assert await cell(ERIN, "enabled") == "no" and await cell(ANN, "enabled") == "yes"
    assert "DaysBack" in await cell(CAROL, "error") and "MailPolicy" in await cell(CAROL, "error")
    assert "retry in 30 s" in await cell(DAVE, "error")

    bob_error = await cell(BOB, "error")
    assert "<script>window.pwned = 1</script><b>boom</b>" in bob_error  # shown as text
    assert await page.evaluate("() => document.querySelectorAll('script').length") == 0
    error_cell = page.locator(f"tr[data-user='{BOB}'] td[data-col='error']")
    assert await error_cell.evaluate("td => td.children.length") == 0
    assert await page.evaluate("() => window.pwned === undefined")

    chips = await page.locator("#summary .chip").all_inner_texts()
    assert chips == ["7 users", "3 error", "1 throttled", "2 ok", "1 disabled"]
    order = await rows.evaluate_all("rows => rows.map(r => r.dataset.state)")
    assert order == ["error", "error", "error", "throttled", "ok", "disabled", "ok"]  # attention first
    assert DELTA_SECRET not in await page.content()


async def test_a_bad_total_is_flagged_in_its_row_and_the_others_still_count(
    browser: BrowserContext, host: RunningHost
) -> None:
    page = await open_status(browser, host)
    frank = page.locator(f"tr[data-user='{FRANK}']")
    assert (await frank.locator("td[data-col='journaled']").inner_text()).strip() == "4"
    flag = (await frank.locator("td[data-col='error'] .flag").inner_text()).strip()
    assert flag == "unreadable: mail:sentitems: total 'journaled' is not a whole number ('lots'), left out"
    assert (
        await page.locator(f"tr[data-user='{ANN}'] td[data-col='journaled']").inner_text()
    ).strip() == "17"


async def test_a_30000_character_error_is_cut_and_shown_whole_on_demand_without_breaking_the_page(
    browser: BrowserContext, host: RunningHost, tmp_path: Path
) -> None:
    page = await open_status(browser, host)
    cell = page.locator(f"tr[data-user='{GRACE}'] td[data-col='error']")
    summary = cell.locator("details > summary")
    shown = (await summary.inner_text()).strip()
    assert shown.startswith("mail:inbox: CRM answered 500: xxx") and "show all 30,000 characters" in shown
    assert "END-OF-THE-ERROR" not in shown and len(shown) < 400
    row_box = await page.locator(f"tr[data-user='{GRACE}']").bounding_box()
    assert row_box is not None and row_box["height"] < 200  # an ordinary row, not 500 lines
    assert await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")

    await summary.click()  # the whole text, on demand, in a box of its own that scrolls
    full = cell.locator("details .full")
    assert await full.evaluate("el => el.textContent") == LONG_ERROR
    full_box = await full.bounding_box()
    assert full_box is not None and full_box["height"] <= 20 * 16 + 1  # 20rem, then it scrolls
    assert await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    await page.screenshot(path=str(tmp_path / "status-long-error.png"), full_page=True)
