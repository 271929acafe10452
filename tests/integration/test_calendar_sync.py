"""Meetings → CRM appointments on the real stack (Azurite, the Graph emulator over HTTP through
msgraph-sdk, the reference CRM over HTTP). Meetings are made the way the user's Outlook makes them:
through Graph (`Stack.outlook`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from shared.graph.calendar import GraphCalendar
from shared.graph.client import GraphCaller, build_graph_client
from shared.model import Job
from shared.state.memory import InMemoryJobQueue
from shared.sync.calendar import CalendarStream
from shared.sync.engine import Engine
from shared.sync.push import PushStream
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration
ANN = "ann@contoso.com"
BEN = "ben@contoso.com"
BOB = "bob@fabrikam.example"
TODAY = datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)
# Requests that make Exchange send something to attendees (invitations, updates, cancellations, replies).
NOTIFYING = ("/cancel", "/forward", "/accept", "/decline", "/tentativelyAccept", "/sendMail", "/send")


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Calendar:
    """The stack's adapters with a calendar stream whose clock the test moves, and whose check of
    series against their instances runs on every run (the product runs it at most hourly)."""

    stack: Stack
    clock: Clock
    engine: Engine
    stats: list[dict[str, int]]

    async def sync(self, upn: str, *, fresh: bool = False) -> dict[str, int]:
        """The calendar's job (its counters are returned), then the push's where the user has it on."""
        self.stats.clear()
        outcome = await self.engine.run_job(
            Job(upn, "calendar", "manual", fresh_round=fresh),
            progress=lambda _stream, stats: self.stats.append(dict(stats)),
        )
        assert outcome.status == "done", outcome
        config = await self.engine.load_user(upn)
        if config is not None and "push" in config.streams():
            assert (await self.engine.run_job(Job(upn, "push", "manual"))).status == "done"
        return self.stats[-1] if self.stats else {}

    def create(self, upn: str, **event: Any) -> dict[str, Any]:
        return dict(self.stack.outlook("POST", f"/users/{upn}/events", event))

    def patch(self, upn: str, event_id: str, **changes: Any) -> dict[str, Any]:
        return dict(self.stack.outlook("PATCH", f"/users/{upn}/events/{event_id}", changes))

    def delete(self, upn: str, event_id: str) -> None:
        self.stack.outlook("DELETE", f"/users/{upn}/events/{event_id}")

    def instances(self, upn: str, master_id: str) -> list[dict[str, Any]]:
        start, end = _z(TODAY - timedelta(days=7)), _z(TODAY + timedelta(days=180))
        path = f"/users/{upn}/events/{master_id}/instances?startDateTime={start}&endDateTime={end}"
        return list(self.stack.outlook("GET", path)["value"])

    def appointments(self) -> dict[str, dict[str, Any]]:
        return {a["key"]: a for a in self.stack.crm.appointments() if a.get("key")}

    def live(self) -> dict[str, dict[str, Any]]:
        return {k: a for k, a in self.appointments().items() if not a["cancelled"]}


def _z(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def at(days: int, hour: int = 10, tz: str = "UTC") -> dict[str, str]:
    """A dateTimeTimeZone: `hour` o'clock wall time in `tz`, `days` from today."""
    return {
        "dateTime": (TODAY + timedelta(days=days, hours=hour)).strftime("%Y-%m-%dT%H:%M:%S"),
        "timeZone": tz,
    }


def who(address: str, name: str = "") -> dict[str, Any]:
    return {"emailAddress": {"address": address, "name": name or address}, "type": "required"}


def utc(days: int, hour: int = 10) -> str:
    return (TODAY + timedelta(days=days, hours=hour)).isoformat()


