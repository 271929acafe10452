"""The plain HTML page at `/`: people, journals (with linked people and who saw them), appointments.
Every value is escaped."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from typing import Any

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5rem}table{border-collapse:collapse;margin-bottom:2rem}"
    "td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}"
    "td{max-width:24rem;overflow-wrap:anywhere}th{white-space:nowrap}"
    ".cancelled{text-decoration:line-through;color:#777}"
)
_PEOPLE = ["id", "kind", "name", "e-mails", "company", "owner", "key"]
_JOURNALS = ["key", "subject", "direction", "sent", "owner", "seen by", "linked people"]
_APPOINTMENTS = ["key", "subject", "start", "end", "location", "owner", "seen by", "linked people", "state"]


def _table(title: str, headers: Sequence[str], rows: Iterable[tuple[str, Sequence[str]]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        f'<tr class="{escape(css)}">' + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"
        for css, cells in rows
    )
    return f"<h2>{escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def _when(value: str | None) -> str:
    """An RFC 3339 time as `2024-05-06 09:30 +00:00` (the page is for people)."""
    if not value:
        return ""
    moment = datetime.fromisoformat(value)
    return moment.strftime("%Y-%m-%d %H:%M ") + moment.isoformat()[-6:]


def _lines(values: Iterable[str]) -> str:
    return "<br>".join(escape(v) for v in values)


def _linked(people: list[dict[str, Any]]) -> str:
    return _lines(f"{p.get('name') or p['id']} <{p.get('email', '')}> ({p['id']})" for p in people)


def _person(p: dict[str, Any]) -> tuple[str, list[str]]:
    name = p.get("displayName") or " ".join(x for x in (p.get("givenName"), p.get("surname")) if x)
    texts = [p["id"], p["kind"], name]
    return "", [
        *map(escape, texts),
        _lines(p["emails"]),
        escape(p["company"]),
        escape(p["owner"]),
        escape(p.get("key") or ""),
    ]


def _journal(j: dict[str, Any]) -> tuple[str, list[str]]:
    texts = [j["key"], j["subject"], j["direction"], _when(j["sentAt"] or j["receivedAt"]), j["owner"]]
    return "", [*map(escape, texts), _lines(j["seenBy"]), _linked(j["people"])]


def _appointment(a: dict[str, Any]) -> tuple[str, list[str]]:
    state = "cancelled" if a["cancelled"] else ""
    texts = [
        a.get("key") or f"(made in the CRM) {a['id']}",
        a["subject"],
        _when(a["start"]),
        _when(a["end"]),
        a["location"],
        a["owner"],
    ]
    return state, [*map(escape, texts), _lines(a["seenBy"]), _linked(a["people"]), state]


def render(
    people: list[dict[str, Any]], journals: list[dict[str, Any]], appointments: list[dict[str, Any]]
) -> str:
    head = f"<meta charset='utf-8'><title>Reference CRM</title><style>{_STYLE}</style>"
    return (
        f"<!doctype html><html><head>{head}</head><body><h1>Reference CRM</h1>"
        + _table(f"People ({len(people)})", _PEOPLE, map(_person, people))
        + _table(f"Journals ({len(journals)})", _JOURNALS, map(_journal, journals))
        + _table(f"Appointments ({len(appointments)})", _APPOINTMENTS, map(_appointment, appointments))
        + "</body></html>"
    )
