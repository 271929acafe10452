"""Start the Dataverse stand-in on a free loopback port, over HTTPS with a local test CA, for tests, the
demo and the benchmarks; act as a Dynamics 365 user through its Web API; drive its control API.

with dataverse_stand_in() as dv:
    dv.url                      # https://127.0.0.1:PORT (the environment URL, as https://org.crm.dynamics.com)
    dv.ca_path                  # the test CA to trust (httpx: verify=dv.ssl_context())
    ann = dv.add_user("ann@contoso.com")              # a systemuser
    bob = dv.add_contact("bob@fabrikam.example", name="Bob Buyer", owner=ann)
    dv.fault(429, retry_after="2", path_contains="$batch")
    dv.stats()["requests"]

The helpers that act as a user go through the Web API itself (a bearer token is all it asks on
loopback); the control API (`/_dataverse/...`) does what Dataverse cannot.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from emulators.process import free_port, python_module, running

API = "/api/data/v9.2/"
USER_TOKEN = "a-dynamics-user"  # the token the helpers present (any token is accepted on loopback)


@dataclass
class DataverseStandIn:
    port: int
    ca_path: Path

    def __post_init__(self) -> None:
        self._http = httpx.Client(base_url=self.url, verify=self.ssl_context(), timeout=60.0)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.url + API

    @property
    def base_url(self) -> str:  # as the other CRMs' launchers name their API's address
        return self.api_url

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_path))

    def close(self) -> None:
        self._http.close()

    # -- the Web API, as a Dynamics user ---------------------------------------------------------

    def web(self, method: str, path: str, body: Any = None, **headers: str) -> httpx.Response:
        head = {"Authorization": f"Bearer {USER_TOKEN}", "OData-Version": "4.0", "Accept": "application/json"}
        head.update({k.replace("_", "-"): v for k, v in headers.items()})
        return self._http.request(method, API + path, json=body, headers=head)

    def _ok(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise RuntimeError(
                f"Web API {response.request.method} answered {response.status_code}: {response.text}"
            )
        return response.json() if response.content else None

    def _created(self, path: str, body: dict[str, Any]) -> str:
        response = self.web("POST", path, body)
        self._ok(response)
        return response.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")

    def add_user(self, email: str, name: str = "") -> str:
        """A systemuser (a Dynamics 365 user) with this primary e-mail and user name; returns its id."""
        existing = self.rows("systemusers", f"internalemailaddress eq '{_quote(email)}'")
        if existing:
            return str(existing[0]["systemuserid"])
        first, _, last = (name or email.split("@")[0]).partition(" ")
        body = {
            "firstname": first,
            "lastname": last or first,
            "internalemailaddress": email,
            "domainname": email,
            "accessmode": 0,
            "isdisabled": False,
        }
        return self._created("systemusers", body)

    def add_contact(
        self, emails: str | Sequence[str] = (), *, name: str = "", owner: str = "", **columns: Any
    ) -> str:
        """A contact made by a Dynamics user; `owner` is a systemuser id or e-mail (made if missing)."""
        addresses = [emails] if isinstance(emails, str) else list(emails)
        first, _, last = (name or "No Name").partition(" ")
        body: dict[str, Any] = {"firstname": first, "lastname": last or None, **columns}
        for n, address in enumerate(addresses[:3], start=1):
            body[f"emailaddress{n}"] = address
        if owner:
            body["ownerid@odata.bind"] = f"/systemusers({self._user(owner)})"
        return self._created("contacts", body)

    def add_contacts(self, people: Sequence[tuple[str, str]], *, owner: str = "") -> None:
        """Many contacts ((e-mail, name) each) in `$batch` requests of 500, as a data import would."""
        owner_id = self._user(owner) if owner else ""
        for start in range(0, len(people), 500):
            parts = []
            for email, name in people[start : start + 500]:
                first, _, last = name.partition(" ")
                body: dict[str, Any] = {"firstname": first, "lastname": last or None, "emailaddress1": email}
                if owner_id:
                    body["ownerid@odata.bind"] = f"/systemusers({owner_id})"
                parts.append(
                    "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                    f"POST {self.api_url}contacts HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
                    f"{json.dumps(body)}\r\n"
                )
            content = "".join(f"--import\r\n{p}" for p in parts) + "--import--\r\n"
            head = {
                "Content-Type": "multipart/mixed; boundary=import",
                "Authorization": f"Bearer {USER_TOKEN}",
            }
            response = self._http.post(API + "$batch", content=content.encode(), headers=head)
            if response.status_code != 200 or "HTTP/1.1 4" in response.text:
                raise RuntimeError(f"contact import failed: {response.status_code} {response.text[:500]}")

    def add_person(self, email: str, *, name: str = "", owner: str = "") -> str:
        """A contact (the demo's `add_person`, as the other CRMs' launchers have it)."""
        return self.add_contact(email, name=name, owner=owner)

    def journals(self) -> list[dict[str, Any]]:
        """One entry per email activity, shaped like the reference CRM's `GET /_crm/journals` rows
        (key, subject, direction, owner, seenBy, receivedAt, sender, people), from its columns and
        the sync's details."""
        out = []
        for row in self.rows("emails"):
            details = json.loads(row.get("crmsync_outlookdetails") or "{}")
            sender = details.get("from") or [""]
            out.append(
                {
                    "key": details.get("key") or row.get("messageid"),
                    "subject": row.get("subject") or "",
                    "direction": "outbound" if row.get("directioncode") else "inbound",
                    "owner": details.get("owner", ""),
                    "seenBy": details.get("seen", []),
                    "receivedAt": details.get("received") or row.get("actualend"),
                    "sender": {"address": sender[0]},
                    "people": [
                        {"id": i, "kind": k, "name": n, "email": e}
                        for i, k, n, e in details.get("people", [])
                    ],
                }
            )
        return out

    def add_account(self, name: str, email: str = "") -> str:
        return self._created("accounts", {"name": name, "emailaddress1": email or None})

    def update(self, entity_set: str, row_id: str, body: dict[str, Any]) -> None:
        self._ok(self.web("PATCH", f"{entity_set}({row_id})", body, If_Match="*"))

    def reassign(self, entity_set: str, row_id: str, owner: str) -> None:
        self.update(entity_set, row_id, {"ownerid@odata.bind": f"/systemusers({self._user(owner)})"})

    def delete(self, entity_set: str, row_id: str) -> None:
        self._ok(self.web("DELETE", f"{entity_set}({row_id})"))

    def add_appointment(
        self, *, owner: str, subject: str, start: datetime, end: datetime, **columns: Any
    ) -> str:
        """An appointment made in Dynamics (no Outlook key)."""
        body = {
            "subject": subject,
            "scheduledstart": _instant(start),
            "scheduledend": _instant(end),
            **columns,
            "ownerid@odata.bind": f"/systemusers({self._user(owner)})",
        }
        return self._created("appointments", body)

    def add_email(
        self, message_id: str, *, owner: str, subject: str = "Tracked by Dynamics", **columns: Any
    ) -> str:
        """An email activity as Dynamics 365's own tracking makes it (server-side sync, App for Outlook)."""
        body = {
            "subject": subject,
            "messageid": message_id,
            "directioncode": False,
            "description": "<p>tracked in Dynamics</p>",
            **columns,
            "ownerid@odata.bind": f"/systemusers({self._user(owner)})",
        }
        email_id = self._created("emails", body)
        self.update("emails", email_id, {"statecode": 1, "statuscode": 4})
        return email_id

    def rows(
        self, entity_set: str, filter: str = "", select: str = "", expand: str = ""
    ) -> list[dict[str, Any]]:
        """Every row of a collection matching the filter (all pages)."""
        params: dict[str, str] | None = {
            k: v for k, v in (("$filter", filter), ("$select", select), ("$expand", expand)) if v
        }
        out: list[dict[str, Any]] = []
        url = API + entity_set
        head = {"Authorization": f"Bearer {USER_TOKEN}", "OData-Version": "4.0"}
        while url:
            data = self._ok(self._http.get(url, params=params, headers=head))
            out += data["value"]
            url, params = (
                data.get("@odata.nextLink", ""),
                None,
            )  # the link as given: params would replace its query
        return out

    def row(self, entity_set: str, row_id: str, select: str = "", expand: str = "") -> dict[str, Any] | None:
        params = "&".join(f"{k}={v}" for k, v in (("$select", select), ("$expand", expand)) if v)
        response = self.web("GET", f"{entity_set}({row_id})" + (f"?{params}" if params else ""))
        return None if response.status_code == 404 else self._ok(response)

    def _user(self, owner: str) -> str:
        return owner if "@" not in owner else self.add_user(owner)

    # -- the control API -------------------------------------------------------------------------

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        response = self._http.request(method, "/_dataverse" + path, json=body)
        if response.status_code >= 400:
            raise RuntimeError(f"control {method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def fault(self, status: int, *, count: int | None = 1, **options: Any) -> None:
        """options: method, path_contains, body_contains, retry_after, error_code, message,
        apply_then_fail, delay_seconds, scope ("request" or "operation": one operation inside a $batch)."""
        body = {_camel(k): v for k, v in options.items()}
        self._control("POST", "/faults", {"status": status, "count": count, **body})

    def clear_faults(self) -> None:
        self._control("DELETE", "/faults")

    def stats(self) -> dict[str, Any]:
        return dict(self._control("GET", "/stats"))

    def clear_stats(self) -> None:
        self._control("DELETE", "/stats")

    def requests(self) -> list[dict[str, Any]]:
        return list(self._control("GET", "/requests")["value"])

    def settings(self, **changes: Any) -> dict[str, Any]:
        """limits={requests, executionMs, windowSeconds, concurrency}, latencyMs, pageCap,
        rejectDuplicateMessageId."""
        if changes:
            return dict(self._control("PATCH", "/settings", {_camel(k): v for k, v in changes.items()}))
        return dict(self._control("GET", "/settings"))

    def expire_tokens(self) -> None:
        self._control("POST", "/expire-tokens")

    def deny_token(self, token: str) -> None:
        self._control("POST", "/deny-token", {"token": token})

    def reset(self) -> None:
        self._control("POST", "/reset")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _quote(value: str) -> str:
    return value.replace("'", "''")


def _instant(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def dataverse_stand_in(
    *, db: str | Path | None = None, log: Path | None = None, page_cap: int = 5000, timeout: float = 30.0
) -> Iterator[DataverseStandIn]:
    """Run `python -m emulators.dataverse` over HTTPS on a free port until the block ends."""
    from emulators.dataverse.__main__ import make_certificates

    with tempfile.TemporaryDirectory(prefix="dataverse-") as tmp:
        chain, authority = make_certificates(Path(tmp))
        port = free_port()
        args = python_module(
            "emulators.dataverse",
            "--port",
            str(port),
            "--db",
            str(db or ":memory:"),
            "--cert",
            str(chain),
            "--page-cap",
            str(page_cap),
        )
        with running(args, ports=(port,), log=log, timeout=timeout):
            stand_in = DataverseStandIn(port, authority)
            try:
                yield stand_in
            finally:
                stand_in.close()