@pytest.fixture
async def cal(stack: Stack) -> AsyncIterator[Calendar]:
    clock = Clock()
    settings = stack.services.settings
    assert settings is not None
    source = GraphCalendar(build_graph_client(settings), GraphCaller())
    stream = CalendarStream(
        stack.services.state, stack.services.crm, source, series_check_every=timedelta(0), clock=clock
    )
    push = PushStream(stack.services.state, stack.services.crm, source)
    engine = Engine(stack.services.state, InMemoryJobQueue(), {"calendar": stream, "push": push}, clock=clock)
    for upn in (ANN, BEN):
        await stack.add_user(upn, Mail=False, Calendar=True)
    stack.crm.add_person(BOB, name="Bob Buyer", owner=ANN)
    yield Calendar(stack, clock, engine, [])


async def test_a_single_meeting_is_one_appointment_and_follows_edits_and_deletion(cal: Calendar) -> None:
    made = cal.create(
        ANN, subject="Quote review", start=at(3, 9), end=at(3, 10), location={"displayName": "Room 4"},
        attendees=[who(BOB, "Bob Buyer"), who("nina@unknown.example")], isOnlineMeeting=True,
        body={"contentType": "html", "content": "<p>Bring the <b>price list</b></p>"},
    )  # fmt: skip
    await cal.sync(ANN)
    appointment = cal.appointments()[made["iCalUId"]]
    assert appointment["subject"] == "Quote review"
    assert appointment["start"] == utc(3, 9) and appointment["end"] == utc(3, 10)
    assert appointment["location"] == "Room 4"
    assert appointment["organizer"]["address"] == ANN
    assert [(a["address"]["address"], a["response"]) for a in appointment["attendees"]] == [
        (BOB, "none"), ("nina@unknown.example", "none"),
    ]  # fmt: skip
    assert appointment["onlineMeetingUrl"].startswith("https://teams.microsoft.com/")
    assert "price list" in appointment["body"] and "<b>" not in appointment["body"]
    assert appointment["owner"] == ANN and appointment["seenBy"] == [ANN]
    assert [p["email"] for p in appointment["people"]] == [BOB]  # unknown attendees stay as text

    cal.patch(ANN, made["id"], subject="Quote review (moved)", start=at(4, 14), end=at(4, 15),
              location={"displayName": "Room 7"}, attendees=[who(BOB)])  # fmt: skip
    await cal.sync(ANN)
    appointment = cal.appointments()[made["iCalUId"]]
    assert (appointment["subject"], appointment["start"], appointment["location"]) == (
        "Quote review (moved)", utc(4, 14), "Room 7",
    )  # fmt: skip
    assert [a["address"]["address"] for a in appointment["attendees"]] == [BOB]

    cal.delete(ANN, made["id"])
    await cal.sync(ANN)
    assert cal.appointments()[made["iCalUId"]]["cancelled"] is True
    assert len(cal.appointments()) == 1


async def test_a_series_becomes_one_appointment_per_occurrence_with_exceptions_and_cancellations(
    cal: Calendar,
) -> None:
    master = cal.create(
        ANN, subject="Weekly sync", start=at(1, 8), end=at(1, 9), attendees=[who(BOB)],
        recurrence={"pattern": {"type": "daily", "interval": 7},
                    "range": {"type": "numbered", "numberOfOccurrences": 4}},
    )  # fmt: skip
    await cal.sync(ANN)
    keys = [f"{master['iCalUId']}|{_z(TODAY + timedelta(days=d, hours=8))}" for d in (1, 8, 15, 22)]
    assert sorted(cal.appointments()) == sorted(keys)
    assert {a["subject"] for a in cal.appointments().values()} == {"Weekly sync"}  # hydrated
    assert {a["seriesKey"] for a in cal.appointments().values()} == {master["iCalUId"]}

    occurrences = {o["originalStart"][:10]: o["id"] for o in cal.instances(ANN, master["id"])}
    second, third = (occurrences[(TODAY + timedelta(days=d)).date().isoformat()] for d in (8, 15))
    cal.patch(ANN, second, subject="Weekly sync (long one)", start=at(8, 13), end=at(8, 15))
    cal.delete(ANN, third)  # Graph's delta reports nothing for a deleted occurrence
    await cal.sync(ANN)
    after = cal.appointments()
    assert sorted(after) == sorted(keys)  # the exception keeps its key (the original start)
    assert (after[keys[1]]["subject"], after[keys[1]]["start"]) == ("Weekly sync (long one)", utc(8, 13))
    assert [k for k in keys if after[k]["cancelled"]] == [keys[2]]
    assert after[keys[0]]["subject"] == "Weekly sync" and not after[keys[3]]["cancelled"]

    cal.patch(ANN, second, location={"displayName": "Canteen"})  # the exception follows its own changes
    await cal.sync(ANN)
    again = cal.appointments()[keys[1]]
    assert (again["subject"], again["start"], again["location"]) == (
        "Weekly sync (long one)",
        utc(8, 13),
        "Canteen",
    )


