"""The admin status page: one HTML table of every user's sync state (escaped throughout).

Users who need attention come first (error, review, throttled), then the rest by name; a summary
line counts users per state. Every value that comes from storage (user names, error texts, stream
names) is HTML-escaped, and the page has no script, so an error message can never run in an admin's
browser. Cursors' delta links carry tokens and are never shown. A long text (an error of thousands of
characters) shows its first `SHOWN_CHARS` characters, the whole of it a click away (`<details>`), so
one row never swamps the table; stored values that could not be read are named in the row, flagged.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from html import escape

from shared.admin import UserStatus

ATTENTION = ("error", "review", "throttled")  # states shown first, in this order
REFRESH_SECONDS = 60
SHOWN_CHARS = 300  # of a long error or warning text; the rest behind "show all"

_STYLE = """
:root{--line:#e2e2e2;--muted:#666;--ok:#137333;--err:#b3261e;--warn:#8a5300}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5rem 2rem;color:#222;font-size:14px}
h1{font-size:1.4rem;margin:0 0 .3rem}
#summary{margin:.2rem 0 1rem;color:var(--muted)}
#summary .chip{display:inline-block;margin-right:.4rem;padding:.1rem .55rem;border-radius:1rem;
  background:#f1f1f1;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid var(--line);padding:.45rem .6rem;text-align:left;vertical-align:top}
th{background:#f6f6f6;font-weight:600;white-space:nowrap;position:sticky;top:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td[data-col=user]{font-weight:500;white-space:nowrap}
td[data-col=last-sync]{white-space:nowrap}
td[data-col=streams] div{white-space:nowrap}
td[data-col=error]{max-width:34rem;overflow-wrap:anywhere;font-family:ui-monospace,Consolas,monospace;
  font-size:12.5px}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:.3rem;font-weight:600;font-size:12.5px;
  background:#eee;color:#444;white-space:nowrap}
.badge.ok{background:#e6f4ea;color:var(--ok)}
.badge.error{background:#fce8e6;color:var(--err)}
.badge.throttled,.badge.review{background:#fef3e0;color:var(--warn)}
.badge.disabled{background:#f1f1f1;color:var(--muted);font-weight:400}
tr.error td{background:#fffafa}
tr.throttled td,tr.review td{background:#fffcf5}
.phase{color:var(--muted)}
.phase.up{color:var(--ok)}
.hot{color:var(--err);font-weight:600}
small,.muted{color:var(--muted)}
details summary{cursor:pointer}
details .full{max-height:20rem;overflow:auto;margin-top:.3rem;white-space:pre-wrap}
.flag{color:var(--warn);font-weight:600}
"""


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def shown_state(status: UserStatus) -> str:
    """What the State column shows: `disabled` for a user switched off, else the recorded state."""
    if not status.enabled and status.state not in ATTENTION:
        return "disabled"
    return status.state


def _order(status: UserStatus) -> tuple[int, str]:
    state = shown_state(status)
    rank = ATTENTION.index(state) if state in ATTENTION else len(ATTENTION)
    return rank, status.upn.lower()


def _streams(status: UserStatus) -> str:
    if not status.streams:
        return "<small>none</small>"
    lines = []
    for stream in status.streams:
        cls = "phase up" if stream.phase == "up to date" else "phase"
        lines.append(f"<div>{escape(stream.stream)}: <span class='{cls}'>{escape(stream.phase)}</span></div>")
    return "".join(lines)


def _text(text: str) -> str:
    """Escaped; a text longer than `SHOWN_CHARS` shows its start, the whole of it on demand."""
    if len(text) <= SHOWN_CHARS:
        return escape(text)
    return (
        f"<details><summary>{escape(text[:SHOWN_CHARS])}… <small>show all {len(text):,} characters"
        f"</small></summary><div class='full'>{escape(text)}</div></details>"
    )


def _problems(status: UserStatus) -> str:
    text = _text(status.last_error or status.warnings)
    flags = "".join(f"<div class='flag'>unreadable: {_text(note)}</div>" for note in status.unreadable)
    return text + flags


def _count(value: int, hot: bool = False) -> str:
    return f"<span class='hot'>{value}</span>" if hot and value else str(value)


def _row(status: UserStatus, now: datetime) -> str:
    totals = status.totals()
    state = shown_state(status)
    last = status.last_sync_utc
    last_title = f" title='{last:%Y-%m-%d %H:%M:%S} UTC'" if last else ""
    cells = [
        ("user", "", escape(status.upn)),
        ("enabled", "", "yes" if status.enabled else "no"),
        ("state", "", f"<span class='badge {escape(state)}'>{escape(state)}</span>"),
        ("last-sync", last_title, escape(_ago(status.lag_seconds(now)))),
        ("streams", "", _streams(status)),
        ("journaled", " class='num'", str(totals.get("journaled", 0))),
        ("skipped", " class='num'", str(totals.get("skipped", 0))),
        ("failed", " class='num'", _count(totals.get("failed", 0), hot=True)),
        ("issues", " class='num'", _count(status.open_issues, hot=True)),
        ("error", "", _problems(status)),
    ]
    tds = "".join(f"<td data-col='{name}'{attrs}>{html}</td>" for name, attrs, html in cells)
    cls, user = escape(state), escape(status.upn)
    return f"<tr class='{cls}' data-user='{user}' data-state='{cls}'>{tds}</tr>"


def _summary(statuses: list[UserStatus], now: datetime) -> str:
    counts = Counter(shown_state(s) for s in statuses)
    order = [*ATTENTION, "ok", "new", "disabled"]
    states = sorted(counts, key=lambda s: (order.index(s) if s in order else len(order), s))
    chips = "".join(f"<span class='chip'>{counts[s]} {escape(s)}</span>" for s in states)
    plural = "user" if len(statuses) == 1 else "users"
    return (
        f"<p id='summary'><span class='chip'><b>{len(statuses)} {plural}</b></span>{chips}"
        f" <small>generated {now:%Y-%m-%d %H:%M:%S} UTC · refreshes every {REFRESH_SECONDS} s</small></p>"
    )


def render(statuses: list[UserStatus], now: datetime) -> str:
    ordered = sorted(statuses, key=_order)
    body = "\n".join(_row(s, now) for s in ordered) or (
        "<tr><td colspan='10' class='muted'>No users in SyncUsers yet: add a row per user "
        "(Enabled = true) with Storage Explorer, the portal or <code>crmsync</code>.</td></tr>"
    )
    headers = "".join(
        f"<th{' class=num' if numeric else ''}>{label}</th>"
        for label, numeric in (
            ("User", False),
            ("Enabled", False),
            ("State", False),
            ("Last sync", False),
            ("Streams", False),
            ("Journaled", True),
            ("Skipped", True),
            ("Failed", True),
            ("Open issues", True),
            ("Last error / warnings", False),
        )
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>Outlook ↔ CRM sync: status</title>"
        f"<style>{_STYLE}</style></head><body><h1>Outlook ↔ CRM sync</h1>"
        f"{_summary(statuses, now)}"
        f"<table id='users'><thead><tr>{headers}</tr></thead><tbody>{body}</tbody></table></body></html>"
    )
