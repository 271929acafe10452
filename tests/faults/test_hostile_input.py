"""Hostile mail through the real stack (msgraph-sdk → the Graph emulator, the reference CRM, Azurite) and
bad `SyncUsers` rows: no crash, a clear status, the other mail and users go on."""

from __future__ import annotations

import pytest

from shared.model import Job
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration
ANN = "ann@contoso.com"
DAN = "dan@contoso.com"


async def test_hostile_mail_is_journaled_as_plain_text_and_nothing_else_breaks(stack: Stack) -> None:
    stack.crm.add_person("bob@fabrikam.example", name="Bob", owner=ANN)
    await stack.add_user(ANN, MailFolders="inbox")
    crowd = [{"address": f"person{n}@crowd.example"} for n in range(1000)] + [{"address": ANN}]
    hostile = {
        "<script@evil.example>": {
            "bodyHtml": "<p>Hi</p><script>alert('x')</script><img src=x onerror=alert(1)>"
        },
        "<malformed@evil.example>": {
            "bodyHtml": "<div><p><b>unclosed <table><tr><td>cell</div></i>&bogus;&#xD800;"
        },
        "<giant@evil.example>": {"subject": "S" * 20_000, "bodyHtml": "<p>" + "word " * 60_000 + "</p>"},
        "<crowd@evil.example>": {"to": crowd, "subject": "To everyone"},
        "<nul@evil.example>": {"subject": "Nul\u0000 and \u202e bidi", "bodyHtml": "<p>\u0000\ufffe</p>"},
    }
    for key, fields in hostile.items():
        stack.deliver(ANN, internetMessageId=key, **fields)
    stack.deliver(ANN, internetMessageId="<plain@fabrikam.example>", subject="Plain")

    outcomes = await stack.sync(ANN)
    journals = stack.journals()
    issues = {i.item_key: i.reason for i in await stack.services.state.list_issues(ANN)}
    assert [o.status for o in outcomes] == ["done"]
    assert "<plain@fabrikam.example>" in journals
    for key in hostile:  # journaled, or recorded with a reason an admin can read: never silently dropped
        assert key in journals or issues.get(key), key
    for journal in journals.values():
        assert "<script" not in journal["body"] and "onerror" not in journal["body"]
    assert journals["<crowd@evil.example>"]["subject"] == "To everyone"
    row = await stack.services.state.get_user(ANN)
    assert row is not None and row.columns["State"] == "ok"


@pytest.mark.parametrize(
    "columns",
    [
        {"Enabled": "maybe"},
        {"Enabled": True, "DaysBack": "-3"},
        {"Enabled": True, "DaysBack": "lots"},
        {"Enabled": True, "MailPolicy": "everything"},
        {"Enabled": True, "MailFolders": ",,,"},
    ],
    ids=["enabled", "days-negative", "days-text", "policy", "folders"],
)
async def test_a_bad_users_row_gets_a_clear_error_and_the_others_go_on(
    stack: Stack, columns: dict[str, object]
) -> None:
    await stack.add_user(ANN, MailFolders="inbox")
    stack.graph.control.add_user(DAN)
    await stack.services.state.put_config(DAN, columns)
    jobs = await stack.services.engine.sweep()
    assert {j.user for j in jobs} == {ANN}
    outcome = await stack.services.engine.run_job(Job(DAN, "mail:inbox"))
    row = await stack.services.state.get_user(DAN)
    assert row is not None
    if outcome.status == "invalid":
        assert row.columns["State"] == "error" and row.columns["LastError"]
    else:  # a value the parser reads leniently must still leave a readable status
        assert outcome.status in {"disabled", "unknown-stream", "done"}, outcome
    assert [o.status for o in await stack.sync(ANN)] == ["done"]
