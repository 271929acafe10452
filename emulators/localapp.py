"""The whole product on one machine: Azurite, the Graph emulator, a CRM, and the Function App in the
local Functions host, with app settings pointing each at the others. Used by `make demo` and the
end-to-end tests.

    with local_app() as app:
        app.graph.control.deliver(...)      # mail arrives in the emulated tenant
        app.host.fire("sync_sweep")         # or wait: Graph notifies the webhook, the worker runs
        app.crm.journals()
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulators.azurite import AzuriteStack, azurite
from emulators.bottlecrm import BottleCrm, bottlecrm
from emulators.crm.launcher import ReferenceCrm, reference_crm
from emulators.dataverse.launcher import DataverseStandIn, dataverse_stand_in
from emulators.funchost.config import FUNCTION_KEY_PREFIX
from emulators.funchost.launcher import RunningHost, function_host
from emulators.graph.launcher import GraphEmulator, graph_emulator
from emulators.process import free_port

TENANT_DOMAIN = "contoso.com"
NEVER = "0 0 0 1 1 *"  # timers fire on demand in tests and the demo (once a year otherwise)


WEBHOOK_FUNCTIONS = ("graph_notifications", "graph_lifecycle")  # the functions Graph calls


@dataclass
class LocalApp:
    azurite: AzuriteStack
    graph: GraphEmulator
    crm: ReferenceCrm | BottleCrm | DataverseStandIn
    host: RunningHost
    settings: dict[str, str]

    @property
    def webhook_key(self) -> str:
        """The key Graph holds: a function key of the two webhook functions, nothing else."""
        return self.settings["WEBHOOK_KEY"]

    @property
    def admin_key(self) -> str:
        """The admin API's key (`/api/manage/*`); never the webhook key."""
        return self.settings["ADMIN_KEY"]


def webhook_key_settings(key: str) -> dict[str, str]:
    """`WEBHOOK_KEY` and the same value as the function key of each webhook function, as
    `scripts/ensure-webhook-key.sh` sets it in Azure: it opens those two functions only."""
    return {"WEBHOOK_KEY": key, **{f"{FUNCTION_KEY_PREFIX}{name}": key for name in WEBHOOK_FUNCTIONS}}


def crm_settings(crm: ReferenceCrm | BottleCrm | DataverseStandIn) -> dict[str, str]:
    if isinstance(crm, DataverseStandIn):
        return {
            "CRM_CONNECTOR": "dataverse",
            "DATAVERSE_URL": crm.url,
            "DATAVERSE_AUTH_MODE": "static-token",
            "DATAVERSE_STATIC_TOKEN": "local-dataverse-stand-in",
            "SSL_CERT_FILE": str(crm.ca_path),  # the host's httpx trusts the stand-in's test CA
        }
    return {
        "CRM_CONNECTOR": "bottlecrm" if isinstance(crm, BottleCrm) else "reference",
        "CRM_BASE_URL": crm.base_url,
        "CRM_API_TOKEN": crm.token,
        "CRM_AUTH_SCHEME": "bearer",
    }


def app_settings(
    storage: AzuriteStack,
    graph: GraphEmulator,
    crm: ReferenceCrm | BottleCrm | DataverseStandIn,
    port: int,
    key: str,
    **extra: str,
) -> dict[str, str]:
    """`key`: the webhook key. The admin key is a fresh random one."""
    return {
        "GRAPH_BASE_URL": graph.base_url,
        "GRAPH_AUTH_MODE": "static-token",
        "GRAPH_STATIC_TOKEN": "local-graph-emulator",
        "AzureWebJobsStorage": storage.connection_string,
        **crm_settings(crm),
        "ORG_DOMAINS": TENANT_DOMAIN,
        "SYNC_SCHEDULE": NEVER,
        "SUBSCRIPTION_SCHEDULE": NEVER,
        "WEBHOOK_BASE_URL": f"http://127.0.0.1:{port}/api",
        **webhook_key_settings(key),
        "ADMIN_KEY": secrets.token_urlsafe(32),
        "JOURNAL_BODY_MAX_CHARS": "20000",
        # poll the queue often: the notification path is measured in seconds
        "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:00.200",
        **extra,
    }


@contextlib.contextmanager
def local_app(
    logs: Path | None = None, crm_kind: str = "reference", **graph_flags: Any
) -> Iterator[LocalApp]:
    """`crm_kind`: "reference" (the project's reference CRM), "bottlecrm" (BottleCRM itself) or
    "dataverse" (the Dataverse stand-in, for the Dynamics 365 connector)."""

    def log(name: str) -> Path | None:
        return logs / f"{name}.log" if logs else None

    crm_of: dict[str, Any] = {
        "reference": lambda: reference_crm(log=log("crm")),
        "bottlecrm": bottlecrm,
        "dataverse": lambda: dataverse_stand_in(log=log("dataverse")),
    }
    with (
        azurite(log=log("azurite")) as storage,
        graph_emulator(log=log("graph"), **graph_flags) as graph,
        crm_of[crm_kind]() as crm,
    ):
        port = free_port()
        key = secrets.token_urlsafe(24)
        settings = app_settings(storage, graph, crm, port, key)
        with function_host("function_app:app", settings=settings, port=port, log=log("functions")) as host:
            yield LocalApp(storage, graph, crm, host, settings)
