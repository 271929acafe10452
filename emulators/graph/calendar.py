"""Events: create / update / cancel / delete (nothing is ever sent), GET by id (series master, occurrence,
exception), instances, calendarView and calendarView/delta with the window frozen into the token."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from emulators.graph import delta
from emulators.graph.odata import context, list_page
from emulators.graph.protocol import GraphError, Request, Response, iso, parse_dt, utcnow
from emulators.graph.recurrence import occurrence_dates, parse_local, render_local, zone
from emulators.graph.routing import Ctx, Router
from emulators.graph.store import Change, Event, Tenant, User

EVENT_TYPE = "#microsoft.graph.event"
MAX_DAYS = 1825
READ_ONLY = {
    "id",
    "type",
    "seriesMasterId",
    "iCalUId",
    "changeKey",
    "createdDateTime",
    "lastModifiedDateTime",
    "isCancelled",
    "isOrganizer",
    "originalStart",
    "webLink",
}
SEP = "_OID"


@dataclass
class Instance:
    """One concrete event in time: a single instance, or an occurrence/exception of a series."""

    event: Event
    kind: str  # singleInstance / occurrence / exception
    start: datetime
    end: datetime
    day: str = ""  # occurrence date (YYYY-MM-DD) for series members

    @property
    def id(self) -> str:
        return self.event.id if not self.day else f"{self.event.id}{SEP}{self.day.replace('-', '')}"


def _times(data: dict[str, Any]) -> tuple[datetime, datetime]:
    if "start" not in data or "end" not in data:
        raise GraphError(400, "ErrorInvalidRequest", "start and end are required.")
    if data.get("isAllDay"):  # floating midnight-to-midnight, compared as UTC
        s = datetime.fromisoformat(str(data["start"]["dateTime"])[:10]).replace(tzinfo=UTC)
        e = datetime.fromisoformat(str(data["end"]["dateTime"])[:10]).replace(tzinfo=UTC)
        return s, e
    return parse_local(data["start"]), parse_local(data["end"])


def _occurrence_start(ev: Event, d: date) -> datetime:
    start, _ = _times(ev.data)
    if ev.data.get("isAllDay"):
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    rec = ev.data.get("recurrence") or {}
    tz = zone((rec.get("range") or {}).get("recurrenceTimeZone") or ev.data["start"].get("timeZone"))
    wall = start.astimezone(tz).time()
    return datetime.combine(d, wall).replace(tzinfo=tz).astimezone(UTC)


def instances(ev: Event, until: datetime) -> list[Instance]:
    """Every instance of the event that starts before `until` (cancelled occurrences excluded)."""
    start, end = _times(ev.data)
    rec = ev.data.get("recurrence")
    if not rec:
        return [Instance(ev, "singleInstance", start, end)]
    duration = end - start
    out = []
    for d in occurrence_dates(rec, until.date() + timedelta(days=1)):
        day = d.isoformat()
        if day in ev.cancelled:
            continue
        s = _occurrence_start(ev, d)
        if day in ev.exceptions:
            over = ev.exceptions[day]
            s2, e2 = _times({**ev.data, **over}) if "start" in over else (s, s + duration)
            out.append(Instance(ev, "exception", s2, e2, day))
        else:
            out.append(Instance(ev, "occurrence", s, s + duration, day))
    return out


def series_span(ev: Event) -> tuple[datetime, datetime]:
    """A series master's start/end are those of its first occurrence."""
    start, end = _times(ev.data)
    first = next(occurrence_dates(ev.data["recurrence"], start.date() + timedelta(days=3700)), None)
    if first is None:
        return start, end
    s = _occurrence_start(ev, first)
    return s, s + (end - start)


def in_window(ev: Event, ws: datetime, we: datetime) -> list[Instance]:
    return [i for i in instances(ev, we) if i.start < we and i.end > ws]


# rendering ------------------------------------------------------------------------------------------------
def _dt(value: datetime, all_day: bool, tz: str) -> dict[str, str]:
    if all_day:
        return {"dateTime": value.strftime("%Y-%m-%dT00:00:00.0000000"), "timeZone": "UTC"}
    return render_local(value, tz)


def _ical(ev: Event, day: str) -> str:
    if not day:
        return ev.ical_uid
    return ev.ical_uid[:-16] + hashlib.sha256(f"{ev.ical_uid}{day}".encode()).hexdigest()[:16].upper()


