"""Mail → journals on the real stack: msgraph-sdk → Graph emulator, Azurite, reference CRM over HTTP."""

from __future__ import annotations

import pytest

from shared import admin
from shared.model import Job
from tests.integration.stack import Stack, comparable, days_ago

pytestmark = pytest.mark.integration
ANN = "ann@contoso.com"


async def test_first_sync_reads_the_window_and_rerunning_changes_nothing(stack: Stack) -> None:
    bob = stack.crm.add_person("bob@fabrikam.example", name="Bob Buyer", owner=ANN)
    await stack.add_user(ANN, DaysBack=14)
    for n in range(23):
        stack.deliver(ANN, subject=f"Order {n}", receivedDateTime=days_ago(n % 10))
    stack.deliver(ANN, subject="Too old", receivedDateTime=days_ago(30))
    sent = {"from": {"address": ANN}, "to": [{"address": "bob@fabrikam.example"}]}
    stack.deliver(ANN, subject="Sent by Ann", folder="sentitems", **sent)

    outcomes = await stack.sync(ANN)
    assert [o.status for o in outcomes] == ["done", "done"]
    journals = stack.journals()
    subjects = sorted(j["subject"] for j in journals.values())
    assert len(journals) == 24 and "Too old" not in subjects and "Sent by Ann" in subjects
    assert all([p["id"] for p in j["people"]] == [bob] for j in journals.values())
    directions = {j["subject"]: j["direction"] for j in journals.values()}
    assert directions["Sent by Ann"] == "outbound" and directions["Order 3"] == "inbound"
    row = await stack.services.state.get_user(ANN)
    assert row is not None and row.columns["State"] == "ok" and row.columns["ItemsJournaled"] == 24
    assert row.columns["OpenIssues"] == 0 and row.columns["LastError"] == ""

    before, writes = comparable(journals), stack.crm.stats()["journalWrites"]
    assert [o.status for o in await stack.sync(ANN)] == ["done", "done"]
    assert comparable(stack.journals()) == before
    assert stack.crm.stats()["journalWrites"] == writes


async def test_a_move_between_two_chosen_folders_is_one_journal(stack: Stack) -> None:
    await stack.add_user(ANN, MailFolders="inbox,archive")
    delivered = stack.deliver(ANN, subject="Contract", internetMessageId="<contract-1@fabrikam.example>")
    await stack.sync(ANN)
    assert list(stack.journals()) == ["<contract-1@fabrikam.example>"]

    stack.outlook("POST", f"/users/{ANN}/messages/{delivered['id']}/move", {"destinationId": "archive"})
    outcomes = await stack.sync(ANN)
    assert {o.status for o in outcomes} == {"done"}
    journals = stack.journals()
    assert list(journals) == ["<contract-1@fabrikam.example>"]
    assert journals["<contract-1@fabrikam.example>"]["seenBy"] == [ANN]


async def test_a_message_deleted_in_outlook_keeps_its_journal(stack: Stack) -> None:
    await stack.add_user(ANN)
    delivered = stack.deliver(ANN, subject="Evidence", internetMessageId="<evidence@fabrikam.example>")
    await stack.sync(ANN)
    stack.outlook("DELETE", f"/users/{ANN}/messages/{delivered['id']}")
    await stack.sync(ANN)
    assert "<evidence@fabrikam.example>" in stack.journals()


async def test_the_same_message_in_two_mailboxes_is_one_journal_linked_for_both(stack: Stack) -> None:
    dan = "dan@contoso.com"
    bob = stack.crm.add_person("bob@fabrikam.example", name="Bob", owner=ANN)
    eve = stack.crm.add_person("eve@northwind.example", name="Eve", owner=dan)
    await stack.add_user(ANN)
    await stack.add_user(dan, CrmOwner="crm-user-dan")
    shared = {
        "internetMessageId": "<offer-7@fabrikam.example>",
        "subject": "Offer",
        "to": [{"address": ANN}, {"address": dan}],
        "cc": [{"address": "eve@northwind.example"}],
    }
    stack.deliver(ANN, **shared)
    stack.deliver(dan, **shared)
    await stack.sync(ANN)
    await stack.sync(dan)
    await stack.sync(ANN)
    journals = stack.journals()
    assert list(journals) == ["<offer-7@fabrikam.example>"]
    journal = journals["<offer-7@fabrikam.example>"]
    assert sorted(journal["seenBy"]) == [ANN, dan]
    assert sorted(p["id"] for p in journal["people"]) == sorted([bob, eve])
    assert journal["owner"] == ANN


