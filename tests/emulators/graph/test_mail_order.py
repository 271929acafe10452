"""Message delta with `$orderby=receivedDateTime desc` (a capped first round holds the newest messages)
and listing messages with a received-date range and `$orderby` (docs/graph-behaviour.md §1.2; Exchange's
InefficientFilter rule for `$filter` with `$orderby` on a listing)."""

from __future__ import annotations

import pytest

from tests.emulators.graph.conftest import mail_from
from tests.emulators.graph.test_mail import delta_builder, run_round

DAYS = [f"2026-01-{d:02d}T10:00:00Z" for d in range(1, 10)]


def deliver_days(emulator, upn, days=DAYS, subject="d"):
    # delivered out of order, so the change log's order is not the received order either way
    shuffled = sorted(enumerate(days), key=lambda pair: (pair[0] * 5) % len(days))
    for n, when in shuffled:
        emulator.control.deliver(upn, mail_from("a@ext.test", f"{subject}{n}", receivedDateTime=when))


async def test_an_ordered_round_comes_newest_first(graph, emulator, upn):
    deliver_days(emulator, upn)
    emulator.control.deliver(upn, mail_from("a@ext.test", "x", receivedDateTime="2026-01-05T10:00:00Z"))
    items, pages, link = await run_round(
        delta_builder(graph, upn), None, "odata.maxpagesize=4",
        filter="receivedDateTime ge 2025-01-01T00:00:00Z", orderby=["receivedDateTime desc"],
    )  # fmt: skip
    received = [i["m"].received_date_time for i in items]
    assert received == sorted(received, reverse=True) and len(items) == 10 and link
    assert pages == 3


async def test_a_capped_ordered_round_returns_the_newest_and_later_arrivals_come_next_round(
    graph, emulator, raw, upn
):
    emulator.control.settings(filter_cap=4)
    try:
        deliver_days(emulator, upn)
        b = delta_builder(graph, upn)
        from msgraph.generated.users.item.mail_folders.item.messages.delta.delta_request_builder import (
            DeltaRequestBuilder,
        )

        from tests.emulators.graph.conftest import cfg

        q = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
            filter="receivedDateTime ge 2025-01-01T00:00:00Z", orderby=["receivedDateTime desc"]
        )
        page = await b.get(request_configuration=cfg("odata.maxpagesize=3", query=q))
        first = [m.subject for m in page.value]
        # a message arrives while the capped round runs: it is not in the round, but in the next one
        emulator.control.deliver(
            upn, mail_from("a@ext.test", "during", receivedDateTime="2026-02-01T10:00:00Z")
        )
        items, _, link = await run_round(b, page.odata_next_link, "odata.maxpagesize=3")
        subjects = first + [i["subject"] for i in items]
        assert subjects == ["d8", "d7", "d6", "d5"]  # the newest four, newest first
        later, _, _ = await run_round(b, link)
        assert [i["subject"] for i in later] == ["during"]
    finally:
        emulator.control.settings(filter_cap=5000)


async def test_orderby_on_delta_takes_only_received_desc(raw, upn):
    r = raw.get(f"/users/{upn}/mailFolders/inbox/messages/delta", params={"$orderby": "subject desc"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "ErrorInvalidUrlQuery"


async def test_a_listing_takes_a_received_range_with_le_inclusive_newest_first(emulator, raw, upn):
    deliver_days(emulator, upn)
    emulator.control.deliver(upn, mail_from("a@ext.test", "same", receivedDateTime=DAYS[5]))
    r = raw.get(
        f"/users/{upn}/mailFolders/inbox/messages",
        params={
            "$filter": f"receivedDateTime ge {DAYS[2]} and receivedDateTime le {DAYS[5]}",
            "$orderby": "receivedDateTime desc",
            "$top": "2",
            "$select": "subject,receivedDateTime",
        },
    )
    assert r.status_code == 200
    body = r.json()
    subjects = [m["subject"] for m in body["value"]]
    while "@odata.nextLink" in body:
        body = raw.get(body["@odata.nextLink"]).json()
        subjects += [m["subject"] for m in body["value"]]
    assert sorted(subjects[:2]) == ["d5", "same"] and subjects[2:] == ["d4", "d3", "d2"]


@pytest.mark.parametrize(
    ("filter_", "orderby"),
    [
        ("isRead eq false and receivedDateTime ge 2026-01-01T00:00:00Z", "receivedDateTime desc"),
        ("receivedDateTime ge 2026-01-01T00:00:00Z", "subject"),
    ],
)
async def test_a_listing_orderby_not_leading_the_filter_is_inefficient(raw, upn, filter_, orderby):
    r = raw.get(f"/users/{upn}/messages", params={"$filter": filter_, "$orderby": orderby})
    assert r.status_code == 400 and r.json()["error"]["code"] == "InefficientFilter"


async def test_a_listing_orderby_alone_sorts(emulator, raw, upn):
    deliver_days(emulator, upn, DAYS[:3])
    r = raw.get(f"/users/{upn}/mailFolders/inbox/messages", params={"$orderby": "receivedDateTime asc"})
    assert [m["subject"] for m in r.json()["value"]] == ["d0", "d1", "d2"]
