"""The JSON shapes of the project's CRM API (`docs/crm-api.yaml`) ⇄ the domain records.

The one place where field names of the API meet `shared.model`; the connector only moves these dicts.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from shared.model import (
    Address,
    Appointment,
    Attachment,
    Attendee,
    ContactFields,
    CrmAppointmentChange,
    CrmContact,
    CrmRef,
    CrmTask,
    Direction,
    Journal,
    PersonRef,
    PostalAddress,
    TaskFields,
    TaskImportance,
    TaskStatus,
)

Json = dict[str, Any]


def _instant(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_instant(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _parse_day(value: Any) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) and value else None


def _address(value: Address | None) -> Json | None:
    return {"address": value.address, "name": value.name} if value is not None else None


def _parse_address(value: Any) -> Address | None:
    return Address(address=value["address"], name=value.get("name") or "") if value else None


def _person(ref: PersonRef) -> Json:
    return {"id": ref.id, "kind": ref.kind, "name": ref.name, "email": ref.email}


def parse_person(value: Json) -> PersonRef:
    return PersonRef(
        id=value["id"],
        kind=value.get("kind") or "contact",
        name=value.get("name") or "",
        email=value.get("email") or "",
    )


def parse_ref(value: Json) -> CrmRef:
    return CrmRef(id=str(value["id"]), version=str(value.get("version") or value.get("seq") or ""))


def journal_to_json(journal: Journal) -> Json:
    return {
        "subject": journal.subject,
        "body": journal.body,
        "direction": journal.direction.value,
        "sender": _address(journal.sender),
        "to": [_address(a) for a in journal.to],
        "cc": [_address(a) for a in journal.cc],
        "sentAt": _instant(journal.sent_at),
        "receivedAt": _instant(journal.received_at),
        "conversationId": journal.conversation_id,
        "attachments": [{"name": a.name, "size": a.size} for a in journal.attachments],
        "owner": journal.owner,
        "seenBy": list(journal.seen_by),
        "people": [_person(p) for p in journal.people],
    }


def journal_from_json(value: Json) -> Journal:
    return Journal(
        key=value["key"],
        subject=value.get("subject") or "",
        body=value.get("body") or "",
        direction=Direction(value.get("direction") or "inbound"),
        sender=_parse_address(value.get("sender")),
        to=tuple(a for a in map(_parse_address, value.get("to") or []) if a),
        cc=tuple(a for a in map(_parse_address, value.get("cc") or []) if a),
        sent_at=_parse_instant(value.get("sentAt")),
        received_at=_parse_instant(value.get("receivedAt")),
        conversation_id=value.get("conversationId") or "",
        attachments=tuple(Attachment(a["name"], int(a["size"])) for a in value.get("attachments") or []),
        owner=value.get("owner") or "",
        seen_by=tuple(value.get("seenBy") or ()),
        people=tuple(parse_person(p) for p in value.get("people") or []),
    )


def appointment_to_json(appointment: Appointment) -> Json:
    return {
        "subject": appointment.subject,
        "start": appointment.start.isoformat(),
        "end": appointment.end.isoformat(),
        "isAllDay": appointment.is_all_day,
        "startDate": appointment.start_date.isoformat() if appointment.start_date else None,
        "endDate": appointment.end_date.isoformat() if appointment.end_date else None,
        "location": appointment.location,
        "organizer": _address(appointment.organizer),
        "attendees": [
            {"address": _address(a.address), "type": a.type, "response": a.response}
            for a in appointment.attendees
        ],
        "onlineMeetingUrl": appointment.online_meeting_url,
        "body": appointment.body,
        "owner": appointment.owner,
        "seenBy": list(appointment.seen_by),
        "people": [_person(p) for p in appointment.people],
        "seriesKey": appointment.series_key,
        "cancelled": appointment.cancelled,
    }


def appointment_from_json(value: Json) -> Appointment:
    start = _parse_instant(value["start"])
    end = _parse_instant(value["end"])
    assert start is not None and end is not None
    return Appointment(
        key=value.get("key") or "",
        subject=value.get("subject") or "",
        start=start,
        end=end,
        is_all_day=bool(value.get("isAllDay")),
        start_date=_parse_day(value.get("startDate")),
        end_date=_parse_day(value.get("endDate")),
        location=value.get("location") or "",
        organizer=_parse_address(value.get("organizer")),
        attendees=tuple(
            Attendee(
                address=_parse_address(a["address"]) or Address(""),
                type=a.get("type") or "required",
                response=a.get("response") or "none",
            )
            for a in value.get("attendees") or []
        ),
        online_meeting_url=value.get("onlineMeetingUrl") or "",
        body=value.get("body") or "",
        owner=value.get("owner") or "",
        seen_by=tuple(value.get("seenBy") or ()),
        people=tuple(parse_person(p) for p in value.get("people") or []),
        series_key=value.get("seriesKey") or "",
        cancelled=bool(value.get("cancelled")),
    )


def appointment_change_from_json(value: Json) -> CrmAppointmentChange:
    appointment = appointment_from_json(value)
    return CrmAppointmentChange(
        ref=parse_ref(value),
        owner=appointment.owner,
        key=appointment.key,
        subject=appointment.subject,
        start=appointment.start,
        end=appointment.end,
        is_all_day=appointment.is_all_day,
        location=appointment.location,
        body=appointment.body,
        cancelled=appointment.cancelled,
    )


def contact_to_json(contact: CrmContact) -> Json:
    f = contact.fields
    postal = f.business_address
    return {
        "kind": "contact",
        "owner": contact.owner,
        "givenName": f.given_name,
        "surname": f.surname,
        "displayName": f.display_name,
        "emails": list(f.emails),
        "businessPhones": list(f.business_phones),
        "mobilePhone": f.mobile_phone,
        "company": f.company,
        "jobTitle": f.job_title,
        "department": f.department,
        "businessAddress": {
            "street": postal.street,
            "city": postal.city,
            "state": postal.state,
            "postalCode": postal.postal_code,
            "country": postal.country,
        },
        "notes": f.notes,
    }


def contact_from_json(value: Json) -> CrmContact:
    postal = value.get("businessAddress") or {}
    fields = ContactFields(
        given_name=value.get("givenName") or "",
        surname=value.get("surname") or "",
        display_name=value.get("displayName") or "",
        emails=tuple(value.get("emails") or ()),
        business_phones=tuple(value.get("businessPhones") or ()),
        mobile_phone=value.get("mobilePhone") or "",
        company=value.get("company") or "",
        job_title=value.get("jobTitle") or "",
        department=value.get("department") or "",
        business_address=PostalAddress(
            street=postal.get("street") or "",
            city=postal.get("city") or "",
            state=postal.get("state") or "",
            postal_code=postal.get("postalCode") or "",
            country=postal.get("country") or "",
        ),
        notes=value.get("notes") or "",
    )
    return CrmContact(
        ref=parse_ref(value),
        owner=value.get("owner") or "",
        fields=fields,
        key=value.get("key") or "",
        updated_at=_parse_instant(value.get("updatedAt")),
    )


def task_to_json(task: CrmTask) -> Json:
    f = task.fields
    body: Json = {
        "owner": task.owner,
        "title": f.title,
        "body": f.body,
        "due": f.due.isoformat() if f.due else None,
        "reminder": _instant(f.reminder),
        "importance": f.importance.value,
        "status": f.status.value,
        "completed": f.completed.isoformat() if f.completed else None,
        "categories": list(f.categories),
        "regarding": task.regarding,
    }
    if task.key:
        body["key"] = task.key
    return body


def task_from_json(value: Json) -> CrmTask:
    fields = TaskFields(
        title=value.get("title") or "",
        body=value.get("body") or "",
        due=_parse_day(value.get("due")),
        reminder=_parse_instant(value.get("reminder")),
        importance=TaskImportance(value.get("importance") or "normal"),
        status=TaskStatus(value.get("status") or "notStarted"),
        completed=_parse_day(value.get("completed")),
        categories=tuple(value.get("categories") or ()),
    )
    return CrmTask(
        ref=parse_ref(value),
        owner=value.get("owner") or "",
        fields=fields,
        key=value.get("key") or "",
        regarding=value.get("regarding") or "",
        updated_at=_parse_instant(value.get("updatedAt")),
    )