async def test_a_rescheduled_series_leaves_no_stale_occurrence(cal: Calendar) -> None:
    master = cal.create(
        ANN, subject="Stand-up", start=at(2, 9), end=at(2, 10), attendees=[who(BOB)],
        recurrence={"pattern": {"type": "daily", "interval": 1},
                    "range": {"type": "numbered", "numberOfOccurrences": 3}},
    )  # fmt: skip
    await cal.sync(ANN)
    assert len(cal.live()) == 3
    cal.patch(ANN, master["id"], start=at(2, 15), end=at(2, 16))
    await cal.sync(ANN)
    live = cal.live()
    assert sorted(a["start"] for a in live.values()) == [utc(d, 15) for d in (2, 3, 4)]
    assert len(cal.appointments()) == 6  # the three old keys are cancelled, none is live


async def test_all_day_cross_time_zone_and_private_meetings(cal: Calendar) -> None:
    day = (TODAY + timedelta(days=5)).date()
    all_day = cal.create(
        ANN, subject="Trade fair", isAllDay=True, attendees=[who(BOB)],
        start={"dateTime": f"{day.isoformat()}T00:00:00", "timeZone": "Pacific Standard Time"},
        end={"dateTime": f"{(day + timedelta(days=2)).isoformat()}T00:00:00",
             "timeZone": "Pacific Standard Time"},
    )  # fmt: skip
    tokyo = cal.create(ANN, subject="Call with Tokyo", start=at(6, 9, "Tokyo Standard Time"),
                       end=at(6, 10, "Tokyo Standard Time"), attendees=[who(BOB)])  # fmt: skip
    private = cal.create(ANN, subject="Doctor", start=at(6, 12), end=at(6, 13), sensitivity="private")
    confidential = cal.create(ANN, subject="Review", start=at(7, 12), end=at(7, 13),
                              sensitivity="confidential", attendees=[who(BOB)])  # fmt: skip
    await cal.sync(ANN)
    found = cal.appointments()
    fair = found[all_day["iCalUId"]]
    assert fair["isAllDay"] is True
    assert (fair["startDate"], fair["endDate"]) == (day.isoformat(), (day + timedelta(days=2)).isoformat())
    assert fair["start"].startswith(day.isoformat())  # not shifted by Pacific time
    assert found[tokyo["iCalUId"]]["start"] == utc(6, 0)  # 09:00 in Tokyo is 00:00 UTC
    assert private["iCalUId"] not in found and confidential["iCalUId"] not in found
    assert len(found) == 2