def render(inst: Instance, user: User, tz: str, skeletal: bool = False) -> dict[str, Any]:
    ev = inst.event
    all_day = bool(ev.data.get("isAllDay"))
    ck = ev.exception_keys.get(inst.day, ev.change_key) if inst.kind == "exception" else ev.change_key
    head: dict[str, Any] = {"@odata.type": EVENT_TYPE, "@odata.etag": f'W/"{ck}"', "id": inst.id}
    if inst.kind == "occurrence" and skeletal:
        return {
            **head,
            "type": "occurrence",
            "seriesMasterId": ev.id,
            "start": _dt(inst.start, all_day, tz),
            "end": _dt(inst.end, all_day, tz),
        }
    data = {**ev.data, **(ev.exceptions.get(inst.day, {}) if inst.kind == "exception" else {})}
    return {**head, **_full(ev, data, user, tz, inst.kind, inst.start, inst.end, inst.day, ck)}


def render_master(ev: Event, user: User, tz: str) -> dict[str, Any]:
    s, e = series_span(ev)
    head = {"@odata.type": EVENT_TYPE, "@odata.etag": f'W/"{ev.change_key}"', "id": ev.id}
    out = {**head, **_full(ev, ev.data, user, tz, "seriesMaster", s, e, "", ev.change_key)}
    out["cancelledOccurrences"] = [f"OID.{ev.id}.{d}" for d in sorted(ev.cancelled)]
    return out


def _full(
    ev: Event,
    data: dict[str, Any],
    user: User,
    tz: str,
    kind: str,
    s: datetime,
    e: datetime,
    day: str,
    ck: str,
) -> dict[str, Any]:
    all_day = bool(data.get("isAllDay"))
    organizer = data.get("organizer") or {"emailAddress": {"name": user.display_name, "address": user.upn}}
    is_org = organizer["emailAddress"].get("address", "").lower() == user.upn.lower()
    body = data.get("body") or {"contentType": "html", "content": ""}
    out: dict[str, Any] = {
        "createdDateTime": iso(ev.created),
        "lastModifiedDateTime": iso(ev.modified),
        "changeKey": ck,
        "categories": data.get("categories", []),
        "transactionId": data.get("transactionId"),
        "originalStartTimeZone": ev.data.get("start", {}).get("timeZone", "UTC"),
        "originalEndTimeZone": ev.data.get("end", {}).get("timeZone", "UTC"),
        "iCalUId": _ical(ev, day),
        "reminderMinutesBeforeStart": data.get("reminderMinutesBeforeStart", 15),
        "isReminderOn": data.get("isReminderOn", True),
        "hasAttachments": False,
        "subject": data.get("subject", ""),
        "bodyPreview": body.get("content", "")[:255],
        "importance": data.get("importance", "normal"),
        "sensitivity": data.get("sensitivity", "normal"),
        "isAllDay": all_day,
        "isCancelled": bool(data.get("isCancelled", False)),
        "isOrganizer": is_org,
        "responseRequested": data.get("responseRequested", True),
        "seriesMasterId": ev.id if kind in ("occurrence", "exception") else None,
        "showAs": data.get("showAs", "busy"),
        "type": kind,
        "webLink": f"https://outlook.office365.com/owa/?itemid={ev.id}&exvsurl=1&path=/calendar/item",
        "onlineMeetingUrl": None,
        "isOnlineMeeting": bool(data.get("isOnlineMeeting", False)),
        "onlineMeetingProvider": data.get(
            "onlineMeetingProvider", "teamsForBusiness" if data.get("isOnlineMeeting") else "unknown"
        ),
        "allowNewTimeProposals": data.get("allowNewTimeProposals", True),
        "isDraft": False,
        "hideAttendees": data.get("hideAttendees", False),
        "responseStatus": data.get("responseStatus")
        or {"response": "organizer" if is_org else "none", "time": "0001-01-01T00:00:00Z"},
        "body": body,
        "start": _dt(s, all_day, tz),
        "end": _dt(e, all_day, tz),
        "location": data.get("location")
        or {
            "displayName": "",
            "locationType": "default",
            "uniqueIdType": "unknown",
            "address": {},
            "coordinates": {},
        },
        "locations": data.get("locations") or ([data["location"]] if data.get("location") else []),
        "recurrence": data.get("recurrence") if kind == "seriesMaster" else None,
        "attendees": data.get("attendees", []),
        "organizer": organizer,
        "onlineMeeting": data.get("onlineMeeting")
        or (
            {"joinUrl": f"https://teams.microsoft.com/l/meetup-join/{ev.id[-24:]}"}
            if data.get("isOnlineMeeting")
            else None
        ),
    }
    if kind in ("occurrence", "exception"):
        out["originalStart"] = iso(_occurrence_start(ev, date.fromisoformat(day)))
    return out


