"""Check and normalise the JSON documents clients send. Every problem is an `ApiError` (400/422)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

MAX_EMAILS = 10
PERSON_KINDS = ("contact", "lead", "candidate", "company")
TASK_STATUS = ("notStarted", "inProgress", "completed")
TASK_IMPORTANCE = ("low", "normal", "high")
MAX_TITLE = 255
_TEXT_FIELDS = (
    "givenName",
    "surname",
    "displayName",
    "mobilePhone",
    "company",
    "jobTitle",
    "department",
    "notes",
)
_POSTAL = ("street", "city", "state", "postalCode", "country")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _fail(message: str, code: str = "invalidField", status: int = 422) -> ApiError:
    return ApiError(status, code, message)


def _text(doc: dict[str, Any], name: str, default: str = "") -> str:
    value = doc.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _fail(f"'{name}' must be a string")
    return value


def _texts(doc: dict[str, Any], name: str) -> list[str]:
    value = doc.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(f"'{name}' must be a list of strings")
    return list(value)


def _instant(doc: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = doc.get(name)
    if value is None:
        if required:
            raise _fail(f"'{name}' is required")
        return None
    if not isinstance(value, str):
        raise _fail(f"'{name}' must be an RFC 3339 date-time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(f"'{name}' is not an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise _fail(f"'{name}' needs a UTC offset")
    return value


def _day(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    try:
        date.fromisoformat(value)
    except (TypeError, ValueError):
        raise _fail(f"'{name}' is not a date (YYYY-MM-DD)") from None
    return str(value)


def _address(value: Any, name: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("address"), str):
        raise _fail(f"'{name}' must be an object with a string 'address'")
    return {"address": value["address"], "name": _text(value, "name")}


def _addresses(doc: dict[str, Any], name: str) -> list[dict[str, str]]:
    value = doc.get(name) or []
    if not isinstance(value, list):
        raise _fail(f"'{name}' must be a list")
    return [_address(v, name) or {} for v in value]


def _refs(doc: dict[str, Any]) -> list[dict[str, str]]:
    value = doc.get("people") or []
    if not isinstance(value, list):
        raise _fail("'people' must be a list")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise _fail("each of 'people' needs a string 'id'")
        out.append({k: _text(item, k) for k in ("id", "kind", "name", "email")})
    return out


def body_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ApiError(400, "badRequest", "the body must be a JSON object")
    return data


def person(doc: dict[str, Any]) -> dict[str, Any]:
    kind = _text(doc, "kind", "contact")
    if kind not in PERSON_KINDS:
        raise _fail(f"'kind' must be one of {', '.join(PERSON_KINDS)}")
    emails = _texts(doc, "emails")
    if len(emails) > MAX_EMAILS:
        raise _fail(f"a person has at most {MAX_EMAILS} e-mail addresses", "tooManyEmails")
    postal = doc.get("businessAddress") or {}
    if not isinstance(postal, dict):
        raise _fail("'businessAddress' must be an object")
    out: dict[str, Any] = {name: _text(doc, name) for name in _TEXT_FIELDS}
    out.update(
        kind=kind,
        owner=_text(doc, "owner"),
        emails=emails,
        businessPhones=_texts(doc, "businessPhones"),
        businessAddress={name: _text(postal, name) for name in _POSTAL},
    )
    return out


def journal(doc: dict[str, Any]) -> dict[str, Any]:
    direction = _text(doc, "direction", "inbound")
    if direction not in ("inbound", "outbound"):
        raise _fail("'direction' must be inbound or outbound")
    attachments = doc.get("attachments") or []
    if not isinstance(attachments, list) or not all(
        isinstance(a, dict) and isinstance(a.get("name"), str) and isinstance(a.get("size"), int)
        for a in attachments
    ):
        raise _fail("'attachments' must be a list of {name, size}")
    return {
        "subject": _text(doc, "subject"),
        "body": _text(doc, "body"),
        "direction": direction,
        "sender": _address(doc.get("sender"), "sender"),
        "to": _addresses(doc, "to"),
        "cc": _addresses(doc, "cc"),
        "sentAt": _instant(doc, "sentAt"),
        "receivedAt": _instant(doc, "receivedAt"),
        "conversationId": _text(doc, "conversationId"),
        "attachments": [{"name": a["name"], "size": a["size"]} for a in attachments],
        "owner": _text(doc, "owner"),
        "seenBy": _texts(doc, "seenBy"),
        "people": _refs(doc),
    }


def appointment(doc: dict[str, Any]) -> dict[str, Any]:
    start = _instant(doc, "start", required=True)
    end = _instant(doc, "end", required=True)
    assert start is not None and end is not None
    if datetime.fromisoformat(end) < datetime.fromisoformat(start):
        raise _fail("'end' is before 'start'", "endBeforeStart")
    attendees = doc.get("attendees") or []
    if not isinstance(attendees, list) or not all(isinstance(a, dict) for a in attendees):
        raise _fail("'attendees' must be a list of objects")
    return {
        "subject": _text(doc, "subject"),
        "start": start,
        "end": end,
        "isAllDay": bool(doc.get("isAllDay", False)),
        "startDate": _day(doc, "startDate"),
        "endDate": _day(doc, "endDate"),
        "location": _text(doc, "location"),
        "organizer": _address(doc.get("organizer"), "organizer"),
        "attendees": [
            {
                "address": _address(a.get("address"), "attendees") or {},
                "type": _text(a, "type", "required"),
                "response": _text(a, "response", "none"),
            }
            for a in attendees
        ],
        "onlineMeetingUrl": _text(doc, "onlineMeetingUrl"),
        "body": _text(doc, "body"),
        "owner": _text(doc, "owner"),
        "seenBy": _texts(doc, "seenBy"),
        "people": _refs(doc),
        "seriesKey": _text(doc, "seriesKey"),
        "cancelled": bool(doc.get("cancelled", False)),
    }


def task(doc: dict[str, Any]) -> dict[str, Any]:
    status = _text(doc, "status", "notStarted")
    if status not in TASK_STATUS:
        raise _fail(f"'status' must be one of {', '.join(TASK_STATUS)}")
    importance = _text(doc, "importance", "normal")
    if importance not in TASK_IMPORTANCE:
        raise _fail(f"'importance' must be one of {', '.join(TASK_IMPORTANCE)}")
    title = _text(doc, "title")
    if len(title) > MAX_TITLE:
        raise _fail(f"'title' is longer than {MAX_TITLE} characters", "titleTooLong")
    return {
        "title": title,
        "body": _text(doc, "body"),
        "due": _day(doc, "due"),
        "reminder": _instant(doc, "reminder"),
        "importance": importance,
        "status": status,
        "completed": _day(doc, "completed"),
        "categories": _texts(doc, "categories"),
        "regarding": _text(doc, "regarding"),
        "owner": _text(doc, "owner"),
    }
