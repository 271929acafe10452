"""Change tracking, with requests shaped as "Use change tracking to synchronize data with external
systems" shows them: `Prefer: odata.track-changes`, the deltaLink on the last page, changed rows
whole, `$deletedEntity` entries (not Graph's `@removed`), and an expired token's `0x80044352`."""

from __future__ import annotations

from typing import Any

import httpx

from emulators.dataverse.launcher import DataverseStandIn
from tests.emulators.dataverse.conftest import error_code

TRACK = {"Prefer": "odata.track-changes,odata.maxpagesize=2"}


def read_all(web: httpx.Client, url: str, headers: dict[str, str]) -> tuple[list[dict[str, Any]], str, int]:
    """Every page of a tracked read: rows, the deltaLink, pages."""
    rows: list[dict[str, Any]] = []
    pages = 0
    while True:
        response = web.get(url, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        rows += body["value"]
        if "@odata.nextLink" in body:
            assert "@odata.deltaLink" not in body
            url = body["@odata.nextLink"]
            continue
        return rows, body["@odata.deltaLink"], pages


def test_a_tracked_read_answers_every_row_and_the_last_page_carries_the_delta_link(
    web: httpx.Client, dv: DataverseStandIn
) -> None:
    ids = [dv.add_contact(f"p{n}@example.test", name=f"P {n}") for n in range(5)]

    rows, delta, pages = read_all(web, "contacts?$select=fullname,emailaddress1", TRACK)

    assert pages == 3 and sorted(r["contactid"] for r in rows) == sorted(ids)
    assert "$deltatoken=" in delta and "$select=fullname,emailaddress1" in delta
    token = delta.split("$deltatoken=", 1)[1]
    assert "%21" in token  # `<version>!<date>`, URL-encoded as the documentation shows it


def test_a_delta_read_answers_changed_rows_whole_then_deletions_and_a_new_link(
    web: httpx.Client, dv: DataverseStandIn
) -> None:
    kept, edited, gone = (
        dv.add_contact(f"{n}@example.test", name=n.title()) for n in ("kept", "edited", "gone")
    )
    _, delta, _ = read_all(web, "contacts?$select=fullname,jobtitle", TRACK)

    quiet, delta, _ = read_all(web, delta, TRACK)
    assert quiet == []

    dv.update("contacts", edited, {"jobtitle": "CFO"})
    dv.update("contacts", edited, {"jobtitle": "CEO"})  # twice: reported once, as it is now
    dv.delete("contacts", gone)
    fleeting = dv.add_contact("fleeting@example.test", name="Fleeting")
    dv.delete("contacts", fleeting)
    added = dv.add_contact("added@example.test", name="Added")
    changes, delta, _ = read_all(web, delta, TRACK)

    live = [c for c in changes if "contactid" in c]
    deleted = [c for c in changes if "reason" in c]
    assert [(c["contactid"], c["fullname"], c["jobtitle"]) for c in live] == [
        (edited, "Edited", "CEO"),
        (added, "Added", None),
    ]
    assert sorted(c["id"] for c in deleted) == sorted([gone, fleeting])  # created then deleted: deleted
    assert all(c["@odata.context"].endswith("contacts/$deletedEntity") for c in deleted)
    assert changes.index(deleted[0]) > changes.index(live[-1]) and kept not in str(changes)
    assert read_all(web, delta, TRACK)[0] == []


def test_tracked_reads_refuse_filters_untracked_tables_and_expired_tokens(
    web: httpx.Client, dv: DataverseStandIn
) -> None:
    filtered = web.get("contacts?$select=fullname&$filter=lastname eq 'x'", headers=TRACK)
    untracked = web.get("activityparties?$select=addressused", headers=TRACK)
    _, delta, _ = read_all(web, "contacts?$select=fullname", TRACK)

    dv.expire_tokens()
    expired = web.get(delta, headers=TRACK)

    assert filtered.status_code == 400 and "isn't supported when Change Tracking is enabled" in filtered.text
    assert (untracked.status_code, error_code(untracked)) == (400, "0x80072491")
    assert (expired.status_code, error_code(expired)) == (400, "0x80044352")
    _, fresh, _ = read_all(web, "contacts?$select=fullname", TRACK)  # a full read starts over
    assert read_all(web, fresh, TRACK)[0] == []
