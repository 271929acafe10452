"""The seeded tenant generator, and an emulator started from a seed file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulators.graph.launcher import GraphEmulator, graph_emulator
from emulators.graph.sample import generate
from tests.emulators.graph.conftest import sdk_client


def test_generation_is_deterministic():
    assert generate(users=2, days=3, per_day=4, seed=5) == generate(users=2, days=3, per_day=4, seed=5)
    assert generate(users=2, days=3, per_day=4, seed=5) != generate(users=2, days=3, per_day=4, seed=6)


def test_generated_tenant_has_what_tests_need():
    data = generate(users=3, days=20, per_day=10, seed=2)
    msgs = [m for u in data["users"] for m in u["messages"]]
    assert any("divRplyFwdMsg" in m["bodyHtml"] for m in msgs)  # replies quote earlier messages
    assert any(m.get("attachments") for m in msgs) and any(m.get("categories") for m in msgs)
    assert any(m.get("sensitivity") in ("private", "confidential", "personal") for m in msgs)
    domains = {m["from"]["emailAddress"]["address"].split("@")[1] for m in msgs}
    assert "contoso.test" in domains and len(domains) > 2  # internal and external correspondents
    ids = [m["internetMessageId"] for m in msgs]
    assert len(ids) > len(set(ids))  # internal mail is in both mailboxes
    events = [e for u in data["users"] for e in u["events"]]
    assert any(e.get("recurrence") and e.get("exceptions") and e.get("cancelledDates") for e in events)
    assert any(e.get("isAllDay") for e in events) and any(e.get("isCancelled") for e in events)
    assert any(e["sensitivity"] == "private" for e in events)
    assert all(len(c["emailAddresses"]) <= 3 for u in data["users"] for c in u["contacts"])
    tasks = [t for u in data["users"] for lst in u["todoLists"] for t in lst["tasks"]]
    assert any(t.get("recurrence") for t in tasks) and any(t.get("status") == "completed" for t in tasks)
    assert any(t.get("linkedResources") for t in tasks)


def test_tasks_leave_the_rest_of_the_tenant_as_it_was():
    with_tasks, without = (
        generate(users=2, days=3, per_day=4, seed=5),
        generate(users=2, days=3, per_day=4, seed=5, tasks_per_user=0),
    )
    for a, b in zip(with_tasks["users"], without["users"], strict=True):
        assert {k: v for k, v in a.items() if k != "todoLists"} == {
            k: v for k, v in b.items() if k != "todoLists"
        }


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Iterator[tuple[GraphEmulator, dict]]:
    data = generate(users=2, days=10, per_day=5, seed=3)
    owner = data["users"][0]["userPrincipalName"]
    rights = {"sendAs": [owner], "messageCopyForSentAsEnabled": True}
    shared = {"userPrincipalName": "sales@contoso.test", "userPurpose": "shared", "mailbox": rights}
    data["users"].append(shared)
    path: Path = tmp_path_factory.mktemp("seed") / "tenant.json"
    path.write_text(json.dumps(data))
    with graph_emulator(seed=path) as g:
        yield g, data


async def test_seed_file_loads_and_reset_restores_it(seeded):
    g, data = seeded
    upn = data["users"][0]["userPrincipalName"]
    graph = sdk_client(g.base_url)
    inbox = await graph.users.by_user_id(upn).mail_folders.by_mail_folder_id("inbox").get()
    expected = sum(1 for m in data["users"][0]["messages"] if m["folder"] == "inbox")
    assert inbox.total_item_count == expected
    g.control.deliver(upn, {"from": {"emailAddress": {"address": "x@y.test"}}, "subject": "extra"})
    g.control.reset()
    inbox = await graph.users.by_user_id(upn).mail_folders.by_mail_folder_id("inbox").get()
    assert inbox.total_item_count == expected
    events = await graph.users.by_user_id(upn).events.get()
    assert events.value and any(e.type.value == "seriesMaster" for e in events.value)


async def test_seeded_tasks_and_shared_mailbox(seeded):
    g, data = seeded
    upn = data["users"][0]["userPrincipalName"]
    graph = sdk_client(g.base_url)
    lists = {x.display_name: x.id for x in (await graph.users.by_user_id(upn).todo.lists.get()).value}
    assert set(lists) == {"Tasks", "Flagged emails", "Customers"}
    seeded_tasks = {t["title"] for lst in data["users"][0]["todoLists"] for t in lst["tasks"]}
    got = set()
    for list_id in lists.values():
        page = await graph.users.by_user_id(upn).todo.lists.by_todo_task_list_id(list_id).tasks.get()
        got |= {t.title for t in page.value}
    assert got >= seeded_tasks  # completed occurrences of series add none at load
    settings = await graph.users.by_user_id("sales@contoso.test").mailbox_settings.get()
    assert settings.user_purpose.value == "shared"
    assert g.control.mailbox("sales@contoso.test")["sendAs"] == [upn]
