"""The typed parts of cursors, links and key rows, to and from the JSON of their `Extra` column.

The JSON names are the ones rows have always had, so rows written by earlier versions read as they
are (tests/contract/test_state_port.py holds rows written by the version before typed state). A value
of the wrong type in a row reads as absent rather than failing the whole row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import date, datetime
from typing import Any

from shared.model import (
    Backfill,
    CalendarProgress,
    ContactFields,
    ContactLink,
    ContactsProgress,
    Cursor,
    EventLink,
    Held,
    KeyRecord,
    Link,
    MailProgress,
    PendingWrite,
    PersonRef,
    PostalAddress,
    PushLink,
    TaskFields,
    TaskImportance,
    TaskLink,
    TaskPendingWrite,
    TasksProgress,
    TaskStatus,
)

Json = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Reading loose JSON


def _str(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    return value if isinstance(value, str) else ""


def _bool(data: Mapping[str, Any], name: str) -> bool:
    return data.get(name) is True


def _int(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _time(data: Mapping[str, Any], name: str) -> datetime | None:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _map(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name)
    return value if isinstance(value, Mapping) else {}


def _totals(value: Any) -> tuple[dict[str, int], list[str]]:
    """Running totals as whole numbers, and a note for each value that is not one (an admin who edited
    the row by hand, a bug): the status page shows everyone still, and says what it left out."""
    if not isinstance(value, Mapping):
        return {}, [f"totals are not a mapping ({_shown(value)}), left out"]
    totals: dict[str, int] = {}
    notes: list[str] = []
    for name, count in value.items():
        if isinstance(count, int) and not isinstance(count, bool):
            totals[str(name)] = count
        else:
            notes.append(f"total {_shown(name)} is not a whole number ({_shown(count)}), left out")
    return totals, notes


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _compact(data: Json) -> Json:
    """Only what is set: a row holds the keys its stream uses."""
    return {k: v for k, v in data.items() if not (v is None or v is False or v == "" or v == {} or v == [])}


# ---------------------------------------------------------------------------------------------
# Cursors


def cursor_extra(stream: str, cursor: Cursor) -> Json:
    """The Extra column of a cursor of `stream`: the common keys and its own kind's."""
    kind = stream.partition(":")[0]
    common: Json = {
        "totals": dict(cursor.totals),
        "lastPageUtc": _iso(cursor.last_page),
        "crmCursor": cursor.crm_cursor,
    }
    own: Json = {}
    if kind == "mail":
        mail, backfill = cursor.mail, cursor.mail.backfill
        listing = (
            {"link": backfill.link, "since": _iso(backfill.since), "until": _iso(backfill.until)}
            if backfill
            else None
        )
        own = {
            "backfill": _compact(listing) if listing else None,
            "roundFiltered": mail.round_filtered,
            "roundItems": mail.round_items if mail.round_filtered else None,
            "roundOldest": _iso(mail.round_oldest),
        }
    elif kind == "calendar":
        calendar = cursor.calendar
        own = {
            "round": calendar.round_id,
            "reconciledRound": calendar.reconciled_round,
            "seriesCheckedUtc": _iso(calendar.series_checked),
            "seriesLinked": calendar.series_linked,
        }
    elif kind == "contacts":
        held = cursor.contacts.held
        own = {
            "folderId": cursor.contacts.folder_id,
            "folderName": cursor.contacts.folder_name,
            "held": {"since": held.since.isoformat(), "changes": held.changes} if held else None,
        }
    elif kind == "tasks":
        held = cursor.tasks.held
        own = {
            "listId": cursor.tasks.list_id,
            "listName": cursor.tasks.list_name,
            "held": {"since": held.since.isoformat(), "changes": held.changes} if held else None,
        }
    return _compact({**common, **own})