async def test_category_policy_captures_mail_when_the_category_is_added_later(stack: Stack) -> None:
    await stack.add_user(ANN, MailPolicy="category", MailCategory="CRM")
    delivered = stack.deliver(ANN, subject="Later", internetMessageId="<later@fabrikam.example>")
    await stack.sync(ANN)
    assert stack.journals() == {}
    explained = await stack.services.state.get_decision(ANN, "<later@fabrikam.example>")
    assert explained is not None and explained.outcome == "skipped" and "category" in explained.reason

    stack.outlook("PATCH", f"/users/{ANN}/messages/{delivered['id']}", {"categories": ["CRM"]})
    await stack.sync(ANN)
    assert list(stack.journals()) == ["<later@fabrikam.example>"]


async def test_what_is_skipped_and_what_is_journaled_and_why(stack: Stack) -> None:
    await stack.add_user(ANN, ExcludedDomains="family.example")
    stack.deliver(
        ANN, subject="Family", internetMessageId="<fam@x>", **{"from": {"address": "mum@family.example"}}
    )
    stack.deliver(
        ANN, subject="Lunch", internetMessageId="<int@x>", **{"from": {"address": "carol@contoso.com"}}
    )
    stack.deliver(ANN, subject="Secret", internetMessageId="<priv@x>", sensitivity="private")
    stack.deliver(
        ANN,
        subject="Script",
        internetMessageId="<html@x>",
        bodyHtml="<p>Dear Ann</p><script>steal()</script><style>p{}</style><p>Regards &amp; thanks</p>",
    )
    stack.deliver(ANN, subject="", internetMessageId="<bare@x>", cc=[{"address": "bob@fabrikam.example"}],
                  **{"from": {"address": "", "name": ""}})  # fmt: skip
    stack.deliver(ANN, subject="Grüße aus Łódź — 東京", internetMessageId="<utf@x>",
                  **{"from": {"address": "zoë@fabrikam.example", "name": "Zoë Ørsted"}},
                  bodyHtml="<p>Привет, ça va? ✓</p>")  # fmt: skip
    stack.deliver(
        ANN, subject="Huge", internetMessageId="<huge@x>", bodyHtml="<p>" + "lorem ipsum " * 450_000 + "</p>"
    )
    await stack.sync(ANN)

    journals = stack.journals()
    assert set(journals) == {"<html@x>", "<bare@x>", "<utf@x>", "<huge@x>"}
    assert journals["<html@x>"]["body"] == "Dear Ann\nRegards & thanks"
    assert journals["<bare@x>"]["subject"] == "(no subject)"
    assert journals["<utf@x>"]["subject"] == "Grüße aus Łódź — 東京"
    assert journals["<utf@x>"]["body"] == "Привет, ça va? ✓"
    huge = journals["<huge@x>"]["body"]
    assert len(huge) <= 20_000 and "truncated" in huge
    reasons = {
        key: (await stack.services.state.get_decision(ANN, key)) for key in ("<fam@x>", "<int@x>", "<priv@x>")
    }
    assert "ExcludedDomains" in reasons["<fam@x>"].reason  # type: ignore[union-attr]
    assert "internal" in reasons["<int@x>"].reason  # type: ignore[union-attr]
    assert "private" in reasons["<priv@x>"].reason  # type: ignore[union-attr]


async def test_an_expired_delta_link_starts_a_fresh_round_without_duplicates(stack: Stack) -> None:
    await stack.add_user(ANN, MailFolders="inbox")
    for n in range(5):
        stack.deliver(ANN, subject=f"Before {n}")
    await stack.sync(ANN)
    stack.graph.control.expire_delta_tokens(ANN)
    stack.deliver(ANN, subject="After expiry")
    outcomes = await stack.sync(ANN)
    assert [o.status for o in outcomes] == ["done"] and outcomes[0].stats["fresh_rounds"] == 1
    journals = stack.journals()
    assert len(journals) == 6 and sum(j["subject"] == "After expiry" for j in journals.values()) == 1