async def test_a_meeting_between_two_synced_users_is_one_appointment(cal: Calendar) -> None:
    made = cal.create(
        ANN, subject="Joint pitch", start=at(2, 11), end=at(2, 12), attendees=[who(BEN), who(BOB)]
    )
    await cal.sync(ANN)
    await cal.sync(BEN)
    found = cal.appointments()
    assert list(found) == [made["iCalUId"]]
    assert found[made["iCalUId"]]["seenBy"] == [ANN, BEN]
    assert found[made["iCalUId"]]["owner"] == ANN  # the first calendar that captured it
    assert [p["email"] for p in found[made["iCalUId"]]["people"]] == [BOB]

    cal.delete(ANN, made["id"])  # the organizer cancels: Ben's copy is marked cancelled
    await cal.sync(BEN)
    await cal.sync(ANN)
    assert cal.appointments()[made["iCalUId"]]["cancelled"] is True
    assert len(cal.appointments()) == 1


async def test_an_attendee_removing_their_copy_does_not_cancel_the_meeting(cal: Calendar) -> None:
    made = cal.create(
        ANN, subject="Joint pitch", start=at(2, 11), end=at(2, 12), attendees=[who(BEN), who(BOB)]
    )
    await cal.sync(ANN)
    await cal.sync(BEN)
    copy = next(
        e
        for e in cal.stack.outlook("GET", f"/users/{BEN}/events?$top=100")["value"]
        if e["iCalUId"] == made["iCalUId"]
    )
    cal.delete(BEN, copy["id"])
    await cal.sync(BEN)
    appointment = cal.appointments()[made["iCalUId"]]
    assert appointment["cancelled"] is False and appointment["seenBy"] == [ANN]


async def test_moving_a_meeting_out_of_the_window_does_not_cancel_it(cal: Calendar) -> None:
    made = cal.create(ANN, subject="Kick-off", start=at(3), end=at(3, 11), attendees=[who(BOB)])
    await cal.sync(ANN)
    cal.patch(ANN, made["id"], start=at(400), end=at(400, 11))  # beyond CalendarFutureDays (180)
    stats = await cal.sync(ANN)
    appointment = cal.appointments()[made["iCalUId"]]
    assert appointment["cancelled"] is False
    assert appointment["start"] == utc(400)  # confirmed by a GET, with its new time
    assert stats["kept"] == 1


async def test_a_window_roll_over_creates_no_duplicate(cal: Calendar) -> None:
    cal.create(ANN, subject="Near", start=at(1), end=at(1, 11), attendees=[who(BOB)])
    # every 40 days: no occurrence within a day of the window's edge (today + 180, then + 182), so the
    # test holds when the UTC date turns while it runs (`at` counts from the date the module was loaded)
    series = {
        "pattern": {"type": "daily", "interval": 40},
        "range": {"type": "numbered", "numberOfOccurrences": 8},
    }
    cal.create(ANN, subject="Series", start=at(2), end=at(2, 11), attendees=[who(BOB)], recurrence=series)
    await cal.sync(ANN)
    before = cal.appointments()
    cursor = await cal.stack.services.state.get_cursor(ANN, "calendar")
    cal.clock.now += timedelta(days=2)
    stats = await cal.sync(ANN)
    moved = await cal.stack.services.state.get_cursor(ANN, "calendar")
    assert stats["fresh_rounds"] == 1 and stats["captured"] == 0
    assert moved.window_end is not None and cursor.window_end is not None
    assert moved.window_end - cursor.window_end >= timedelta(days=2)
    assert cal.appointments() == before