def cursor_parts(stream: str, extra: Mapping[str, Any]) -> Json:
    """The typed fields of a cursor of `stream` from its Extra column."""
    kind = stream.partition(":")[0]
    totals, unreadable = _totals(extra.get("totals", {}))
    parts: Json = {
        "totals": totals,
        "last_page": _time(extra, "lastPageUtc"),
        "crm_cursor": _str(extra, "crmCursor"),
        "unreadable": tuple(unreadable),
    }
    if kind == "mail":
        raw = _map(extra, "backfill")
        since = _time(raw, "since")
        parts["mail"] = MailProgress(
            backfill=Backfill(since, _time(raw, "until"), _str(raw, "link")) if since else None,
            round_filtered=_bool(extra, "roundFiltered"),
            round_items=_int(extra, "roundItems") or 0,
            round_oldest=_time(extra, "roundOldest"),
        )
    elif kind == "calendar":
        parts["calendar"] = CalendarProgress(
            round_id=_str(extra, "round"),
            reconciled_round=_str(extra, "reconciledRound"),
            series_checked=_time(extra, "seriesCheckedUtc"),
            series_linked=_int(extra, "seriesLinked"),
        )
    elif kind == "contacts":
        raw = _map(extra, "held")
        since = _time(raw, "since")
        parts["contacts"] = ContactsProgress(
            folder_id=_str(extra, "folderId"),
            folder_name=_str(extra, "folderName"),
            held=Held(since, _int(raw, "changes") or 0) if since else None,
        )
    elif kind == "tasks":
        raw = _map(extra, "held")
        since = _time(raw, "since")
        parts["tasks"] = TasksProgress(
            list_id=_str(extra, "listId"),
            list_name=_str(extra, "listName"),
            held=Held(since, _int(raw, "changes") or 0) if since else None,
        )
    return parts


# ---------------------------------------------------------------------------------------------
# Links


def fields_json(fields: ContactFields) -> Json:
    return asdict(fields)


def fields_from(data: Mapping[str, Any]) -> ContactFields:
    postal = _map(data, "business_address")
    return ContactFields(
        given_name=_str(data, "given_name"),
        surname=_str(data, "surname"),
        display_name=_str(data, "display_name"),
        emails=tuple(str(e) for e in data.get("emails") or () if isinstance(e, str)),
        business_phones=tuple(str(p) for p in data.get("business_phones") or () if isinstance(p, str)),
        mobile_phone=_str(data, "mobile_phone"),
        company=_str(data, "company"),
        job_title=_str(data, "job_title"),
        department=_str(data, "department"),
        business_address=PostalAddress(**{k: _str(postal, k) for k in PostalAddress.__dataclass_fields__}),
        notes=_str(data, "notes"),
    )


def task_json(fields: TaskFields) -> Json:
    return {
        "title": fields.title,
        "body": fields.body,
        "due": fields.due.isoformat() if fields.due else None,
        "reminder": _iso(fields.reminder),
        "importance": fields.importance.value,
        "status": fields.status.value,
        "completed": fields.completed.isoformat() if fields.completed else None,
        "categories": list(fields.categories),
    }