async def test_410_in_the_middle_of_a_round_resumes_without_duplicates(stack: Stack) -> None:
    await stack.add_user(ANN, MailFolders="inbox")
    for n in range(130):  # two pages of 100
        stack.deliver(ANN, subject=f"Bulk {n}")
    stack.graph.control.fault(410, count=1, pathContains="skiptoken", errorCode="SyncStateNotFound")
    outcomes = await stack.sync(ANN)
    # the first round, then a fresh one when the nextLink answered 410
    assert [o.status for o in outcomes] == ["done"] and outcomes[0].stats["fresh_rounds"] == 2
    assert len(stack.journals()) == 130


async def test_a_storm_of_429_and_503_is_ridden_out(stack: Stack) -> None:
    await stack.add_user(ANN, MailFolders="inbox")
    for n in range(30):
        stack.deliver(ANN, subject=f"Storm {n}")
    stack.graph.control.fault(429, count=3, pathContains="/delta", retryAfter="0.2")
    stack.graph.control.fault(429, count=2, pathContains="/delta")  # no Retry-After at all
    stack.graph.control.fault(503, count=2, pathContains="/delta", retryAfter="1")
    stack.graph.control.fault(
        429, count=1, pathContains="/delta", retryAfter="3600"
    )  # too long to wait in a job
    outcomes = await stack.sync(ANN)
    assert outcomes[-1].status == "done"
    assert any(o.status == "throttled" for o in outcomes)
    assert len(stack.journals()) == 30


async def test_a_crm_failure_for_one_item_does_not_block_the_others_and_is_retried(stack: Stack) -> None:
    await stack.add_user(ANN, MailFolders="inbox")
    for n in range(6):
        stack.deliver(ANN, subject=f"Item {n}", internetMessageId=f"<item-{n}@fabrikam.example>")
    stack.crm.fault(500, count=None, method="PUT", path_contains="item-3")
    outcomes = await stack.sync(ANN)
    assert [o.status for o in outcomes] == ["done"]
    assert sorted(stack.journals()) == sorted(f"<item-{n}@fabrikam.example>" for n in range(6) if n != 3)
    issues = await stack.services.state.list_issues(ANN)
    assert [i.item_key for i in issues] == ["<item-3@fabrikam.example>"] and "500" in issues[0].reason

    stack.crm.clear_faults()
    await stack.sync(ANN)
    assert len(stack.journals()) == 6
    assert await stack.services.state.list_issues(ANN) == []


async def test_a_folder_that_does_not_exist_is_a_readable_error_not_a_retry_loop(stack: Stack) -> None:
    await stack.add_user(ANN, MailFolders="inbox,Projekte")
    stack.deliver(ANN, subject="Still journaled")
    outcomes = await stack.sync(ANN)
    assert [o.status for o in outcomes] == ["done", "not-found"]
    row = await stack.services.state.get_user(ANN)
    assert row is not None and row.columns["State"] == "error" and "mail:Projekte" in row.columns["LastError"]
    assert len(stack.journals()) == 1


async def test_a_first_round_capped_by_graph_reads_the_rest_of_the_window_by_listing(stack: Stack) -> None:
    """Graph ends a `$filter`ed message delta round at 5,000 messages; here the cap is 50 on both sides."""
    from shared.sync.engine import Engine
    from shared.sync.mail import MailStream

    stack.graph.control.settings(filter_cap=50)
    try:
        await stack.add_user(ANN, MailFolders="inbox")
        for n in range(130):
            stack.deliver(ANN, subject=f"Window {n}", internetMessageId=f"<w-{n}@fabrikam.example>")
        services = stack.services
        stream = MailStream(
            services.state, services.crm, services.mail, org_domains=["contoso.com"], filter_cap=50
        )
        engine = Engine(services.state, services.queue, {"mail": stream})
        outcome = await engine.run_job(Job(ANN, "mail:inbox"))
        assert outcome.status == "done", outcome
        assert len(stack.journals()) == 130
        cursor = await services.state.get_cursor(ANN, "mail:inbox")
        assert cursor.link_kind == "delta" and cursor.mail.backfill is None
        stack.deliver(ANN, subject="After", internetMessageId="<after@fabrikam.example>")
        assert (await engine.run_job(Job(ANN, "mail:inbox"))).status == "done"
        assert len(stack.journals()) == 131
    finally:
        stack.graph.control.settings(filter_cap=5000)


