"""The admin status page: one HTML table of every user's sync state (escaped throughout)."""

from __future__ import annotations

from datetime import datetime
from html import escape

from shared.admin import UserStatus

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.4rem .6rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}.ok{color:#137333}.error{color:#b3261e;font-weight:600}
.throttled,.review{color:#b06000}small{color:#666}
"""


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def render(statuses: list[UserStatus], now: datetime) -> str:
    rows = []
    for s in statuses:
        totals = s.totals()
        streams = (
            "<br>".join(f"{escape(st.stream)}: {escape(st.phase)}" for st in s.streams)
            or "<small>none</small>"
        )
        rows.append(
            "<tr data-user='{user}'><td>{user}</td><td>{enabled}</td><td class='{cls}'>{state}</td>"
            "<td>{last}</td><td>{streams}</td><td>{journaled}</td><td>{skipped}</td><td>{failed}</td><td>{issues}</td>"
            "<td>{error}</td></tr>".format(
                user=escape(s.upn),
                enabled="yes" if s.enabled else "no",
                cls=escape(s.state),
                state=escape(s.state),
                last=escape(_ago(s.lag_seconds(now))),
                streams=streams,
                journaled=totals.get("journaled", 0),
                skipped=totals.get("skipped", 0),
                failed=totals.get("failed", 0),
                issues=s.open_issues,
                error=escape(s.last_error or s.warnings),
            )
        )
    body = "\n".join(rows) or "<tr><td colspan='10'>No users in SyncUsers yet.</td></tr>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Outlook ↔ CRM sync: status</title>"
        f"<style>{_STYLE}</style></head><body><h1>Outlook ↔ CRM sync</h1>"
        f"<p><small>{len(statuses)} user(s) · generated {now:%Y-%m-%d %H:%M:%S} UTC</small></p>"
        "<table id='users'><thead><tr><th>User</th><th>Enabled</th><th>State</th><th>Last sync</th>"
        "<th>Streams</th><th>Journaled</th><th>Skipped</th><th>Failed</th><th>Open issues</th>"
        "<th>Last error / warnings</th></tr>"
        f"</thead><tbody>{body}</tbody></table></body></html>"
    )
