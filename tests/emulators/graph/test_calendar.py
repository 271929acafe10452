"""calendarView delta, recurring series, events CRUD through msgraph-sdk."""

from __future__ import annotations

import pytest
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import DeltaRequestBuilder
from msgraph.generated.users.item.events.item.instances.instances_request_builder import (
    InstancesRequestBuilder,
)

from tests.emulators.graph.conftest import cfg

S, E = "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"


def event(subject, start, end, **kw):
    return {
        "subject": subject,
        "start": {"dateTime": start, "timeZone": "UTC"},
        "end": {"dateTime": end, "timeZone": "UTC"},
        **kw,
    }


async def view_round(graph, upn, link=None, start=S, end=E, *prefer):
    b = graph.users.by_user_id(upn).calendar_view.delta
    if link:
        page = await b.with_url(link).get(request_configuration=cfg(*prefer))
    else:
        q = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
            start_date_time=start, end_date_time=end
        )
        page = await b.get(request_configuration=cfg(*prefer, query=q))
    items = []
    while True:
        items += page.value or []
        if page.odata_next_link:
            page = await b.with_url(page.odata_next_link).get(request_configuration=cfg(*prefer))
            continue
        return items, page.odata_delta_link


def removed(x):
    return (x.additional_data or {}).get("@removed")


async def test_window_is_required_and_capped(raw, upn):
    r = raw.get(f"/users/{upn}/calendarView/delta")
    assert r.status_code == 400 and "StartDateTime and EndDateTime" in r.json()["error"]["message"]
    r = raw.get(
        f"/users/{upn}/calendarView/delta",
        params={"startDateTime": "2020-01-01T00:00:00Z", "endDateTime": "2025-01-02T00:00:00Z"},
    )
    assert r.status_code == 400 and "1825" in r.json()["error"]["message"]


