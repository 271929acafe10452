"""`RealWorld`: the engine model on the real stack — msgraph-sdk → the Graph emulator over HTTP, the
reference CRM server through `ReferenceCrmConnector`, `TableStateStore` on Azurite. Slower (HTTP per
step), so its profile runs fewer, shorter examples (`test_engine_model_real.py`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from emulators.azurite import AzuriteStack
from emulators.crm.launcher import ReferenceCrm
from emulators.graph.launcher import GraphEmulator
from shared.crm.reference import ReferenceCrmConnector
from shared.graph.calendar import GraphCalendar
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.contacts import GraphContacts
from shared.graph.mail import GraphMailReader
from shared.model import PUSH_TRANSACTION_PREFIX, ContactFields
from shared.state.memory import InMemoryJobQueue
from shared.state.tables import TableStateStore
from tests.integration.stack import settings_for, unique_prefix
from tests.model.world import (
    CONTACTS_FOLDER,
    GRAPH_FAULTS,
    PERSONS,
    USERS,
    AppointmentView,
    Clock,
    CrmContactView,
    JournalView,
    Template,
)

# ContactFields names -> Graph's and the reference CRM's
GRAPH_NAMES = {"given_name": "givenName", "surname": "surname", "display_name": "displayName",
               "mobile_phone": "mobilePhone", "company": "companyName", "job_title": "jobTitle",
               "department": "department"}  # fmt: skip
CRM_NAMES = {**GRAPH_NAMES, "company": "company"}
# CRM port operation -> (HTTP method, path fragment) of the reference API, for fault injection
CRM_ROUTES = {
    "upsert_contact": ("PUT", "/contacts/by-key/"), "contact_changes": ("GET", "/contacts/changes"),
    "get_contact": ("GET", "/contacts/"), "upsert_appointment": ("PUT", "/appointments/by-key/"),
    "cancel_appointment": ("POST", "/cancel"), "appointment_changes": ("GET", "/appointments/changes"),
    "find_people": ("POST", "/people/lookup"),
}  # fmt: skip
# A CRM timeout as the model means it (`MemoryWorld`: the call fails, nothing is written): the server
# answers after the connector (timeout 1.0 s) gave up, and never applies the request. A request that
# the server applied *after* the connector gave up (a body-less `POST …/cancel` would be, read or not)
# lands behind the next steps' writes: a reordering no client can defend against, not the fault the
# model injects. "ambiguous" is the one that applies and loses the answer.
TIMEOUT_STATUS = 503  # what the server answers once the connector is gone (nobody reads it)


def _graph_time(value: datetime) -> dict[str, str]:
    return {"dateTime": value.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}


def _instant(value: Any) -> datetime:
    if isinstance(value, dict):
        return datetime.fromisoformat(str(value["dateTime"]).split(".")[0] + "+00:00")
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class RealWorld:
    def __init__(self, azurite: AzuriteStack, graph: GraphEmulator, crm: ReferenceCrm) -> None:
        self.clock = Clock()
        self._graph, self._crm = graph, crm
        settings = settings_for(azurite, graph, crm)
        self.state = TableStateStore.from_connection_string(
            settings.storage_connection_string, clock=self.clock, table_prefix=unique_prefix()
        )
        self.crm = ReferenceCrmConnector(
            crm.base_url, crm.token, max_retries=1, backoff_base=0.01, backoff_max=0.05, max_retry_after=1.0,
            timeout=1.0,
        )  # fmt: skip
        self.mail = GraphMailReader(
            build_graph_client(settings), GraphCaller(sleep=self.clock.sleep), page_size=2
        )
        self.queue = InMemoryJobQueue(clock=self.clock)
        client = build_graph_client(settings)
        self.contacts = GraphContacts(client, GraphCaller(sleep=self.clock.sleep), page_size=3)
        self.calendar = GraphCalendar(client, GraphCaller(sleep=self.clock.sleep), page_size=4)
        self._folders: dict[str, str] = {}
        self._outlook = httpx.Client(
            base_url=graph.base_url,
            headers={"Authorization": "Bearer outlook", "Prefer": 'IdType="ImmutableId"'},
            timeout=30,
        )

    async def start(self) -> None:
        self._graph.control.reset(empty=True)
        self._crm.reset()
        for user in USERS:
            self._graph.control.add_user(user)
            made = self._get("POST", f"/users/{user}/contactFolders", {"displayName": CONTACTS_FOLDER})
            self._folders[user] = str(made["id"])
        for address in PERSONS:
            self._crm.add_person(address, name=address.split("@")[0], owner=USERS[0])
        await self.state.ensure_tables()

    async def close(self) -> None:
        self._outlook.close()
        await self.crm.aclose()
        await self.state.aclose()

    def deliver(self, user: str, folder: str, template: Template, categories: tuple[str, ...]) -> str:
        received = (self.clock.now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        spec: dict[str, Any] = {
            "from": {"address": template.sender}, "to": [{"address": u} for u in USERS],
            "cc": [{"address": a} for a in template.cc], "subject": template.subject,
            "bodyHtml": f"<p>{template.subject}</p>", "internetMessageId": template.imid, "folder": folder,
            "categories": list(categories), "receivedDateTime": received,
            "sentDateTime": template.sent.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }  # fmt: skip
        return str(self._graph.control.deliver(user, spec)["immutableId"])

    def _call(self, method: str, path: str, body: Any = None) -> None:
        self._outlook.request(method, path, json=body).raise_for_status()

    def set_categories(self, user: str, message_id: str, categories: tuple[str, ...]) -> None:
        self._call("PATCH", f"/users/{user}/messages/{message_id}", {"categories": list(categories)})

    def mark_read(self, user: str, message_id: str) -> None:
        self._call("PATCH", f"/users/{user}/messages/{message_id}", {"isRead": True})

    def move(self, user: str, message_id: str, folder: str) -> None:
        self._call("POST", f"/users/{user}/messages/{message_id}/move", {"destinationId": folder})

    def delete(self, user: str, message_id: str) -> None:
        self._call("DELETE", f"/users/{user}/messages/{message_id}")

    def expire_links(self, user: str) -> None:
        self._graph.control.expire_delta_tokens(user)

    def graph_fault(self, name: str, count: int) -> None:
        _, status, retry_after, code = next(f for f in GRAPH_FAULTS if f[0] == name)
        extra: dict[str, Any] = {"retryAfter": retry_after} if retry_after is not None else {}
        if code:
            extra["errorCode"] = code
        self._graph.control.fault(status, count, method="GET", pathContains="/messages/delta", **extra)

    def crm_fault(self, name: str, count: int) -> None:
        if name == "rejected":
            self._crm.fault(422, count=count, method="PUT", path_contains="/journals/")
        elif name == "timeout":  # slower than the connector waits, every attempt; never applied
            self._crm.fault(
                TIMEOUT_STATUS, count=count * 2, method="PUT", path_contains="/journals/", delay_seconds=1.5
            )
        else:
            self._crm.fault(
                503,
                count=count * 2,
                method="PUT",
                path_contains="/journals/",
                apply_then_fail=name == "ambiguous",
            )

    def clear_faults(self) -> None:
        self._graph.control.clear_faults()
        self._crm.clear_faults()

    def journals(self) -> tuple[dict[str, JournalView], int]:
        records = self._crm.journals()
        views = {
            j["key"]: JournalView(
                j["subject"],
                frozenset(s.lower() for s in j.get("seenBy") or ()),
                frozenset((p.get("email") or "").lower() for p in j.get("people") or ()),
            )
            for j in records
        }
        return views, len(records)

    def link_position(self, link: str) -> tuple[int, int] | None:
        return None  # Graph's links are opaque

    def covered(self, user: str, folder: str, link: str) -> set[str] | None:
        return None

    # -- contacts and calendar ------------------------------------------------------------------------

    def _get(self, method: str, path: str, body: Any = None) -> Any:
        response = self._outlook.request(method, path, json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def outlook_contacts(self, user: str) -> dict[str, ContactFields]:
        found = self._get("GET", f"/users/{user}/contactFolders/{self._folders[user]}/contacts?$top=500")
        return {
            str(c["id"]): ContactFields(
                emails=tuple(a["address"] for a in c.get("emailAddresses") or []),
                **{name: str(c.get(api) or "") for name, api in GRAPH_NAMES.items()},
            )
            for c in found["value"]
        }

    def outlook_add_contact(self, user: str, fields: ContactFields) -> str:
        body: dict[str, Any] = {api: getattr(fields, name) for name, api in GRAPH_NAMES.items()}
        body["emailAddresses"] = [{"address": e, "name": e} for e in fields.emails]
        made = self._get("POST", f"/users/{user}/contactFolders/{self._folders[user]}/contacts", body)
        return str(made["id"])

    def outlook_edit_contact(self, user: str, contact_id: str, **fields: str) -> None:
        self._get(
            "PATCH", f"/users/{user}/contacts/{contact_id}", {GRAPH_NAMES[k]: v for k, v in fields.items()}
        )

    def outlook_delete_contact(self, user: str, contact_id: str) -> None:
        self._get("DELETE", f"/users/{user}/contacts/{contact_id}")

    def crm_contacts(self) -> list[CrmContactView]:
        return [
            CrmContactView(
                str(p["id"]), str(p.get("owner") or ""),
                ContactFields(emails=tuple(p.get("emails") or ()),
                              **{name: str(p.get(api) or "") for name, api in CRM_NAMES.items()}),
            )
            for p in self._crm.contacts()
        ]  # fmt: skip

    def crm_add_contact(self, owner: str, fields: ContactFields) -> str:
        values = {api: getattr(fields, name) for name, api in CRM_NAMES.items() if name != "display_name"}
        return self._crm.add_person(list(fields.emails), name=fields.display_name, owner=owner, **values)

    def crm_edit_contact(self, crm_id: str, **fields: str) -> None:
        self._crm.update_person(crm_id, **{CRM_NAMES[k]: v for k, v in fields.items()})

    def crm_reassign(self, crm_id: str, owner: str) -> None:
        self._crm.update_person(crm_id, owner=owner)

    def crm_delete_contact(self, crm_id: str) -> None:
        self._crm.delete_person(crm_id)

    def create_meeting(
        self, user: str, subject: str, start: datetime, end: datetime, attendees: tuple[str, ...], count: int
    ) -> tuple[str, str]:
        body: dict[str, Any] = {
            "subject": subject, "start": _graph_time(start), "end": _graph_time(end),
            "attendees": [{"emailAddress": {"address": a, "name": a}, "type": "required"} for a in attendees],
        }  # fmt: skip
        if count:
            body["recurrence"] = {"pattern": {"type": "daily", "interval": 1},
                                  "range": {"type": "numbered", "numberOfOccurrences": count}}  # fmt: skip
        made = self._get("POST", f"/users/{user}/events", body)
        return str(made["id"]), str(made["iCalUId"])

    def patch_meeting(
        self, user: str, event_id: str, *, subject: str | None = None, start: datetime | None = None,
        end: datetime | None = None,
    ) -> None:  # fmt: skip
        body: dict[str, Any] = {}
        if subject is not None:
            body["subject"] = subject
        if start is not None:
            body["start"] = _graph_time(start)
        if end is not None:
            body["end"] = _graph_time(end)
        self._get("PATCH", f"/users/{user}/events/{event_id}", body)

    def delete_meeting(self, user: str, event_id: str) -> None:
        self._get("DELETE", f"/users/{user}/events/{event_id}")

    def event_id_of(self, user: str, ical: str) -> str:
        events = self._get("GET", f"/users/{user}/events?$top=500")["value"]
        return next((str(e["id"]) for e in events if e.get("iCalUId") == ical), "")

    def appointments(self) -> list[AppointmentView]:
        return [
            AppointmentView(
                str(a.get("key") or ""), str(a["id"]), str(a.get("owner") or ""), str(a.get("subject") or ""),
                _instant(a["start"]), _instant(a["end"]), bool(a.get("cancelled")),
                frozenset(s.lower() for s in a.get("seenBy") or ()),
            )
            for a in self._crm.appointments()
        ]  # fmt: skip

    def crm_create_appointment(self, owner: str, subject: str, start: datetime, end: datetime) -> str:
        return self._crm.create_appointment(owner=owner, subject=subject, start=start, end=end)

    def crm_update_appointment(self, crm_id: str, **fields: Any) -> None:
        values = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in fields.items()}
        self._crm.update_appointment(crm_id, **values)

    def pushed_events(self, user: str) -> list[tuple[str, datetime, datetime]]:
        events = self._get("GET", f"/users/{user}/events?$top=500")["value"]
        return sorted(
            (str(e["subject"]), _instant(e["start"]), _instant(e["end"]))
            for e in events
            if str(e.get("transactionId") or "").startswith(PUSH_TRANSACTION_PREFIX)
        )

    def stream_fault(self, stream: str, name: str, count: int) -> None:
        _, status, retry_after, code = next(f for f in GRAPH_FAULTS if f[0] == name)
        extra: dict[str, Any] = {"retryAfter": retry_after} if retry_after is not None else {}
        if code:
            extra["errorCode"] = code
        # delta reads only: the test's own look at Outlook goes through the same emulator
        path = "/contacts/delta" if stream == "contacts" else "/calendarView/delta"
        self._graph.control.fault(status, count, method="GET", pathContains=path, **extra)

    def crm_fault_on(self, operation: str, name: str, count: int) -> None:
        method, path = CRM_ROUTES[operation]
        if name == "rejected":
            self._crm.fault(422, count=count, method=method, path_contains=path)
        elif name == "timeout":
            self._crm.fault(
                TIMEOUT_STATUS, count=count * 2, method=method, path_contains=path, delay_seconds=1.5
            )
        else:
            self._crm.fault(
                503, count=count * 2, method=method, path_contains=path, apply_then_fail=name == "ambiguous"
            )