def expand(
    ev: Event, user: User, ws: datetime, we: datetime, tz: str, skeletal: bool
) -> list[dict[str, Any]]:
    found = in_window(ev, ws, we)
    if not found:
        return []
    if not ev.data.get("recurrence"):
        return [render(found[0], user, tz)]
    return [render_master(ev, user, tz)] + [render(i, user, tz, skeletal) for i in found]


# store operations ----------------------------------------------------------------------------------------
def create_event(tenant: Tenant, user: User, body: dict[str, Any]) -> Event:
    data = {k: v for k, v in body.items() if not k.startswith("@odata.") and k not in READ_ONLY}
    data["isCancelled"] = bool(
        body.get("isCancelled", False)
    )  # seeds may hold attendee copies of cancelled meetings
    _times(data)  # validates
    if data.get("recurrence"):
        rng = data["recurrence"].setdefault("range", {})
        rng.setdefault("type", "noEnd")
        rng.setdefault("startDate", str(data["start"]["dateTime"])[:10])
    now = utcnow()
    eid = tenant.new_id("AAMkAGevent")
    ical = "040000008200E00074C5B7101A82E008" + hashlib.sha256(eid.encode()).hexdigest()[:48].upper()
    ev = Event(eid, data, tenant.new_change_key(), now, now, tenant.next_seq(), ical)
    for day, over in (body.get("exceptions") or {}).items():
        ev.exceptions[day] = over
        ev.exception_keys[day] = tenant.new_change_key()
    ev.cancelled = set(body.get("cancelledDates") or [])
    user.events[ev.id] = ev
    user.event_log.record(ev.created_seq, ev.id, "upsert")
    tenant.emit(Change(user.id, "event", "", (ev.id, ev.id), "created", ev.change_key))
    return ev


def touch_event(tenant: Tenant, user: User, ev: Event) -> None:
    ev.change_key = tenant.new_change_key()
    ev.modified = utcnow()
    user.event_log.record(tenant.next_seq(), ev.id, "upsert")
    tenant.emit(Change(user.id, "event", "", (ev.id, ev.id), "updated", ev.change_key))


def remove_event(tenant: Tenant, user: User, ev: Event) -> None:
    ev.deleted = True
    user.event_log.record(tenant.next_seq(), ev.id, "removed")
    tenant.emit(Change(user.id, "event", "", (ev.id, ev.id), "deleted"))


def find(user: User, ref: str) -> tuple[Event, str]:
    """An event id -> (the event or series, occurrence date or "")."""
    master_id, _, day = ref.partition(SEP)
    ev = user.events.get(master_id)
    if ev is None or ev.deleted:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    if not day:
        return ev, ""
    iso_day = f"{day[:4]}-{day[4:6]}-{day[6:8]}"
    if not ev.data.get("recurrence") or iso_day in ev.cancelled:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    d = date.fromisoformat(iso_day)
    if d not in set(occurrence_dates(ev.data["recurrence"], d)):
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return ev, iso_day


# handlers -------------------------------------------------------------------------------------------------
def _tz(req: Request) -> str:
    tz = req.prefer.get("outlook.timezone", "") or "UTC"
    zone(tz)
    return tz


def _window(req: Request) -> tuple[datetime, datetime]:
    s, e = req.query.get("startDateTime"), req.query.get("endDateTime")
    if not s or not e:
        raise GraphError(
            400,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters StartDateTime "
            "and EndDateTime.",
        )
    ws, we = parse_dt(s), parse_dt(e)
    if we <= ws:
        raise GraphError(400, "ErrorInvalidParameter", "The EndDateTime must be after the StartDateTime.")
    if (we - ws) > timedelta(days=MAX_DAYS):
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            f"The time window specified is too large. Maximum number of days: {MAX_DAYS}",
        )
    return ws, we


def event_body(user: User, ev: Event, tz: str) -> dict[str, Any]:
    """A single event or a series master, as GET /events/{id} shows it."""
    if ev.data.get("recurrence"):
        return render_master(ev, user, tz)
    return render(instances(ev, datetime.max.replace(tzinfo=UTC))[0], user, tz)


def get_event(ctx: Ctx) -> Response:
    ev, day = find(ctx.u, ctx.params["event"])
    tz = _tz(ctx.req)
    if not day:
        body = event_body(ctx.u, ev, tz)
    else:
        inst = next(
            i
            for i in instances(ev, datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=2))
            if i.day == day
        )
        body = render(inst, ctx.u, tz)
    return Response(200, {"@odata.context": context(ctx.req, "events/$entity"), **body})