async def test_series_expanded_skeletal_occurrences_master_and_exception(graph, raw, upn):
    weekly = event(
        "Standup", "2026-03-02T09:00:00", "2026-03-02T09:30:00",
        recurrence={"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                    "range": {"type": "numbered", "startDate": "2026-03-02", "numberOfOccurrences": 10}},
        attendees=[{"emailAddress": {"address": "x@ext.test", "name": "X"}, "type": "required",
                    "status": {"response": "accepted", "time": "2026-02-01T00:00:00Z"}}],
        isOnlineMeeting=True, sensitivity="private",
    )  # fmt: skip
    master = raw.post(f"/users/{upn}/events", json=weekly).json()
    assert master["type"] == "seriesMaster"
    occ = raw.get(
        f"/users/{upn}/events/{master['id']}/instances", params={"startDateTime": S, "endDateTime": E}
    ).json()["value"]
    assert len(occ) == 5  # Mondays in March 2026
    assert len({o["iCalUId"] for o in occ}) == 5  # different per occurrence
    r = raw.patch(
        f"/users/{upn}/events/{occ[1]['id']}",
        json={
            "subject": "Standup (moved)",
            "start": {"dateTime": "2026-03-10T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-03-10T10:30:00", "timeZone": "UTC"},
        },
    )
    assert r.status_code == 200 and r.json()["type"] == "exception"
    assert raw.delete(f"/users/{upn}/events/{occ[2]['id']}").status_code == 204
    items, _ = await view_round(graph, upn)
    kinds = sorted(x.type.value for x in items)
    assert kinds == ["exception", "occurrence", "occurrence", "occurrence", "seriesMaster"]
    m = next(x for x in items if x.type.value == "seriesMaster")
    assert (
        m.subject == "Standup"
        and m.start.date_time.startswith("2026-03-02T09:00")
        and m.sensitivity.value == "private"
    )
    assert m.online_meeting.join_url and m.attendees[0].status.response.value == "accepted"
    skeletal = next(x for x in items if x.type.value == "occurrence")
    assert skeletal.subject is None and skeletal.series_master_id == master["id"] and skeletal.start
    exc = next(x for x in items if x.type.value == "exception")
    assert exc.subject == "Standup (moved)" and exc.original_start is not None


async def test_window_frozen_out_of_window_changes_removed(graph, raw, upn):
    inside = raw.post(
        f"/users/{upn}/events", json=event("In", "2026-03-05T10:00:00", "2026-03-05T11:00:00")
    ).json()
    items, link = await view_round(graph, upn)
    assert [x.id for x in items] == [inside["id"]]
    raw.patch(
        f"/users/{upn}/events/{inside['id']}",
        json={
            "start": {"dateTime": "2026-06-05T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-06-05T11:00:00", "timeZone": "UTC"},
        },
    )
    outside = raw.post(
        f"/users/{upn}/events", json=event("Out", "2026-07-05T10:00:00", "2026-07-05T11:00:00")
    ).json()
    link_with_other_window = link + "&startDateTime=2026-06-01T00:00:00Z&endDateTime=2026-08-01T00:00:00Z"
    items, _ = await view_round(graph, upn, link_with_other_window)
    assert {(x.id, removed(x)["reason"]) for x in items} == {
        (inside["id"], "deleted"),
        (outside["id"], "deleted"),
    }
    still = await graph.users.by_user_id(upn).events.by_event_id(inside["id"]).get()
    assert still.subject == "In"  # "removed" from the window, not deleted


async def test_all_day_event_is_floating_midnight_utc(graph, raw, upn):
    raw.post(
        f"/users/{upn}/events",
        json=event("Holiday", "2026-03-10T00:00:00", "2026-03-11T00:00:00", isAllDay=True),
    )
    items, _ = await view_round(graph, upn, None, S, E, 'outlook.timezone="Pacific Standard Time"')
    (x,) = items
    assert x.is_all_day and x.start.date_time.startswith("2026-03-10T00:00:00") and x.start.time_zone == "UTC"


async def test_outlook_timezone_renders_times(graph, raw, upn):
    raw.post(f"/users/{upn}/events", json=event("Call", "2026-03-10T17:00:00", "2026-03-10T18:00:00"))
    items, _ = await view_round(graph, upn, None, S, E, 'outlook.timezone="Pacific Standard Time"')
    assert (
        items[0].start.date_time.startswith("2026-03-10T10:00:00")
        and items[0].start.time_zone == "Pacific Standard Time"
    )


async def test_delete_and_cancel_are_reported_and_nothing_is_sent(graph, raw, emulator, upn):
    a = raw.post(f"/users/{upn}/events", json=event("A", "2026-03-05T10:00:00", "2026-03-05T11:00:00")).json()
    b = raw.post(
        f"/users/{upn}/events",
        json=event(
            "B",
            "2026-03-06T10:00:00",
            "2026-03-06T11:00:00",
            attendees=[{"emailAddress": {"address": "x@ext.test"}, "type": "required"}],
        ),
    ).json()
    _, link = await view_round(graph, upn)
    assert raw.delete(f"/users/{upn}/events/{a['id']}").status_code == 204
    assert raw.post(f"/users/{upn}/events/{b['id']}/cancel", json={"comment": "sorry"}).status_code == 204
    items, _ = await view_round(graph, upn, link)
    assert {x.id for x in items if removed(x)} == {a["id"], b["id"]}
    with pytest.raises(ODataError) as e:
        await graph.users.by_user_id(upn).events.by_event_id(a["id"]).get()
    assert e.value.response_status_code == 404
    routes = {r["route"] for r in emulator.control.requests() if r["user"] == upn and r["method"] != "GET"}
    assert not any("sendMail" in r or "forward" in r for r in routes)
    inbox = raw.get(f"/users/{upn}/mailFolders/inbox/messages").json()["value"]
    assert inbox == []  # no invitations or cancellations arrive anywhere


async def test_instances_via_sdk(graph, raw, upn):
    daily = event(
        "Daily",
        "2026-03-01T08:00:00",
        "2026-03-01T08:15:00",
        recurrence={
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "endDate", "startDate": "2026-03-01", "endDate": "2026-03-03"},
        },
    )
    m = raw.post(f"/users/{upn}/events", json=daily).json()
    q = InstancesRequestBuilder.InstancesRequestBuilderGetQueryParameters(start_date_time=S, end_date_time=E)
    got = (
        await graph.users.by_user_id(upn)
        .events.by_event_id(m["id"])
        .instances.get(request_configuration=cfg(query=q))
    )
    assert [i.start.date_time[:10] for i in got.value] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    one = await graph.users.by_user_id(upn).events.by_event_id(got.value[1].id).get()
    assert one.type.value == "occurrence" and one.subject == "Daily"


async def test_organizer_cancel_shows_as_cancelled_update(graph, raw, emulator, upn):
    boss = {"emailAddress": {"address": "boss@fabrikam.example", "name": "Boss"}}
    body = event("Their meeting", "2026-03-05T10:00:00", "2026-03-05T11:00:00", organizer=boss)
    ev = raw.post(f"/users/{upn}/events", json=body).json()
    assert ev["isOrganizer"] is False
    _, link = await view_round(graph, upn)
    emulator.control.organizer_cancel(upn, ev["id"])
    items, _ = await view_round(graph, upn, link)
    assert [(x.id, x.is_cancelled, x.subject) for x in items] == [(ev["id"], True, "Canceled: Their meeting")]