async def test_push_from_the_crm_creates_events_without_attendees_and_without_echo(cal: Calendar) -> None:
    await cal.stack.services.state.put_config(ANN, {"Enabled": True, "Mail": False, "Calendar": True,
                                                    "CalendarPushFromCrm": True})  # fmt: skip
    from_outlook = cal.create(ANN, subject="From Outlook", start=at(1), end=at(1, 11), attendees=[who(BOB)])
    crm_id = cal.stack.crm.create_appointment(
        owner=ANN,
        subject="Site visit",
        start=utc(2, 13),
        end=utc(2, 14),
        location="Plant 2",
        body="Check the line",
    )
    mark = len(cal.stack.graph.control.requests())
    await cal.sync(ANN)
    events = [
        e
        for e in cal.stack.outlook("GET", f"/users/{ANN}/events?$top=100")["value"]
        if e["subject"] == "Site visit"
    ]
    assert len(events) == 1
    assert events[0]["attendees"] == [] and events[0]["start"]["dateTime"].startswith(utc(2, 13)[:19])
    assert events[0]["location"]["displayName"] == "Plant 2"

    await cal.sync(ANN)  # the pushed event comes back through delta: it is not captured again
    assert len(cal.stack.crm.appointments()) == 2
    assert list(cal.appointments()) == [from_outlook["iCalUId"]]

    cal.stack.crm.update_appointment(crm_id, subject="Site visit (2 h)", end=utc(2, 15))
    await cal.sync(ANN)
    await cal.sync(ANN)
    events = [
        e
        for e in cal.stack.outlook("GET", f"/users/{ANN}/events?$top=100")["value"]
        if e["subject"].startswith("Site")
    ]
    assert [e["subject"] for e in events] == ["Site visit (2 h)"]
    assert events[0]["end"]["dateTime"].startswith(utc(2, 15)[:19])
    assert len(cal.stack.crm.appointments()) == 2

    ours = cal.stack.graph.control.requests()[mark:]
    assert not [r for r in ours if r["route"].endswith(NOTIFYING)]
    writes = {(r["method"], r["route"]) for r in ours if r["method"] != "GET"}
    assert writes <= {("POST", "/users/{user}/events"), ("PATCH", "/users/{user}/events/{event}")}


async def test_no_request_of_the_sync_would_notify_attendees(cal: Calendar) -> None:
    await cal.stack.services.state.put_config(ANN, {"CalendarPushFromCrm": True})
    made = cal.create(ANN, subject="Board", start=at(2), end=at(2, 11), attendees=[who(BEN), who(BOB)])
    series = cal.create(ANN, subject="Daily", start=at(1, 8), end=at(1, 9), attendees=[who(BOB)],
                        recurrence={"pattern": {"type": "daily", "interval": 1},
                                    "range": {"type": "numbered", "numberOfOccurrences": 3}})  # fmt: skip
    crm_id = cal.stack.crm.create_appointment(owner=ANN, subject="Visit", start=utc(3, 9), end=utc(3, 10))
    mark = len(cal.stack.graph.control.requests())
    await cal.sync(ANN)
    await cal.sync(BEN)
    cal.stack.outlook("DELETE", f"/users/{ANN}/events/{made['id']}")
    cal.stack.outlook("DELETE", f"/users/{ANN}/events/{series['id']}")
    cal.stack.crm.update_appointment(crm_id, cancelled=True)
    await cal.sync(ANN)
    await cal.sync(BEN)
    user_requests = [r for r in cal.stack.graph.control.requests()[mark:] if r["method"] == "DELETE"]
    assert len(user_requests) == 3  # the two Outlook deletions above, and the cancelled push
    ours = cal.stack.graph.control.requests()[mark:]
    assert not [r for r in ours if r["route"].endswith(NOTIFYING)]
    assert cal.appointments()[made["iCalUId"]]["cancelled"] is True


async def test_with_calendar_delete_in_crm_a_deleted_meeting_is_deleted(cal: Calendar) -> None:
    await cal.stack.services.state.put_config(ANN, {"CalendarDeleteInCrm": True})
    kept = cal.create(ANN, subject="Kept", start=at(2), end=at(2, 11), attendees=[who(BOB)])
    gone = cal.create(ANN, subject="Gone", start=at(3), end=at(3, 11), attendees=[who(BOB)])
    await cal.sync(ANN)
    assert sorted(cal.appointments()) == sorted([kept["iCalUId"], gone["iCalUId"]])
    cal.delete(ANN, gone["id"])
    await cal.sync(ANN)
    assert list(cal.appointments()) == [kept["iCalUId"]]