def list_events(ctx: Ctx) -> Response:
    tz = _tz(ctx.req)
    rows = []
    for ev in ctx.u.events.values():
        if ev.deleted:
            continue
        rows.append(event_body(ctx.u, ev, tz))
    return Response(200, list_page(ctx.req, rows, context(ctx.req, "events")))


def _copies(tenant: Tenant, ev: Event) -> list[tuple[User, Event]]:
    """The attendees' copies of a meeting in other calendars of the tenant (same iCalUId)."""
    return [
        (u, other)
        for u in tenant.users.values()
        for other in u.events.values()
        if other is not ev and other.ical_uid == ev.ical_uid and not other.deleted
    ]


def _invite(tenant: Tenant, organizer: User, ev: Event) -> None:
    """Exchange delivers a meeting to attendees inside the tenant: a copy in each attendee's calendar
    with the same iCalUId (the real service also mails the invitation; the request log shows it)."""
    for attendee in ev.data.get("attendees") or []:
        address = str((attendee.get("emailAddress") or {}).get("address", "")).lower()
        invitee = tenant.by_upn.get(address)
        if invitee is None or invitee is organizer:
            continue
        copy = create_event(
            tenant,
            invitee,
            {
                **ev.data,
                "organizer": {"emailAddress": {"name": organizer.display_name, "address": organizer.upn}},
                "responseStatus": {"response": "notResponded", "time": "0001-01-01T00:00:00Z"},
                "exceptions": ev.exceptions,
                "cancelledDates": sorted(ev.cancelled),
            },
        )
        copy.ical_uid = ev.ical_uid


def post_event(ctx: Ctx) -> Response:
    body = ctx.req.json()
    transaction = body.get("transactionId")
    repeated = next(
        (e for e in ctx.u.events.values() if transaction and e.data.get("transactionId") == transaction),
        None,
    )  # a client retry of the same create: the event it already made, not a second one
    if repeated is not None and not repeated.deleted:
        ctx.req.query.clear()
        ctx.params["event"] = repeated.id
        return get_event(ctx)
    ev = create_event(ctx.emu.tenant, ctx.u, body)
    _invite(ctx.emu.tenant, ctx.u, ev)
    ctx.req.query.clear()
    ctx.params["event"] = ev.id
    resp = get_event(ctx)
    resp.status = 201
    return resp


def patch_event(ctx: Ctx) -> Response:
    ev, day = find(ctx.u, ctx.params["event"])
    body = {k: v for k, v in ctx.req.json().items() if not k.startswith("@odata.")}
    bad = set(body) & READ_ONLY
    if bad:
        raise GraphError(400, "ErrorInvalidPropertySet", f"The property '{sorted(bad)[0]}' is read-only.")
    tenant = ctx.emu.tenant
    if day:  # editing one occurrence makes it an exception
        ev.exceptions[day] = {**ev.exceptions.get(day, {}), **body}
        ev.exception_keys[day] = tenant.new_change_key()
    else:
        new = {**ev.data, **body}
        _times(new)
        ev.data = new
    touch_event(tenant, ctx.u, ev)
    if _is_organizer(ctx.u, ev):  # the organizer's change reaches the attendees' copies
        for invitee, copy in _copies(tenant, ev):
            if day:
                copy.exceptions[day] = {**copy.exceptions.get(day, {}), **body}
                copy.exception_keys[day] = tenant.new_change_key()
            else:
                copy.data = {**copy.data, **body}
            touch_event(tenant, invitee, copy)
    return get_event(ctx)


def _is_organizer(user: User, ev: Event) -> bool:
    organizer = (ev.data.get("organizer") or {}).get("emailAddress", {}).get("address", user.upn)
    return str(organizer).lower() == user.upn.lower()


def delete_event(ctx: Ctx) -> Response:
    ev, day = find(ctx.u, ctx.params["event"])
    tenant = ctx.emu.tenant
    copies = _copies(tenant, ev) if _is_organizer(ctx.u, ev) else []
    if day:  # a deleted occurrence: no delta entry, no notification (PR #4501)
        ev.cancelled.add(day)
        ev.exceptions.pop(day, None)
        for _, copy in copies:
            copy.cancelled.add(day)
            copy.exceptions.pop(day, None)
    else:
        remove_event(tenant, ctx.u, ev)
        for invitee, copy in copies:  # the attendees' copies stay, marked cancelled
            copy.data["isCancelled"] = True
            touch_event(tenant, invitee, copy)
    return Response(204)


