"""Meeting messages and delegates (Microsoft's eventMessage pages and "share or delegate a calendar"): a
meeting request, response or cancellation arrives as an `eventMessageRequest` / `eventMessageResponse` /
`eventMessage` (with `meetingMessageType`, the derived type's properties, and the `event` navigation),
never creatable through `POST /messages`.

A mailbox with calendar delegates has Exchange's hidden forwarding rule: each delegate gets a copy in
their Inbox (`isDelegated: true`, a Message-ID of its own, its `event` the owner's), and the owner's own
copy goes by `delegateMeetingMessageDeliveryOptions`: to Deleted Items (`sendToDelegateOnly`, the
default), to the Inbox marked `principalWantsCopy` (`sendToDelegateAndInformationToPrincipal`), or to the
Inbox (`sendToDelegateAndPrincipal`).

Meeting traffic is made through the control API (a meeting organised inside or outside the tenant, by its
organizer or by a delegate in the organizer's calendar; an attendee's answer; a cancellation): Graph's own
calendar writes here still send nothing, as before."""

from __future__ import annotations

from typing import Any

from emulators.graph import calendar, mail
from emulators.graph.protocol import GraphError, iso, utcnow
from emulators.graph.store import Event, Message, Tenant, User

BASE = "#microsoft.graph.eventMessage"
REQUEST = "#microsoft.graph.eventMessageRequest"
RESPONSE = "#microsoft.graph.eventMessageResponse"
ANSWERS = {  # response -> (meetingMessageType as the CSDL spells it, subject prefix, showAs)
    "accepted": ("meetingAccepted", "Accepted: ", "busy"),
    "tentativelyAccepted": ("meetingTenativelyAccepted", "Tentative: ", "tentative"),
    "declined": ("meetingDeclined", "Declined: ", "free"),
}


def linked_event(m: Message) -> dict[str, Any] | None:
    """`$expand=microsoft.graph.eventMessage/event`: the event in the calendar the message is about (a
    delegate's copy points to the owner's calendar)."""
    assert m.meeting is not None
    user, event_id = m.meeting["_event"]
    ev = user.events.get(event_id)
    if ev is None or ev.deleted:
        return None
    return calendar.event_body(user, ev, "UTC")


def _props(owner: User, ev: Event, kind: str, **extra: Any) -> dict[str, Any]:
    """A meeting message's own properties (META: eventMessage and its derived types)."""
    data = ev.data
    out: dict[str, Any] = {
        "meetingMessageType": "none",
        "startDateTime": data["start"],
        "endDateTime": data["end"],
        "location": data.get("location") or {"displayName": ""},
        "isAllDay": bool(data.get("isAllDay")),
        "isDelegated": False,
        "isOutOfDate": False,
        "recurrence": data.get("recurrence"),
        "type": "seriesMaster" if data.get("recurrence") else "singleInstance",
        "_event": (owner, ev.id),
    }
    if kind == REQUEST:
        out.update(
            allowNewTimeProposals=bool(data.get("allowNewTimeProposals", True)),
            meetingRequestType="newMeetingRequest",
            previousStartDateTime=None,
            previousEndDateTime=None,
            previousLocation=None,
            responseRequested=bool(data.get("responseRequested", True)),
        )
    if kind == RESPONSE:
        out.update(responseType=None, proposedNewTime=None)
    out.update(extra)
    return out


Delivered = list[tuple[User, Message]]


def deliver(tenant: Tenant, owner: User, spec: dict[str, Any], meeting: dict[str, Any]) -> Delivered:
    """A meeting message addressed to `owner` arrives, through the delegate rule when there is one.
    Returns (mailbox, message): the owner's copy first, then the delegates'."""
    delegates = [tenant.users[d] for d in owner.delegates if d in tenant.users]
    option = owner.settings["delegateMeetingMessageDeliveryOptions"]
    own = {**meeting, "isDelegated": bool(delegates)}
    folder = "inbox"
    if delegates and option == "sendToDelegateOnly":
        folder = "deleteditems"
    elif delegates and option == "sendToDelegateAndInformationToPrincipal" and "meetingRequestType" in own:
        own["meetingRequestType"] = "principalWantsCopy"
    mine = mail.new_message(tenant, owner, owner.folder(folder), {**spec, "isRead": False, "meeting": own})
    out = [(owner, mine)]
    for d in delegates:  # forwarded by the rule: a message of its own, in the delegate's Inbox
        forwarded = {**spec, "internetMessageId": _message_id(tenant, owner), "isRead": False}
        copy = {**meeting, "isDelegated": True}
        out.append((d, mail.new_message(tenant, d, d.folder("inbox"), {**forwarded, "meeting": copy})))
    return out


