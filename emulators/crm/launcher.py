"""Start the reference CRM on a free loopback port and drive its control API from tests, the demo
and the benchmarks.

with reference_crm() as crm:
    person_id = crm.add_person("ann@example.com", name="Ann Lee", owner="alice@contoso.com")
    connector = crm.connector()            # a ReferenceCrmConnector pointed at it
    crm.fault(503, count=2, path_contains="/journals/")
    crm.stats()["byRoute"]["PUT /journals/{key}"]

Control calls go to `/_crm/...`, so they are never counted in `stats()` nor hit by faults.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from emulators.process import free_port, python_module, running
from shared.crm.reference import ReferenceCrmConnector


def _instant(value: str | datetime) -> str:
    return value.isoformat() if isinstance(value, datetime) else value


class ReferenceCrm:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token
        self._http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def _send(self, method: str, path: str, json: Any = None, params: dict[str, str] | None = None) -> Any:
        response = self._http.request(method, path, json=json, params=params)
        response.raise_for_status()
        return response.json() if response.content else None

    # -- what a CRM user does ---------------------------------------------------------------------

    def add_person(
        self,
        emails: str | Sequence[str] = (),
        *,
        name: str = "",
        owner: str = "",
        kind: str = "contact",
        **fields: Any,
    ) -> str:
        """Add a person (kind contact, lead, candidate or company); `fields` are API names
        (givenName, company, businessPhones ...). Returns its id."""
        doc = {"kind": kind, "owner": owner, "displayName": name, **fields}
        doc["emails"] = [emails] if isinstance(emails, str) else list(emails)
        return str(self._send("POST", "/_crm/people", doc)["refs"][0]["id"])

    def add_people(self, docs: Sequence[dict[str, Any]]) -> list[str]:
        return [ref["id"] for ref in self._send("POST", "/_crm/people", {"people": list(docs)})["refs"]]

    def update_person(self, person_id: str, **fields: Any) -> None:
        """Edit fields (API names); `owner=` reassigns the person."""
        self._send("PATCH", f"/_crm/people/{person_id}", fields)

    def delete_person(self, person_id: str) -> None:
        self._send("DELETE", f"/_crm/people/{person_id}")

    def create_appointment(
        self, *, owner: str, subject: str, start: str | datetime, end: str | datetime, **fields: Any
    ) -> str:
        """An appointment made in the CRM (no key); times are aware datetimes or RFC 3339 strings;
        `fields` are API names (location, body, isAllDay ...). Returns its id."""
        doc = {"owner": owner, "subject": subject, "start": _instant(start), "end": _instant(end), **fields}
        return str(self._send("POST", "/_crm/appointments", doc)["id"])

    def update_appointment(self, appointment_id: str, **fields: Any) -> None:
        self._send("PATCH", f"/_crm/appointments/{appointment_id}", fields)

    def add_task(self, *, owner: str, title: str, **fields: Any) -> str:
        """A task made in the CRM (no key); `fields` are API names (due, status, regarding ...)."""
        return str(self._send("POST", "/_crm/tasks", {"owner": owner, "title": title, **fields})["id"])

    def update_task(self, task_id: str, **fields: Any) -> None:
        """Edit fields (API names); `owner=` reassigns the task."""
        self._send("PATCH", f"/_crm/tasks/{task_id}", fields)

    def delete_task(self, task_id: str) -> None:
        self._send("DELETE", f"/_crm/tasks/{task_id}")

    # -- what the CRM holds ------------------------------------------------------------------------

    def people(self, owner: str | None = None) -> list[dict[str, Any]]:
        return list(self._send("GET", "/_crm/people", params={"owner": owner} if owner else None)["people"])

    def contacts(self, owner: str | None = None) -> list[dict[str, Any]]:
        return [p for p in self.people(owner) if p["kind"] == "contact"]

    def journals(self, owner: str | None = None) -> list[dict[str, Any]]:
        return list(
            self._send("GET", "/_crm/journals", params={"owner": owner} if owner else None)["journals"]
        )

    def appointments(self, owner: str | None = None) -> list[dict[str, Any]]:
        params = {"owner": owner} if owner else None
        return list(self._send("GET", "/_crm/appointments", params=params)["appointments"])

    def tasks(self, owner: str | None = None) -> list[dict[str, Any]]:
        return list(self._send("GET", "/_crm/tasks", params={"owner": owner} if owner else None)["tasks"])

    # -- faults and counts -------------------------------------------------------------------------

    def fault(
        self,
        status: int | None = None,
        *,
        count: int | None = 1,
        method: str = "",
        path_contains: str = "",
        retry_after: str | float | None = None,
        delay_seconds: float = 0.0,
        apply_then_fail: bool = False,
        message: str = "",
    ) -> None:
        """The next `count` matching API requests (None: all, until cleared) wait `delay_seconds`, then
        answer `status` (with Retry-After if given); `apply_then_fail` applies the write first."""
        self._send(
            "POST",
            "/_crm/faults",
            {
                "status": status,
                "count": count,
                "method": method,
                "pathContains": path_contains,
                "retryAfter": None if retry_after is None else str(retry_after),
                "delaySeconds": delay_seconds,
                "applyThenFail": apply_then_fail,
                "message": message,
            },
        )

    def clear_faults(self) -> None:
        self._send("DELETE", "/_crm/faults")

    def stats(self) -> dict[str, Any]:
        """{"total": n, "byRoute": {"PUT /journals/{key}": n, ...}, "byStatus": {"200": n, ...},
        "journalWrites": n} (journals sent to be written: one per PUT, one per item of a bulk write)"""
        return dict(self._send("GET", "/_crm/stats"))

    def clear_stats(self) -> None:
        self._send("DELETE", "/_crm/stats")

    def reset(self) -> None:
        """Forget every record, fault and count."""
        self._send("POST", "/_crm/reset")

    def connector(self, auth_scheme: str = "bearer", **options: Any) -> ReferenceCrmConnector:
        return ReferenceCrmConnector(self.base_url, self.token, auth_scheme, **options)

    def close(self) -> None:
        self._http.close()


@contextlib.contextmanager
def reference_crm(
    *, token: str | None = None, db: str | Path | None = None, log: Path | None = None, timeout: float = 30.0
) -> Iterator[ReferenceCrm]:
    """Run `python -m emulators.crm` on a free port until the block ends."""
    port = free_port()
    token = token or secrets.token_urlsafe(24)
    args = python_module("emulators.crm", "--port", str(port), "--db", str(db or ":memory:"))
    base_url = f"http://127.0.0.1:{port}"
    with running(
        args, ports=(port,), ready_url=f"{base_url}/", env={"CRM_TOKEN": token}, log=log, timeout=timeout
    ):
        crm = ReferenceCrm(base_url, token)
        try:
            yield crm
        finally:
            crm.close()
