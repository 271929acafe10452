"""`RealWorld`: the engine model on the real stack — msgraph-sdk → the Graph emulator over HTTP, the
reference CRM server through `ReferenceCrmConnector`, `TableStateStore` on Azurite. Slower (HTTP per
step), so its profile runs fewer, shorter examples (`test_engine_model_real.py`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from emulators.azurite import AzuriteStack
from emulators.crm.launcher import ReferenceCrm
from emulators.graph.launcher import GraphEmulator
from shared.crm.reference import ReferenceCrmConnector
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.mail import GraphMailReader
from shared.state.memory import InMemoryJobQueue
from shared.state.tables import TableStateStore
from tests.integration.stack import settings_for, unique_prefix
from tests.model.world import GRAPH_FAULTS, PERSONS, USERS, Clock, JournalView, Template


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
        elif name == "timeout":  # slower than the connector waits, every attempt
            self._crm.fault(
                None, count=count * 2, method="PUT", path_contains="/journals/", delay_seconds=1.5
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