async def test_an_expired_delta_token_loses_no_deletion(cal: Calendar) -> None:
    kept = cal.create(ANN, subject="Kept", start=at(2), end=at(2, 11), attendees=[who(BOB)])
    gone = cal.create(ANN, subject="Gone", start=at(3), end=at(3, 11), attendees=[who(BOB)])
    await cal.sync(ANN)
    cal.delete(ANN, gone["id"])
    assert cal.stack.graph.control.expire_delta_tokens(ANN) >= 1  # 410: the gap's deletions are lost
    stats = await cal.sync(ANN)
    assert stats["fresh_rounds"] == 1
    found = cal.appointments()
    assert (found[kept["iCalUId"]]["cancelled"], found[gone["iCalUId"]]["cancelled"]) == (False, True)


async def test_the_wired_engine_runs_the_calendar_stream(stack: Stack) -> None:
    await stack.add_user(ANN, Mail=False, Calendar=True)
    made = stack.outlook(
        "POST", f"/users/{ANN}/events", {"subject": "Demo", "start": at(1), "end": at(1, 11)}
    )
    outcomes = await stack.sync(ANN)
    assert [o.status for o in outcomes] == ["done"]
    assert [a["key"] for a in stack.crm.appointments()] == [made["iCalUId"]]


@pytest.mark.parametrize(
    ("policy", "captured"),
    [("all", ["Internal", "Tagged", "With Bob"]), ("category", ["Tagged"]), ("crm-attendee", ["With Bob"])],
)
async def test_calendar_policy_selects_meetings(cal: Calendar, policy: str, captured: list[str]) -> None:
    await cal.stack.services.state.put_config(ANN, {"CalendarPolicy": policy})
    cal.create(ANN, subject="Internal", start=at(1), end=at(1, 11), attendees=[who("carl@contoso.com")])
    cal.create(ANN, subject="Tagged", start=at(2), end=at(2, 11), categories=["crm"],
               attendees=[who("nina@unknown.example")])  # fmt: skip
    cal.create(ANN, subject="With Bob", start=at(3), end=at(3, 11), attendees=[who(BOB)])
    await cal.sync(ANN)
    assert sorted(a["subject"] for a in cal.appointments().values()) == captured


async def test_an_invitation_reusing_another_organizer_s_ical_uid_never_rewrites_that_appointment(
    cal: Calendar,
) -> None:
    """Anyone can send an invitation whose iCalUId is a known meeting's: it is another meeting (another
    organizer), captured under a key of its own; the real organizer's changes still reach the first."""
    made = cal.create(ANN, subject="Kick-off", start=at(2), end=at(2, 11), attendees=[who(BOB)])
    await cal.sync(ANN)
    before = cal.appointments()[made["iCalUId"]]
    invitation = {
        "iCalUId": made["iCalUId"],
        "subject": "Moved: join here",
        "start": at(2),
        "end": at(2, 11),
        "organizer": who("mallory@evil.example"),
        "attendees": [who(BEN)],
    }
    forged = cal.stack.graph.control.invitation(BEN, invitation)
    stats = await cal.sync(BEN)
    found = cal.appointments()
    assert found[made["iCalUId"]] == before
    [own] = [k for k in found if k != made["iCalUId"]]
    assert own.startswith(made["iCalUId"] + "#") and found[own]["subject"] == "Moved: join here"
    assert found[own]["seenBy"] == [BEN] and stats["collisions"] == 1

    cal.delete(BEN, forged["id"])  # Ben deletes the forged one: only its own appointment goes
    cal.patch(ANN, made["id"], subject="Kick-off (room 4)")
    await cal.sync(BEN)
    await cal.sync(ANN)
    found = cal.appointments()
    assert found[own]["cancelled"] is True
    assert found[made["iCalUId"]]["cancelled"] is False
    assert found[made["iCalUId"]]["subject"] == "Kick-off (room 4)"