async def test_a_message_that_reuses_a_journaled_message_id_never_rewrites_that_journal(stack: Stack) -> None:
    """The review's reproduction: a real mail to Ann is journaled; an outsider sends Bob a mail with the
    same Message-ID (anyone on a thread knows it). Ann's journal keeps its content, owner and readers;
    the outsider's mail is a journal of its own, and Bob's status counts the collision."""
    bob = "bob@contoso.com"
    zoe = stack.crm.add_person("zoe@fabrikam.example", name="Zoe", owner=ANN)
    await stack.add_user(ANN)
    await stack.add_user(bob, CrmOwner="crm-user-bob")
    key = "<deal-7@fabrikam.example>"
    real = {
        "subject": "Our offer",
        "bodyHtml": "<p>Price is 100</p>",
        "from": {"address": "zoe@fabrikam.example"},
    }
    stack.deliver(ANN, internetMessageId=key, **real)
    await stack.sync(ANN)
    before = stack.journals()[key]

    forged = {
        "subject": "Invoice: pay now",
        "bodyHtml": "<p>New IBAN</p>",
        "from": {"address": "mallory@evil.example"},
        "to": [{"address": bob}],
        "cc": [{"address": "zoe@fabrikam.example"}],
    }
    stack.deliver(bob, internetMessageId=key, **forged)
    assert {o.status for o in await stack.sync(bob)} == {"done"}
    journals = stack.journals()
    assert journals[key] == before  # subject, body, sender, owner and seenBy as Ann's capture wrote them
    assert journals[key]["seenBy"] == [ANN] and journals[key]["owner"] == ANN
    [own] = [k for k in journals if k != key]
    assert own.startswith(key + "#")
    assert journals[own]["subject"] == "Invoice: pay now" and journals[own]["seenBy"] == [bob]
    assert [p["id"] for p in journals[own]["people"]] == [zoe]
    row = await stack.services.state.get_user(bob)
    assert row is not None and row.columns["State"] == "ok" and row.columns["ItemsCollisions"] == 1
    assert "already taken by another message" in await admin.explain(stack.services.state, bob, key)

    writes = stack.crm.stats()["journalWrites"]
    await stack.sync(bob, fresh=True)  # seen again: nothing new, counted once
    assert stack.crm.stats()["journalWrites"] == writes
    row = await stack.services.state.get_user(bob)
    assert row is not None and row.columns["ItemsCollisions"] == 1


async def test_copies_with_a_banner_a_bcc_and_another_unique_body_are_one_journal(stack: Stack) -> None:
    """Legitimate copies of one message differ (a transport rule's banner, Bcc in the sender's copy only,
    a different new part): they still merge into one journal, whose content is the first capture's."""
    dan = "dan@contoso.com"
    await stack.add_user(ANN)
    await stack.add_user(dan, CrmOwner="crm-user-dan")
    key = "<offer-9@contoso.com>"
    sent = {
        "internetMessageId": key,
        "subject": "Offer",
        "sentDateTime": days_ago(1),
        "from": {"address": ANN},
        "to": [{"address": "bob@fabrikam.example"}],
    }
    stack.deliver(ANN, folder="sentitems", bodyHtml="<p>Price is 100</p>", bcc=[{"address": dan}], **sent)
    banner = "<p>[EXTERNAL] careful</p>"
    stack.deliver(dan, bodyHtml=banner + "<p>Price is 100</p>", uniqueBodyHtml=banner, **sent)
    await stack.sync(ANN)
    await stack.sync(dan)
    journals = stack.journals()
    assert list(journals) == [key]
    assert sorted(journals[key]["seenBy"]) == [ANN, dan]
    assert journals[key]["body"] == "Price is 100"  # Ann's capture, not Dan's bannered copy