def cancel_event(ctx: Ctx) -> Response:
    ev, _ = find(ctx.u, ctx.params["event"])
    organizer = (ev.data.get("organizer") or {}).get("emailAddress", {}).get("address", ctx.u.upn)
    if organizer.lower() != ctx.u.upn.lower():
        raise GraphError(
            400,
            "ErrorAccessDenied",
            "Your request can't be completed. You need to be an organizer to cancel a meeting.",
        )
    return delete_event(ctx)


def event_instances(ctx: Ctx) -> Response:
    ev, _ = find(ctx.u, ctx.params["event"])
    ws, we = _window(ctx.req)
    tz = _tz(ctx.req)
    rows = [render(i, ctx.u, tz) for i in in_window(ev, ws, we)]
    return Response(200, list_page(ctx.req, rows, context(ctx.req, "events")))


def calendar_view(ctx: Ctx) -> Response:
    ws, we = _window(ctx.req)
    tz = _tz(ctx.req)
    rows = []
    for ev in ctx.u.events.values():
        if not ev.deleted:
            rows += [render(i, ctx.u, tz) for i in in_window(ev, ws, we)]
    rows.sort(key=lambda r: r["start"]["dateTime"])
    return Response(200, list_page(ctx.req, rows, context(ctx.req, "events")))


def view_delta(ctx: Ctx) -> Response:
    u, req, emu = ctx.u, ctx.req, ctx.emu
    tz = _tz(req)
    cursor = delta.resume(emu.states, req, u.id, emu.tenant.seq)
    if cursor is None:
        if "$select" in req.query:
            raise GraphError(
                400,
                "ErrorInvalidUrlQuery",
                "$select is not supported with change tracking over calendarView.",
            )
        ws, we = _window(req)
        cursor = delta.begin(emu.states, u.id, "calendar", emu.tenant.seq, {"s": iso(ws), "e": iso(we)})
    ws, we = (
        parse_dt(cursor.options["s"]),
        parse_dt(cursor.options["e"]),
    )  # frozen: later window params are ignored

    def emit(seq: int, key: str, kind: str, c: delta.Cursor) -> list[dict[str, Any]] | None:
        ev = u.events[key]
        initial = c.initial(seq)
        if kind == "removed" or ev.deleted:
            if initial:
                return None
            gone = [key] + [i.id for i in in_window(ev, ws, we) if i.kind != "singleInstance"]
            return [{"@odata.type": EVENT_TYPE, "id": g, "@removed": {"reason": "deleted"}} for g in gone]
        items = expand(ev, u, ws, we, tz, skeletal=True)
        if items:
            return items
        return (
            None if initial else [{"@odata.type": EVENT_TYPE, "id": key, "@removed": {"reason": "deleted"}}]
        )

    link = f"{req.base_url}/users/{u.id}/calendarView/delta"
    page = delta.run_page(emu.states, u.event_log, cursor, limit=delta.page_size(req), link=link, emit=emit)
    resp = Response(200, page.body(context(req, "Collection(event)")))
    if "outlook.timezone" in req.prefer:
        resp.headers["Preference-Applied"] = f'outlook.timezone="{tz}"'
    return resp


def get_calendar(ctx: Ctx) -> Response:
    u = ctx.u
    return Response(
        200,
        {
            "id": "AAMkAGcalendar" + u.id.replace("-", ""),
            "name": "Calendar",
            "isDefaultCalendar": True,
            "canEdit": True,
            "owner": {"name": u.display_name, "address": u.upn},
        },
    )


def list_calendars(ctx: Ctx) -> Response:
    return Response(200, {"value": [get_calendar(ctx).body]})


def routes(r: Router) -> None:
    r.add("GET", "/users/{user}/calendar", get_calendar)
    r.add("GET", "/users/{user}/calendars", list_calendars)
    for view in (
        "/users/{user}/calendarView",
        "/users/{user}/calendar/calendarView",
        "/users/{user}/calendars/{cal}/calendarView",
    ):
        r.add("GET", view + "/delta", view_delta)
        r.add("GET", view, calendar_view)
    for base in ("/users/{user}/events", "/users/{user}/calendar/events"):
        r.add("GET", base, list_events)
        r.add("POST", base, post_event)
        r.add("GET", base + "/{event}", get_event)
        r.add("PATCH", base + "/{event}", patch_event)
        r.add("DELETE", base + "/{event}", delete_event)
        r.add("POST", base + "/{event}/cancel", cancel_event)
        r.add("GET", base + "/{event}/instances", event_instances)
