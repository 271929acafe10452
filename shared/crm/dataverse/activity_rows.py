"""Dataverse activity rows ⇄ journals and appointments (see `wire` for what goes where).

- email: subject, body (as HTML), direction, `messageid` (the key), `actualend`, owner, regarding
  (the one linked person), parties (sender 1, to 2, cc 3; bound to the contact or systemuser with
  that address, else only `addressused`), states; the sync's JSON details: names as Outlook showed
  them, both times, conversation, attachments, seen-by, the linked people, the owner as configured.
- appointment: subject (200), body, start, end, all-day, location (200), `globalobjectid` (the
  meeting's iCalUId) and `crmsync_occurrencestart` (an occurrence's original start), owner,
  regarding, parties (organizer 7, required 5, optional 6); details: attendees as Outlook showed
  them, the online meeting link, seen-by, people, the series key, a subject or location cut to fit.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import nh3

from shared.crm.dataverse.wire import (
    address_pair,
    bounded,
    details,
    from_pair,
    from_people_rows,
    instant,
    linked_contacts,
    pack,
    parse_instant,
    party,
    people_rows,
)
from shared.model import (
    Address,
    Appointment,
    Attachment,
    Attendee,
    CrmAppointmentChange,
    CrmRef,
    Direction,
    Journal,
)

MESSAGE_ID_MAX = 320
GOID_MAX = 300
APPOINTMENT_TEXT_MAX = 200
SENDER, TO, CC, REQUIRED, OPTIONAL, ORGANIZER = 1, 2, 3, 5, 6, 7
EMAIL_SELECT = (
    "activityid,subject,description,directioncode,messageid,actualend,statecode,statuscode,"
    "_ownerid_value,_regardingobjectid_value,crmsync_outlookdetails,createdon"
)
APPOINTMENT_SELECT = (
    "activityid,subject,description,scheduledstart,scheduledend,isalldayevent,location,globalobjectid,"
    "crmsync_occurrencestart,statecode,statuscode,_ownerid_value,_regardingobjectid_value,"
    "crmsync_outlookdetails"
)
_WRAP = ('<div data-crmsync="text">', "</div>")


def body_html(text: str) -> str:
    """Plain text as the HTML Dynamics shows in `description` (the exact inverse is `body_text`)."""
    return _WRAP[0] + html.escape(text, quote=False).replace("\n", "<br>\n") + _WRAP[1]


def body_text(markup: str | None) -> str:
    markup = markup or ""
    if markup.startswith(_WRAP[0]) and markup.endswith(_WRAP[1]):
        return html.unescape(markup[len(_WRAP[0]) : -len(_WRAP[1])].replace("<br>\n", "\n"))
    spaced = markup.replace("<br>", "\n").replace("</p>", "\n")
    return html.unescape(nh3.clean(spaced, tags=set(), strip_comments=True)).strip()


# -- email -------------------------------------------------------------------------------------


def message_id(key: str) -> str:
    return bounded(key, MESSAGE_ID_MAX)


def email_details(journal: Journal, *, adopted: bool) -> str:
    sync: dict[str, Any] = {
        "v": 1,
        "from": address_pair(journal.sender),
        "to": [address_pair(a) for a in journal.to],
        "cc": [address_pair(a) for a in journal.cc],
        "sent": journal.sent_at.isoformat() if journal.sent_at else None,
        "received": journal.received_at.isoformat() if journal.received_at else None,
        "conv": journal.conversation_id,
        "att": [[a.name, a.size] for a in journal.attachments],
        "owner": journal.owner,
        "seen": list(journal.seen_by),
        "people": people_rows(journal.people),
    }
    if message_id(journal.key) != journal.key:
        sync["key"] = journal.key
    if adopted:
        sync["adopted"] = True
    return pack(sync)


def email_columns(journal: Journal, owner: str) -> dict[str, Any]:
    """Every column the connector writes on an email it made (not the state, not the parties)."""
    outbound = journal.direction is Direction.OUTBOUND
    when = (journal.sent_at or journal.received_at) if outbound else (journal.received_at or journal.sent_at)
    return {
        "subject": journal.subject,
        "description": body_html(journal.body),
        "directioncode": outbound,
        "messageid": message_id(journal.key),
        "actualend": instant(when),
        "ownerid@odata.bind": f"/systemusers({owner})",
        "crmsync_outlookdetails": email_details(journal, adopted=False),
    }


def email_parties(
    journal: Journal, users: Mapping[str, str], *, bind_sender: bool = True
) -> list[dict[str, Any]]:
    """Sender, to and cc. A contact as an email's sender is what Dynamics 365's own tracking writes,
    though the `from` column's metadata names only users and queues: where Dataverse refuses it
    (`bind_sender=False`), the sender is kept as its address alone."""
    contacts = linked_contacts(journal.people)
    out = (
        [party(SENDER, journal.sender.address, contacts if bind_sender else {}, users)]
        if journal.sender
        else []
    )
    out += [party(TO, a.address, contacts, users) for a in journal.to]
    out += [party(CC, a.address, contacts, users) for a in journal.cc]
    return out


def closed_status(journal: Journal) -> int:
    return 3 if journal.direction is Direction.OUTBOUND else 4  # Sent / Received


def journal_from_row(row: Mapping[str, Any], owner_of: Mapping[str, str]) -> Journal:
    sync = details(row, "crmsync_outlookdetails")
    outbound = bool(row.get("directioncode"))
    parties = row.get("email_activity_parties") or []

    def of(mask: int) -> tuple[Address, ...]:
        return tuple(
            Address(str(p.get("addressused") or ""))
            for p in parties
            if p.get("participationtypemask") == mask
        )

    when = parse_instant(row.get("actualend"))
    sender = from_pair(sync["from"]) if "from" in sync else next(iter(of(SENDER)), None)
    return Journal(
        key=str(sync.get("key") or row.get("messageid") or ""),
        subject=str(row.get("subject") or ""),
        body=body_text(row.get("description")),
        direction=Direction.OUTBOUND if outbound else Direction.INBOUND,
        sender=sender,
        to=tuple(a for a in map(from_pair, sync["to"]) if a) if "to" in sync else of(TO),
        cc=tuple(a for a in map(from_pair, sync["cc"]) if a) if "cc" in sync else of(CC),
        sent_at=parse_instant(sync.get("sent")) if "sent" in sync else (when if outbound else None),
        received_at=parse_instant(sync.get("received"))
        if "received" in sync
        else (None if outbound else when),
        conversation_id=str(sync.get("conv") or ""),
        attachments=tuple(Attachment(str(n), int(s)) for n, s in sync.get("att") or []),
        owner=str(sync.get("owner") or owner_of.get(str(row.get("_ownerid_value")), "")),
        seen_by=tuple(sync.get("seen") or ()),
        people=from_people_rows(sync.get("people")),
    )


# -- appointment -------------------------------------------------------------------------------


def split_key(key: str) -> tuple[str, str]:
    """(globalobjectid, original start of an occurrence or "") of an appointment key."""
    uid, sep, start = key.rpartition("|")
    if sep and start[:4].isdigit():
        try:
            datetime.fromisoformat(start)
        except ValueError:
            return bounded(key, GOID_MAX), ""
        return bounded(uid, GOID_MAX), start
    return bounded(key, GOID_MAX), ""


def appointment_columns(appointment: Appointment, owner: str) -> dict[str, Any]:
    goid, occurrence = split_key(appointment.key)
    a = appointment
    sync: dict[str, Any] = {
        "v": 1,
        "organizer": address_pair(a.organizer),
        "online": a.online_meeting_url,
        "owner": a.owner,
        "attendees": [[t.address.address, t.address.name, t.type, t.response] for t in a.attendees],
        "seen": list(a.seen_by),
        "people": people_rows(a.people),
        "series": a.series_key,
        "days": [d.isoformat() if d else None for d in (a.start_date, a.end_date)],
    }
    if (goid + (f"|{occurrence}" if occurrence else "")) != a.key:
        sync["key"] = a.key
    for name in ("subject", "location"):
        if len(getattr(a, name)) > APPOINTMENT_TEXT_MAX:
            sync[name] = getattr(a, name)
    return {
        "subject": cut(a.subject, APPOINTMENT_TEXT_MAX),
        "description": a.body,
        "scheduledstart": instant(a.start),
        "scheduledend": instant(a.end),
        "isalldayevent": a.is_all_day,
        "location": cut(a.location, APPOINTMENT_TEXT_MAX),
        "globalobjectid": goid,
        "crmsync_occurrencestart": occurrence or None,
        "ownerid@odata.bind": f"/systemusers({owner})",
        "crmsync_outlookdetails": pack(sync),
    }


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def appointment_parties(appointment: Appointment, users: Mapping[str, str]) -> list[dict[str, Any]]:
    contacts = linked_contacts(appointment.people)
    out = [party(ORGANIZER, appointment.organizer.address, contacts, users)] if appointment.organizer else []
    for attendee in appointment.attendees:
        mask = REQUIRED if attendee.type == "required" else OPTIONAL
        out.append(party(mask, attendee.address.address, contacts, users))
    return out


def state_of(appointment: Appointment) -> tuple[int, int]:
    return (2, 4) if appointment.cancelled else (3, 5)  # Canceled / Scheduled, Busy


def appointment_key(row: Mapping[str, Any]) -> str:
    sync = details(row, "crmsync_outlookdetails")
    if sync.get("key"):
        return str(sync["key"])
    goid, occurrence = str(row.get("globalobjectid") or ""), str(row.get("crmsync_occurrencestart") or "")
    return goid + (f"|{occurrence}" if occurrence else "")


def appointment_from_row(row: Mapping[str, Any], owner_of: Mapping[str, str]) -> Appointment:
    sync = details(row, "crmsync_outlookdetails")
    start = parse_instant(row.get("scheduledstart")) or datetime.min.replace(tzinfo=UTC)
    end = parse_instant(row.get("scheduledend")) or start
    days = sync.get("days") or [None, None]
    all_day = bool(row.get("isalldayevent"))
    if all_day and not sync:
        days = [start.date().isoformat(), end.date().isoformat()]
    parties = row.get("appointment_activity_parties") or []
    organizer = next((p for p in parties if p.get("participationtypemask") == ORGANIZER), None)
    return Appointment(
        key=appointment_key(row),
        subject=str(sync.get("subject") or row.get("subject") or ""),
        start=start,
        end=end,
        is_all_day=all_day,
        start_date=date.fromisoformat(days[0]) if days[0] else None,
        end_date=date.fromisoformat(days[1]) if days[1] else None,
        location=str(sync.get("location") or row.get("location") or ""),
        organizer=from_pair(sync["organizer"])
        if "organizer" in sync
        else (Address(str(organizer.get("addressused") or "")) if organizer else None),
        attendees=tuple(
            Attendee(Address(str(a), str(n)), type=t, response=str(r))
            for a, n, t, r in sync.get("attendees") or []
        ),
        online_meeting_url=str(sync.get("online") or ""),
        body=str(row.get("description") or ""),
        owner=str(sync.get("owner") or owner_of.get(str(row.get("_ownerid_value")), "")),
        seen_by=tuple(sync.get("seen") or ()),
        people=from_people_rows(sync.get("people")),
        series_key=str(sync.get("series") or ""),
        cancelled=row.get("statecode") == 2,
    )


def change_from_row(row: Mapping[str, Any], owner: str) -> CrmAppointmentChange:
    a = appointment_from_row(row, {})
    version = str(row.get("@odata.etag", "")).removeprefix('W/"').rstrip('"')
    return CrmAppointmentChange(
        ref=CrmRef(str(row["activityid"]), version),
        owner=owner,
        key=a.key if details(row, "crmsync_outlookdetails") else "",
        subject=a.subject,
        start=a.start,
        end=a.end,
        is_all_day=a.is_all_day,
        location=a.location,
        body=a.body,
        cancelled=a.cancelled,
    )
