"""`crmsync` against the real stack: the admin's view of users, syncs, status, explanations and checks."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import Iterator

import pytest
from azure.data.tables import TableServiceClient, UpdateMode
from click.testing import CliRunner, Result

from emulators.azurite import AzuriteStack
from emulators.crm.launcher import ReferenceCrm
from emulators.graph.launcher import GraphEmulator
from shared.cli import main
from shared.state.tables import TableStateStore
from tests.integration.stack import local_env

pytestmark = pytest.mark.integration
ANN, BAD = "ann@contoso.com", "bad@contoso.com"


@pytest.fixture
def crmsync(
    azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm
) -> Iterator[CliRunner]:
    graph.control.reset(empty=True)
    crm_server.reset()
    env = local_env(azurite_stack, graph, crm_server)
    yield CliRunner(env=env)


def mail(graph: GraphEmulator, sender: str, message_id: str) -> None:
    graph.control.deliver(
        ANN,
        {
            "from": {"address": sender},
            "to": [{"address": ANN}],
            "subject": "Hi",
            "internetMessageId": message_id,
        },
    )


def run(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(main, list(args), catch_exceptions=False)


def ann_with_mail_from_bob(runner: CliRunner, graph: GraphEmulator, message_id: str) -> None:
    graph.control.add_user(ANN)
    mail(graph, "bob@fabrikam.example", message_id)
    run(runner, "users", "add", ANN, "MailFolders=inbox")


def write_users_row(runner: CliRunner, **columns: object) -> None:
    """Write a SyncUsers row as a person with Storage Explorer would, past our code's checks."""
    conn = runner.env["AzureWebJobsStorage"]  # type: ignore[index]
    with TableServiceClient.from_connection_string(conn) as service:
        service.get_table_client("SyncUsers").upsert_entity(
            {"PartitionKey": "user", **columns}, mode=UpdateMode.MERGE
        )


def test_an_admin_adds_syncs_inspects_and_explains(
    crmsync: CliRunner, graph: GraphEmulator, crm_server: ReferenceCrm
) -> None:
    graph.control.add_user(ANN)
    crm_server.add_person("bob@fabrikam.example", name="Bob", owner=ANN)
    mail(graph, "bob@fabrikam.example", "<cli-1@fabrikam.example>")
    mail(graph, "carol@contoso.com", "<cli-2@contoso.com>")

    refused = crmsync.invoke(main, ["users", "add", ANN, "MailPolicy=sometimes"])
    assert refused.exit_code != 0 and "MailPolicy must be one of" in str(refused.exception or refused.output)
    assert "added ann@contoso.com (enabled)" in run(crmsync, "users", "add", ANN, "MailFolders=inbox").output
    assert "updated" in run(crmsync, "users", "set", ANN, "DaysBack=30").output
    listed = run(crmsync, "users", "list").output
    assert ANN in listed and "enabled" in listed

    synced = run(crmsync, "sync", ANN)
    assert synced.exit_code == 0 and "mail:inbox: done" in synced.output and "journaled" in synced.output
    assert [j["key"] for j in crm_server.journals()] == ["<cli-1@fabrikam.example>"]

    status = run(crmsync, "status", ANN).output
    assert "ann@contoso.com: ok" in status and "mail:inbox: up to date" in status
    assert "synced" in run(crmsync, "explain", ANN, "<cli-1@fabrikam.example>").output
    assert "internal" in run(crmsync, "explain", ANN, "<cli-2@contoso.com>").output
    assert "No decision is recorded" in run(crmsync, "explain", ANN, "<never@seen>").output

    checked = run(crmsync, "check", ANN)
    assert checked.exit_code == 0 and "ok   crm" in checked.output and "mail folder inbox" in checked.output
    resynced = run(crmsync, "resync", ANN)
    assert resynced.exit_code == 0 and len(crm_server.journals()) == 1

    assert "disabled" in run(crmsync, "users", "disable", ANN).output
    after = crmsync.invoke(main, ["sync", ANN])
    assert after.exit_code == 1 and "not enabled" in after.output


