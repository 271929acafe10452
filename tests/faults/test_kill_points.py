"""The kill-point matrix on the real stack: a worker *process* (`worker_main.py`) SIGKILLs itself at a
named checkpoint, a new process re-runs the job after the dead one's lease expired, and the CRM and the
cursor end as a fault-free run's. Every mailbox gets the same mail (keys made unique per mailbox), one
run per mailbox, so the killed runs go side by side."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from emulators.azurite import AzuriteStack
from emulators.crm.launcher import ReferenceCrm
from emulators.graph.launcher import GraphEmulator
from shared.model import Job
from shared.state.tables import TableStateStore
from tests.integration.stack import TENANT_DOMAIN, comparable, unique_prefix

pytestmark = pytest.mark.integration
MESSAGES = 12
PAGE_SIZE = 5  # three pages
KILL_POINTS = [
    "graph.read_page:1:after",  # after a Graph page
    "crm.upsert_journals:2:after",  # after a page's CRM write (applied, the answer never used)
    "state.put_keys:2:after",  # after a page's key rows were written
    "state.save_cursor:2:before",  # before the cursor save of the second page
    "queue.delete:1:before",  # the job is done, its queue message not yet deleted
]


def env_for(azurite: AzuriteStack, graph: GraphEmulator, crm: ReferenceCrm, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "GRAPH_BASE_URL": graph.base_url, "GRAPH_AUTH_MODE": "static-token",
        "GRAPH_STATIC_TOKEN": "kill-test", "AzureWebJobsStorage": azurite.connection_string,
        "CRM_BASE_URL": crm.base_url, "CRM_API_TOKEN": crm.token, "ORG_DOMAINS": TENANT_DOMAIN,
        "PAGE_SIZE": str(PAGE_SIZE), **extra,
    }  # fmt: skip


def normalised(journals: list[dict[str, Any]], user: str) -> dict[str, Any]:
    tag = user.split("@")[0]
    out = {}
    for key, value in comparable({j["key"]: j for j in journals}).items():
        value = {**value, "key": key.replace(tag, "USER"), "owner": "", "seenBy": [], "to": []}
        out[key.replace(tag, "USER")] = value
    return out


def spawn(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.faults.worker_main"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def test_a_worker_killed_at_each_checkpoint_ends_as_a_clean_run(
    azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm
) -> None:
    graph.control.reset(empty=True)
    crm_server.reset()
    prefix, queue_base = unique_prefix(), "kill" + secrets.token_hex(4)
    users = [f"clean@{TENANT_DOMAIN}"] + [f"kill{n}@{TENANT_DOMAIN}" for n in range(len(KILL_POINTS))]
    state = TableStateStore.from_connection_string(azurite_stack.connection_string, table_prefix=prefix)
    await state.ensure_tables()
    queues: dict[str, QueueClient] = {}
    start = datetime.now(UTC).replace(microsecond=0)  # the same times in every mailbox
    crm_server.add_person("bob@fabrikam.example", name="Bob", owner=users[0])
    try:
        for n, user in enumerate(users):
            graph.control.add_user(user)
            await state.put_config(user, {"Enabled": True, "MailFolders": "inbox"})
            tag = user.split("@")[0]
            for m in range(MESSAGES):
                graph.control.deliver(
                    user,
                    {"from": {"address": "bob@fabrikam.example"}, "to": [{"address": user}],
                     "subject": f"Order {m}", "internetMessageId": f"<order-{m}-{tag}@fabrikam.example>",
                     "bodyHtml": f"<p>Order {m}</p>", "conversationId": f"conv-{m}",
                     "receivedDateTime": (start - timedelta(minutes=m)).isoformat(),
                     "sentDateTime": (start - timedelta(minutes=m, seconds=5)).isoformat()},
                )  # fmt: skip
            queue = QueueClient.from_connection_string(azurite_stack.connection_string, f"{queue_base}-{n}")
            queue.create_queue()
            queue.send_message(base64.b64encode(Job(user, "mail:inbox", "sweep").to_json().encode()).decode())
            queues[user] = queue

        base = env_for(azurite_stack, graph, crm_server, TABLE_PREFIX=prefix)
        first = {
            user: spawn({**base, "JOB_QUEUE": f"{queue_base}-{n}", "KILL_AT": ([""] + KILL_POINTS)[n]})
            for n, user in enumerate(users)
        }
        codes = {user: process.wait(timeout=240) for user, process in first.items()}
        assert codes[users[0]] == 0, first[users[0]].stderr.read() if first[users[0]].stderr else ""
        assert all(codes[u] == -signal.SIGKILL for u in users[1:]), codes  # every kill point was reached

        again = {
            user: spawn({**base, "JOB_QUEUE": f"{queue_base}-{n}", "CLOCK_OFFSET_SECONDS": "600"})
            for n, user in enumerate(users)
            if n > 0
        }
        for process in again.values():
            assert process.wait(timeout=240) == 0, process.stderr.read() if process.stderr else ""

        clean = normalised(crm_server.journals(owner=users[0]), users[0])
        assert len(clean) == MESSAGES
        clean_cursor = await state.get_cursor(users[0], "mail:inbox")
        for user, point in zip(users[1:], KILL_POINTS, strict=True):
            assert normalised(crm_server.journals(owner=user), user) == clean, point
            cursor = await state.get_cursor(user, "mail:inbox")
            assert (cursor.link_kind, bool(cursor.link)) == (clean_cursor.link_kind, True) == ("delta", True)
            assert queues[user].peek_messages(max_messages=5) == [], point  # the job is gone once done
    finally:
        for queue in queues.values():
            queue.delete_queue()
            queue.close()
        await state.aclose()