def _day(data: Mapping[str, Any], name: str) -> date | None:
    value = data.get(name)
    try:
        return date.fromisoformat(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


def task_from(data: Mapping[str, Any]) -> TaskFields:
    importance, status = _str(data, "importance"), _str(data, "status")
    return TaskFields(
        title=_str(data, "title"),
        body=_str(data, "body"),
        due=_day(data, "due"),
        reminder=_time(data, "reminder"),
        importance=TaskImportance(importance)
        if importance in TaskImportance._value2member_map_
        else TaskImportance.NORMAL,
        status=TaskStatus(status) if status in TaskStatus._value2member_map_ else TaskStatus.NOT_STARTED,
        completed=_day(data, "completed"),
        categories=tuple(str(c) for c in data.get("categories") or () if isinstance(c, str)),
    )


def link_extra(link: Link) -> Json:
    event, push, contact, task = link.event, link.push, link.contact, link.task
    pending = contact.pending_write
    task_pending = task.pending_write
    return _compact(
        {
            "series": event.series,
            "start": _iso(event.start),
            "end": _iso(event.end),
            "round": event.round_id,
            "kind": "seriesMaster" if event.master else "",
            "origin": "crm" if event.from_crm else "",
            "crmId": event.crm_id,
            "pendingKey": event.pending_key,
            "eventId": push.event_id,
            "pending": push.pending,
            "cancelled": push.cancelled,
            "base": fields_json(contact.base) if contact.base is not None else None,
            "crmVersion": contact.crm_version,
            "pendingWrite": {
                "side": pending.side,
                "crm": pending.crm,
                "local": pending.local,
                "changeKey": pending.change_key,
                "base": fields_json(pending.base),
            }
            if pending
            else None,
            "removing": contact.removing,
            "taskBase": task_json(task.base) if task.base is not None else None,
            "taskPendingWrite": {
                "side": task_pending.side,
                "crm": task_pending.crm,
                "local": task_pending.local,
                "etag": task_pending.etag,
                "base": task_json(task_pending.base),
            }
            if task_pending
            else None,
            "taskRemoving": task.removing,
        }
    )


def link_parts(extra: Mapping[str, Any]) -> Json:
    """The typed parts of a link from its Extra column (each stream's keys are its own)."""
    raw = _map(extra, "pendingWrite")
    task_raw = _map(extra, "taskPendingWrite")
    return {
        "event": EventLink(
            series=_str(extra, "series"),
            start=_time(extra, "start"),
            end=_time(extra, "end"),
            round_id=_str(extra, "round"),
            master=_str(extra, "kind") == "seriesMaster",
            from_crm=_str(extra, "origin") == "crm",
            crm_id=_str(extra, "crmId"),
            pending_key=_str(extra, "pendingKey"),
        ),
        "push": PushLink(
            event_id=_str(extra, "eventId"),
            pending=_bool(extra, "pending"),
            cancelled=_bool(extra, "cancelled"),
        ),
        "contact": ContactLink(
            base=fields_from(_map(extra, "base")) if isinstance(extra.get("base"), Mapping) else None,
            crm_version=_str(extra, "crmVersion"),
            pending_write=PendingWrite(
                side=_str(raw, "side"),
                crm=_str(raw, "crm"),
                local=_str(raw, "local"),
                change_key=_str(raw, "changeKey"),
                base=fields_from(_map(raw, "base")),
            )
            if raw
            else None,
            removing=_bool(extra, "removing"),
        ),
        "task": TaskLink(
            base=task_from(_map(extra, "taskBase")) if isinstance(extra.get("taskBase"), Mapping) else None,
            pending_write=TaskPendingWrite(
                side=_str(task_raw, "side"),
                crm=_str(task_raw, "crm"),
                local=_str(task_raw, "local"),
                etag=_str(task_raw, "etag"),
                base=task_from(_map(task_raw, "base")),
            )
            if task_raw
            else None,
            removing=_bool(extra, "taskRemoving"),
        ),
    }


# ---------------------------------------------------------------------------------------------
# Key rows


def key_extra(record: KeyRecord) -> Json:
    return _compact(
        {
            "owner": record.owner,
            "direction": record.direction,
            "organizer": record.organizer,
            "cancelled": record.cancelled,
            "identity": record.identity,
            "people": {p.id: {"kind": p.kind, "name": p.name, "email": p.email} for p in record.people},
        }
    )


def key_parts(people_ids: tuple[str, ...], extra: Mapping[str, Any]) -> Json:
    info = _map(extra, "people")
    people = tuple(
        PersonRef(
            id=pid,
            kind=_str(_map(info, pid), "kind") or "contact",
            name=_str(_map(info, pid), "name"),
            email=_str(_map(info, pid), "email"),
        )
        for pid in people_ids
    )
    return {
        "people": people,
        "owner": _str(extra, "owner"),
        "direction": _str(extra, "direction"),
        "organizer": _str(extra, "organizer"),
        "cancelled": _bool(extra, "cancelled"),
        "identity": _str(extra, "identity"),
    }
