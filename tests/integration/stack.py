"""The local stack for integration tests: Azurite, the Graph emulator and the reference CRM, each a
real process on loopback, and the product's real adapters built from settings that point at them."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from emulators.azurite import AzuriteStack
from emulators.crm.launcher import ReferenceCrm
from emulators.graph.launcher import GraphEmulator
from shared import wiring
from shared.config import Settings
from shared.model import Job, JobOutcome

TENANT_DOMAIN = "contoso.com"


def local_env(azurite: AzuriteStack, graph: GraphEmulator, crm: ReferenceCrm) -> dict[str, str]:
    """App settings pointing the product at the local stack (as environment variables)."""
    return {
        "GRAPH_BASE_URL": graph.base_url,
        "GRAPH_AUTH_MODE": "static-token",
        "GRAPH_STATIC_TOKEN": "local-test-token",
        "AzureWebJobsStorage": azurite.connection_string,
        "CRM_BASE_URL": crm.base_url,
        "CRM_API_TOKEN": crm.token,
        "ORG_DOMAINS": TENANT_DOMAIN,
    }


def settings_for(azurite: AzuriteStack, graph: GraphEmulator, crm: ReferenceCrm, **extra: str) -> Settings:
    return Settings.from_env({**local_env(azurite, graph, crm), **extra})


@dataclass
class Stack:
    azurite: AzuriteStack
    graph: GraphEmulator
    crm: ReferenceCrm
    services: wiring.Services

    async def add_user(self, upn: str, **columns: Any) -> None:
        self.graph.control.add_user(upn)
        await self.services.state.put_config(upn, {"Enabled": True, **columns})

    def deliver(self, upn: str, **message: Any) -> dict[str, Any]:
        message.setdefault("from", {"address": "bob@fabrikam.example", "name": "Bob Buyer"})
        message.setdefault("to", [{"address": upn}])
        message.setdefault("subject", "Quote")
        message.setdefault("bodyHtml", "<p>Hello</p>")
        return self.graph.control.deliver(upn, message)

    async def sync(self, upn: str, *, fresh: bool = False, until_done: int = 10) -> list[JobOutcome]:
        """Run every stream of the user, re-running throttled jobs (as the queue would) until done."""
        config = await self.services.engine.load_user(upn)
        assert config is not None
        outcomes: list[JobOutcome] = []
        for stream in config.streams():
            for _ in range(until_done):
                outcome = await self.services.engine.run_job(Job(upn, stream, "manual", fresh_round=fresh))
                outcomes.append(outcome)
                if outcome.status != "throttled":
                    break
        return outcomes

    def outlook(self, method: str, path: str, body: Any = None) -> Any:
        """What the user's own Outlook does, through Graph (e.g. move a message, add a category)."""
        response = httpx.request(
            method,
            f"{self.graph.base_url}{path}",
            json=body,
            headers={"Authorization": "Bearer outlook", "Prefer": 'IdType="ImmutableId"'},
            timeout=30,
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def journals(self) -> dict[str, dict[str, Any]]:
        return {j["key"]: j for j in self.crm.journals()}


def outlook(graph: GraphEmulator, method: str, path: str, body: Any = None) -> Any:
    """The user, in Outlook (over the emulator's Graph API)."""
    headers = {"Authorization": "Bearer outlook", "Prefer": 'IdType="ImmutableId"'}
    response = httpx.request(method, f"{graph.base_url}{path}", json=body, headers=headers, timeout=30)
    response.raise_for_status()
    return response.json() if response.content else None


def days_ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def unique_prefix() -> str:
    return "t" + secrets.token_hex(5)


def comparable(journals: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Journals without server-assigned fields, to compare two runs."""
    drop = {
        "id",
        "seq",
        "createdAt",
        "updatedAt",
        "version",
        "created_at",
        "updated_at",
    }  # assigned by the CRM
    out: dict[str, Any] = {}
    for key, journal in journals.items():
        kept = {f: v for f, v in journal.items() if f not in drop}
        kept["people"] = sorted(
            p.get("email", "") for p in journal.get("people", [])
        )  # ids differ per CRM reset
        out[key] = kept
    return out