def _ids(delivered: Delivered, into: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    out = {} if into is None else into
    for u, m in delivered:
        out.setdefault(u.upn, []).append(m.rest_id)
    return out


def _message_id(tenant: Tenant, u: User) -> str:
    return f"<{tenant.new_id('')[:24]}@{u.upn.split('@')[-1]}>"


def _who(u: User) -> dict[str, Any]:
    return {"emailAddress": {"name": u.display_name, "address": u.upn}}


def organise(tenant: Tenant, body: dict[str, Any]) -> dict[str, Any]:
    """A meeting is sent, as Outlook would: by its organizer (inside or outside the tenant), or by a
    delegate (`bookedBy`) in the organizer's calendar, then the requests go out on the organizer's behalf
    (from = organizer, sender = delegate). The organizer's event (in the tenant), each tenant attendee's
    tentative copy (the organizer among its attendees, one iCalUId), a request in each attendee's
    mailbox and a copy of it in the organizer's Sent Items."""
    organizer = mail.pair(body.get("organizer") or "")
    if not organizer[1]:
        raise GraphError(400, "BadRequest", "'organizer' is required.")
    org_user = tenant.by_upn.get(organizer[1].lower())
    booker = tenant.user(str(body["bookedBy"])) if body.get("bookedBy") else None
    if booker is not None and (org_user is None or booker.id not in org_user.delegates):
        raise GraphError(400, "BadRequest", "'bookedBy' must be a delegate of the organizer's mailbox.")
    org = _who(org_user) if org_user else {"emailAddress": {"name": organizer[0], "address": organizer[1]}}
    attendees = [a for a in body.get("attendees") or [] if mail.pair(a)[1].lower() != organizer[1].lower()]
    data = {
        k: v
        for k, v in body.items()
        if k in ("subject", "body", "start", "end", "isAllDay", "location", "recurrence", "isOnlineMeeting")
    }
    data["attendees"] = attendees
    data["organizer"] = org
    sender = _who(booker) if booker else org
    spec = {
        "from": org,
        "sender": sender,
        "toRecipients": [{"emailAddress": a.get("emailAddress", a)} for a in attendees],
        "subject": data.get("subject", ""),
        "bodyHtml": (data.get("body") or {}).get("content", ""),
        "internetMessageId": f"<{tenant.new_id('')[:24]}@{organizer[1].split('@')[-1]}>",
        "@odata.type": REQUEST,
    }
    result: dict[str, Any] = {"events": {}, "messages": {}}
    ical = ""
    if org_user is not None:
        ev = calendar.create_event(tenant, org_user, data)
        ev.booked_by = booker.id if booker else ""
        ical = ev.ical_uid
        result["events"][org_user.upn] = ev.id
        meeting = _props(org_user, ev, REQUEST, meetingMessageType="meetingRequest")
        sent = mail.new_message(
            tenant, org_user, org_user.folder("sentitems"), {**spec, "isRead": True, "meeting": meeting}
        )
        result["messages"][org_user.upn] = [sent.rest_id]
    for attendee in attendees:
        invitee = tenant.by_upn.get(mail.pair(attendee)[1].lower())
        if invitee is None:
            continue
        copy = calendar.create_event(
            tenant,
            invitee,
            {
                **data,
                "attendees": [*attendees, {**org, "type": "required"}],
                "responseStatus": {"response": "notResponded", "time": "0001-01-01T00:00:00Z"},
                "showAs": "tentative",
            },
        )
        if ical:
            copy.ical_uid = ical
        ical = copy.ical_uid
        result["events"][invitee.upn] = copy.id
        meeting = _props(invitee, copy, REQUEST, meetingMessageType="meetingRequest")
        _ids(deliver(tenant, invitee, spec, meeting), result["messages"])
    result["iCalUId"] = ical
    return result


def respond(tenant: Tenant, user: User, event_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """An attendee answers (accept / tentatively accept / decline): their copy's responseStatus, the
    organizer's attendee status, and with `sendResponse` (the default) an eventMessageResponse to the
    organizer's mailbox; for a meeting a delegate booked, to that delegate only under the default
    delivery option."""
    answer = str(body.get("response", ""))
    if answer not in ANSWERS:
        raise GraphError(400, "BadRequest", f"response must be one of {', '.join(ANSWERS)}.")
    kind, prefix, show_as = ANSWERS[answer]
    ev, _ = calendar.find(user, event_id)
    now = iso(utcnow())
    ev.data["responseStatus"] = {"response": answer, "time": now}
    ev.data["showAs"] = show_as
    calendar.touch_event(tenant, user, ev)
    address = mail.pair(ev.data.get("organizer") or "")[1].lower()
    org_user = tenant.by_upn.get(address)
    if org_user is None:
        return {"messages": {}}
    org_ev = next((e for e in org_user.events.values() if e.ical_uid == ev.ical_uid and not e.deleted), None)
    if org_ev is None:
        return {"messages": {}}
    for a in org_ev.data.get("attendees") or []:
        if mail.pair(a)[1].lower() == user.upn.lower():
            a["status"] = {"response": answer, "time": now}
    calendar.touch_event(tenant, org_user, org_ev)
    if not body.get("sendResponse", True):
        return {"messages": {}}
    booker = tenant.users.get(org_ev.booked_by) if org_ev.booked_by else None
    meeting = _props(org_user, org_ev, RESPONSE, meetingMessageType=kind, responseType=answer)
    spec = {
        "from": _who(user),
        "toRecipients": [_who(booker or org_user)],
        "subject": prefix + org_ev.data.get("subject", ""),
        "bodyHtml": str(body.get("comment", "")),
        "internetMessageId": _message_id(tenant, user),
        "@odata.type": RESPONSE,
    }
    option = org_user.settings["delegateMeetingMessageDeliveryOptions"]
    if booker is not None and option == "sendToDelegateOnly":  # DLGEV step 5: to the delegate only
        m = mail.new_message(
            tenant, booker, booker.folder("inbox"), {**spec, "isRead": False, "meeting": meeting}
        )
        return {"messages": {booker.upn: [m.rest_id]}}
    return {"messages": _ids(deliver(tenant, org_user, spec, meeting))}


def cancel(tenant: Tenant, organizer: User, event_id: str, comment: str = "") -> dict[str, Any]:
    """The organizer (in the tenant) cancels: their event goes (to Deleted Items, out of the calendar),
    each tenant attendee's copy stays marked cancelled, and a meetingCancelled eventMessage arrives."""
    ev, _ = calendar.find(organizer, event_id)
    calendar.remove_event(tenant, organizer, ev)
    out: dict[str, list[str]] = {}
    spec = {
        "from": _who(organizer),
        "toRecipients": ev.data.get("attendees") or [],
        "subject": "Canceled: " + ev.data.get("subject", ""),
        "bodyHtml": comment,
        "internetMessageId": _message_id(tenant, organizer),
        "@odata.type": BASE,
    }
    for invitee in tenant.users.values():
        for copy in list(invitee.events.values()):
            if copy is ev or copy.deleted or copy.ical_uid != ev.ical_uid:
                continue
            copy.data.update(isCancelled=True, subject="Canceled: " + copy.data.get("subject", ""))
            calendar.touch_event(tenant, invitee, copy)
            meeting = _props(invitee, copy, BASE, meetingMessageType="meetingCancelled")
            _ids(deliver(tenant, invitee, spec, meeting), out)
    return {"messages": out}


def cancelled_by_outside_organizer(tenant: Tenant, user: User, ev: Event) -> dict[str, list[str]]:
    """The cancellation message an outside organizer's cancel brings (control API, on request)."""
    organizer = ev.data.get("organizer") or _who(user)
    spec = {
        "from": organizer,
        "toRecipients": [_who(user)],
        "subject": ev.data.get("subject", ""),
        "bodyHtml": "",
        "internetMessageId": f"<{tenant.new_id('')[:24]}@{mail.pair(organizer)[1].split('@')[-1]}>",
        "@odata.type": BASE,
    }
    return _ids(deliver(tenant, user, spec, _props(user, ev, BASE, meetingMessageType="meetingCancelled")))