def test_a_bad_row_gets_a_readable_error_and_other_users_go_on(
    crmsync: CliRunner, graph: GraphEmulator, crm_server: ReferenceCrm
) -> None:
    ann_with_mail_from_bob(crmsync, graph, "<ok-1@fabrikam.example>")
    write_users_row(crmsync, RowKey=BAD, Enabled=True, DaysBack="fourteen")  # an admin's typo
    good = run(crmsync, "sync", ANN)
    assert good.exit_code == 0, good.output
    bad = crmsync.invoke(main, ["sync", BAD])
    assert bad.exit_code != 0 and "DaysBack must be a whole number" in str(bad.output) + str(bad.exception)
    status = run(crmsync, "status").output
    assert "DaysBack must be a whole number" in status and "ann@contoso.com: ok" in status
    assert [j["key"] for j in crm_server.journals()] == ["<ok-1@fabrikam.example>"]


def test_a_sync_killed_mid_run_is_taken_over_only_once_its_process_is_gone(
    crmsync: CliRunner, graph: GraphEmulator, azurite_stack: AzuriteStack
) -> None:
    """An admin's `crmsync sync` was killed: its lease holds the mailbox for up to 5 minutes. The next
    sync says who holds it and until when; `--take-over` frees it when that process is gone, and
    refuses while it is alive."""
    user = "kay@contoso.com"
    graph.control.add_user(user)
    assert "added" in run(crmsync, "users", "add", user, "MailFolders=inbox").output
    graph.control.deliver(user, {"from": {"address": "bob@fabrikam.example"}, "to": [{"address": user}]})
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = socket.gethostname()

    async def hold(holder: str) -> None:
        store = TableStateStore.from_connection_string(azurite_stack.connection_string)
        try:
            assert await store.acquire(user, "mail:inbox", "the-killed-run", 300, holder) is not None
        finally:
            await store.aclose()

    asyncio.run(hold(f"{host}:{gone.pid}"))
    busy = crmsync.invoke(main, ["sync", user])
    assert busy.exit_code == 1 and "busy" in busy.output
    assert f"{host}:{gone.pid}" in busy.output and "--take-over" in busy.output
    taken = crmsync.invoke(main, ["sync", user, "--take-over"])
    assert taken.exit_code == 0, taken.output
    assert "taken over from" in taken.output and "mail:inbox: done" in taken.output

    asyncio.run(hold(f"{host}:{os.getpid()}"))  # a holder that is alive: this very process
    refused = crmsync.invoke(main, ["sync", user, "--take-over"])
    assert refused.exit_code == 1 and "is alive" in refused.output and "busy" in refused.output

    async def let_go() -> None:
        store = TableStateStore.from_connection_string(azurite_stack.connection_string)
        try:
            lease = await store.get_lease(user, "mail:inbox")
            assert lease is not None and lease.holder == f"{host}:{os.getpid()}"
            await store.break_lease(lease)
        finally:
            await store.aclose()

    asyncio.run(let_go())


HOSTILE_REASON = "\x1b]0;pwned\x07\x1b[2J\x1b[31mrefused\x1b[0m\nok: forged line\u202e"


def test_a_crms_hostile_error_text_reaches_the_terminal_without_its_control_characters(
    crmsync: CliRunner, graph: GraphEmulator, crm_server: ReferenceCrm
) -> None:
    ann_with_mail_from_bob(crmsync, graph, "<cli-bad@fabrikam.example>")
    crm_server.fault(
        422, count=None, method="PUT", path_contains="/journals/<cli-bad", message=HOSTILE_REASON
    )

    synced = run(crmsync, "sync", ANN)
    explained = run(crmsync, "explain", ANN, "<cli-bad@fabrikam.example>").output
    write_users_row(crmsync, RowKey=ANN, LastError=HOSTILE_REASON)  # as an older version stored it
    status = run(crmsync, "status", ANN).output

    assert "failed" in synced.output and "open issue:" in explained
    assert "]0;pwned[2J[31mrefused[0m ok: forged line (attempts: 1)" in explained
    assert "last error: ]0;pwned[2J[31mrefused[0m ok: forged line" in status
    for output in (synced.output, explained, status):
        assert not [c for c in output if c not in "\r\n" and not c.isprintable()], repr(
            output
        )  # \r: progress
