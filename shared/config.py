"""App settings: every one the code reads, read and validated once, all problems reported together.

`SETTINGS` is the single list of names. The Bicep in `infra/` sets exactly these (a test checks it),
`local.settings.example.json` shows them for a local run, and nothing else reads `os.environ`.

Storage uses the Functions host's own `AzureWebJobsStorage` setting family: a connection string
locally (Azurite), or identity-based service URIs in Azure (`AzureWebJobsStorage__tableServiceUri`,
`AzureWebJobsStorage__queueServiceUri`, `AzureWebJobsStorage__clientId`).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from shared.errors import ConfigError
from shared.users import Granted

REAL_GRAPH = "https://graph.microsoft.com/v1.0"


CONNECTORS = ("reference", "bottlecrm", "dataverse")


class DataverseAuthMode(StrEnum):
    MANAGED_IDENTITY = "managed-identity"  # the app's user-assigned identity is the application user
    WORKLOAD_IDENTITY = "workload-identity"  # an app registration that trusts the managed identity
    STATIC_TOKEN = "static-token"  # the loopback stand-in only


class GraphAuthMode(StrEnum):
    MANAGED_IDENTITY = "managed-identity"  # the app's user-assigned identity holds the Graph roles
    WORKLOAD_IDENTITY = "workload-identity"  # an app registration that trusts the managed identity
    CERTIFICATE = "certificate"
    SECRET = "secret"
    STATIC_TOKEN = "static-token"  # loopback emulator only


@dataclass(frozen=True)
class Setting:
    name: str
    description: str
    required: bool = False
    default: str = ""
    secret: bool = False  # never logged; in Azure a Key Vault reference


SETTINGS: tuple[Setting, ...] = (
    Setting("GRAPH_BASE_URL", "Microsoft Graph base URL", default=REAL_GRAPH),
    Setting(
        "GRAPH_AUTH_MODE",
        "managed-identity | workload-identity | certificate | secret | static-token",
        default=GraphAuthMode.WORKLOAD_IDENTITY.value,
    ),
    Setting("GRAPH_TENANT_ID", "Entra tenant id of the mailboxes"),
    Setting("GRAPH_CLIENT_ID", "client id of the app registration that holds the Graph permissions"),
    Setting("GRAPH_CLIENT_CERTIFICATE_PATH", "PEM certificate path (auth mode certificate)"),
    Setting("GRAPH_CLIENT_SECRET", "client secret (auth mode secret)", secret=True),
    Setting("GRAPH_STATIC_TOKEN", "bearer token for a loopback Graph emulator", secret=True),
    Setting("AZURE_CLIENT_ID", "client id of the function app's user-assigned managed identity"),
    Setting("AzureWebJobsStorage", "storage connection string (local: Azurite)", secret=True),
    Setting("AzureWebJobsStorage__tableServiceUri", "Table service URI (identity-based)"),
    Setting("AzureWebJobsStorage__queueServiceUri", "Queue service URI (identity-based)"),
    Setting("AzureWebJobsStorage__clientId", "managed identity client id used for storage"),
    Setting("CRM_CONNECTOR", "which CRM connector: reference | bottlecrm | dataverse", default="reference"),
    Setting("CRM_BASE_URL", "the CRM API base URL (required unless CRM_CONNECTOR=dataverse)"),
    Setting("CRM_API_TOKEN", "the CRM API credential (Key Vault reference in Azure)", secret=True),
    Setting("CRM_AUTH_SCHEME", "bearer | api-key", default="bearer"),
    Setting(
        "DATAVERSE_URL",
        "Dynamics 365 environment URL, https://<org>.crm.dynamics.com (CRM_CONNECTOR=dataverse)",
    ),
    Setting(
        "DATAVERSE_AUTH_MODE",
        "managed-identity | workload-identity | static-token",
        default=DataverseAuthMode.MANAGED_IDENTITY.value,
    ),
    Setting(
        "DATAVERSE_CLIENT_ID",
        "client id of the app registration that is the application user (workload-identity)",
    ),
    Setting("DATAVERSE_STATIC_TOKEN", "bearer token for a loopback Dataverse stand-in", secret=True),
    Setting("ORG_DOMAINS", "the organisation's own mail domains, comma separated (internal mail)"),
    Setting("SYNC_SCHEDULE", "NCRONTAB of the safety-net sweep", default="0 */5 * * * *"),
    Setting("SUBSCRIPTION_SCHEDULE", "NCRONTAB of the subscription upkeep", default="0 */30 * * * *"),
    Setting("WEBHOOK_BASE_URL", "public base URL of this app's HTTP functions (https://…/api)"),
    Setting("WEBHOOK_KEY", "function key Graph passes back on notification URLs", secret=True),
    Setting(
        "ADMIN_KEY",
        "the admin API's key where App Service authentication is off (local runs); never the webhook key",
        secret=True,
    ),
    Setting(
        "WEBSITE_AUTH_ENABLED",
        "set by App Service itself when its authentication is on: the admin API then trusts the signed-in "
        "user's roles; never set it yourself",
    ),
    Setting("LOG_HASH_KEY", "per-deployment secret keying the user tags in logs (HMAC)", secret=True),
    Setting("JOURNAL_BODY_MAX_CHARS", "longest journal body before the cut marker", default="20000"),
    Setting("APPLICATIONINSIGHTS_CONNECTION_STRING", "Application Insights (telemetry on when set)"),
    # The deployment flags: which Graph permissions the deployment asks for (infra/graph-permissions.json).
    # Bicep sets them; unset (a local run) means every permission is there.
    Setting(
        "CONTACTS_SYNC", "true: the deployment asks for Contacts.ReadWrite (contact sync)", default="true"
    ),
    Setting("CALENDAR_SYNC", "true: the deployment asks for Calendars.Read (meetings)", default="true"),
    Setting(
        "CALENDAR_WRITE_BACK",
        "true: the deployment asks for Calendars.ReadWrite (CRM appointments pushed to Outlook)",
        default="true",
    ),
    Setting(
        "TASKS_SYNC",
        "true: the deployment asks for Tasks.ReadWrite.All (To Do tasks; every user's, tenant-wide)",
        default="true",
    ),
)

MIN_ADMIN_KEY_CHARS = 32
UNRESOLVED_REFERENCE = "@Microsoft.KeyVault("


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _endpoint_problems(name: str, url: str, local_use: str) -> list[str]:
    """Every endpoint the app sends a credential to: https, or http on a loopback host only."""
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        return [f"{name} must be an absolute https URL, got {url!r}"]
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        return [f"{name} may use http only on a loopback host ({local_use}); use https"]
    return []


SETTING_NAMES: frozenset[str] = frozenset(s.name for s in SETTINGS)
_DEFAULTS = {s.name: s.default for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    graph_base_url: str
    graph_auth_mode: GraphAuthMode
    graph_tenant_id: str
    graph_client_id: str
    graph_client_certificate_path: str
    graph_client_secret: str
    graph_static_token: str
    managed_identity_client_id: str
    storage_connection_string: str
    table_service_uri: str
    queue_service_uri: str
    storage_client_id: str
    crm_connector: str
    crm_base_url: str
    crm_api_token: str
    crm_auth_scheme: str
    dataverse_url: str
    dataverse_auth_mode: DataverseAuthMode
    dataverse_client_id: str
    dataverse_static_token: str
    org_domains: tuple[str, ...]
    sync_schedule: str
    subscription_schedule: str
    webhook_base_url: str
    webhook_key: str
    admin_key: str
    easy_auth: bool  # App Service authentication is on (WEBSITE_AUTH_ENABLED), so its headers are its own
    log_hash_key: str
    journal_body_max_chars: int
    appinsights_connection_string: str
    granted: Granted

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        source = os.environ if env is None else env
        problems: list[str] = []

        def get(name: str) -> str:
            value = source.get(name, "")
            return value.strip() if value.strip() else _DEFAULTS[name]

        for s in SETTINGS:
            if s.required and not get(s.name):
                problems.append(f"{s.name} is required ({s.description})")

        base = get("GRAPH_BASE_URL").rstrip("/")
        loopback = _is_loopback(urlsplit(base).hostname)
        problems += _endpoint_problems("GRAPH_BASE_URL", base, "the Graph emulator")

        mode_text = get("GRAPH_AUTH_MODE")
        try:
            mode = GraphAuthMode(mode_text)
        except ValueError:
            problems.append(f"GRAPH_AUTH_MODE must be one of {', '.join(m.value for m in GraphAuthMode)}")
            mode = GraphAuthMode.STATIC_TOKEN
        needs = {
            GraphAuthMode.MANAGED_IDENTITY: ["AZURE_CLIENT_ID"],
            GraphAuthMode.WORKLOAD_IDENTITY: ["GRAPH_TENANT_ID", "GRAPH_CLIENT_ID", "AZURE_CLIENT_ID"],
            GraphAuthMode.CERTIFICATE: [
                "GRAPH_TENANT_ID",
                "GRAPH_CLIENT_ID",
                "GRAPH_CLIENT_CERTIFICATE_PATH",
            ],
            GraphAuthMode.SECRET: ["GRAPH_TENANT_ID", "GRAPH_CLIENT_ID", "GRAPH_CLIENT_SECRET"],
            GraphAuthMode.STATIC_TOKEN: ["GRAPH_STATIC_TOKEN"],
        }[mode]
        problems += [f"{n} is required when GRAPH_AUTH_MODE={mode.value}" for n in needs if not get(n)]
        if mode is GraphAuthMode.STATIC_TOKEN and not loopback:
            problems.append("GRAPH_AUTH_MODE=static-token is allowed only with a loopback GRAPH_BASE_URL")

        conn = get("AzureWebJobsStorage")
        table_uri = get("AzureWebJobsStorage__tableServiceUri")
        queue_uri = get("AzureWebJobsStorage__queueServiceUri")
        if not conn and not (table_uri and queue_uri):
            problems.append(
                "storage: set AzureWebJobsStorage (a connection string) or both "
                "AzureWebJobsStorage__tableServiceUri and AzureWebJobsStorage__queueServiceUri"
            )

        connector = get("CRM_CONNECTOR")
        if connector not in CONNECTORS:
            problems.append(f"CRM_CONNECTOR must be one of {', '.join(CONNECTORS)}, got {connector!r}")
        if connector != "dataverse" and not get("CRM_BASE_URL"):
            problems.append("CRM_BASE_URL is required (the CRM API base URL)")
        dataverse_mode = _dataverse_problems(get, connector == "dataverse", problems)
        scheme = get("CRM_AUTH_SCHEME")
        if scheme not in {"bearer", "api-key"}:
            problems.append(f"CRM_AUTH_SCHEME must be 'bearer' or 'api-key', got {scheme!r}")

        max_chars_text = get("JOURNAL_BODY_MAX_CHARS")
        max_chars = int(max_chars_text) if max_chars_text.isdigit() else 0
        if max_chars < 200:
            problems.append(f"JOURNAL_BODY_MAX_CHARS must be a whole number >= 200, got {max_chars_text!r}")

        crm_base = get("CRM_BASE_URL").rstrip("/")
        if crm_base:
            problems += _endpoint_problems("CRM_BASE_URL", crm_base, "a local CRM")
        webhook = get("WEBHOOK_BASE_URL").rstrip("/")
        if webhook:
            problems += _endpoint_problems("WEBHOOK_BASE_URL", webhook, "the local Functions host")

        admin_key, webhook_key = get("ADMIN_KEY"), get("WEBHOOK_KEY")
        if admin_key and len(admin_key) < MIN_ADMIN_KEY_CHARS:
            problems.append(f"ADMIN_KEY must be at least {MIN_ADMIN_KEY_CHARS} characters")
        if admin_key and hmac.compare_digest(admin_key.encode("utf-8"), webhook_key.encode("utf-8")):
            problems.append("ADMIN_KEY must not be the webhook key: Graph holds WEBHOOK_KEY")
        log_hash_key = get("LOG_HASH_KEY")
        if log_hash_key.startswith(UNRESOLVED_REFERENCE):
            log_hash_key = ""  # App Service hands over the reference itself when it cannot resolve it

        flags: dict[str, bool] = {}
        for name in ("CONTACTS_SYNC", "CALENDAR_SYNC", "CALENDAR_WRITE_BACK", "TASKS_SYNC"):
            value = get(name).lower()
            if value not in {"true", "false"}:
                problems.append(f"{name} must be true or false, got {value!r}")
            flags[name] = value == "true"

        if problems:
            raise ConfigError("invalid app settings", problems)
        return cls(
            graph_base_url=base,
            graph_auth_mode=mode,
            graph_tenant_id=get("GRAPH_TENANT_ID"),
            graph_client_id=get("GRAPH_CLIENT_ID"),
            graph_client_certificate_path=get("GRAPH_CLIENT_CERTIFICATE_PATH"),
            graph_client_secret=get("GRAPH_CLIENT_SECRET"),
            graph_static_token=get("GRAPH_STATIC_TOKEN"),
            managed_identity_client_id=get("AZURE_CLIENT_ID"),
            storage_connection_string=conn,
            table_service_uri=table_uri,
            queue_service_uri=queue_uri,
            storage_client_id=get("AzureWebJobsStorage__clientId"),
            crm_connector=connector,
            crm_base_url=crm_base,
            crm_api_token=get("CRM_API_TOKEN"),
            crm_auth_scheme=scheme,
            dataverse_url=get("DATAVERSE_URL").rstrip("/"),
            dataverse_auth_mode=dataverse_mode,
            dataverse_client_id=get("DATAVERSE_CLIENT_ID"),
            dataverse_static_token=get("DATAVERSE_STATIC_TOKEN"),
            org_domains=tuple(d.strip().lower() for d in get("ORG_DOMAINS").split(",") if d.strip()),
            sync_schedule=get("SYNC_SCHEDULE"),
            subscription_schedule=get("SUBSCRIPTION_SCHEDULE"),
            webhook_base_url=webhook,
            webhook_key=webhook_key,
            admin_key=admin_key,
            easy_auth=get("WEBSITE_AUTH_ENABLED").lower() == "true",
            log_hash_key=log_hash_key,
            journal_body_max_chars=max_chars,
            appinsights_connection_string=get("APPLICATIONINSIGHTS_CONNECTION_STRING"),
            granted=Granted(
                contacts=flags["CONTACTS_SYNC"],
                # write-back holds Calendars.ReadWrite, which reads the calendar too
                calendar=flags["CALENDAR_SYNC"] or flags["CALENDAR_WRITE_BACK"],
                calendar_write_back=flags["CALENDAR_WRITE_BACK"],
                tasks=flags["TASKS_SYNC"],
            ),
        )

    def __repr__(self) -> str:  # never print secrets
        return f"Settings(graph_base_url={self.graph_base_url!r}, crm_connector={self.crm_connector!r}, …)"


def _dataverse_problems(get: Callable[[str], str], used: bool, problems: list[str]) -> DataverseAuthMode:
    """Check the Dataverse settings (only when the Dataverse connector is chosen); returns the mode."""
    try:
        mode = DataverseAuthMode(get("DATAVERSE_AUTH_MODE"))
    except ValueError:
        choices = ", ".join(m.value for m in DataverseAuthMode)
        problems.append(f"DATAVERSE_AUTH_MODE must be one of {choices}")
        return DataverseAuthMode.MANAGED_IDENTITY
    if not used:
        return mode
    url = get("DATAVERSE_URL").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.path.strip("/"):
        problems.append(
            f"DATAVERSE_URL must be the environment's https URL (https://<org>.crm.dynamics.com), got {url!r}"
        )
    needs = {
        DataverseAuthMode.MANAGED_IDENTITY: ["AZURE_CLIENT_ID"],
        DataverseAuthMode.WORKLOAD_IDENTITY: ["GRAPH_TENANT_ID", "DATAVERSE_CLIENT_ID", "AZURE_CLIENT_ID"],
        DataverseAuthMode.STATIC_TOKEN: ["DATAVERSE_STATIC_TOKEN"],
    }[mode]
    problems += [f"{n} is required when DATAVERSE_AUTH_MODE={mode.value}" for n in needs if not get(n)]
    if mode is DataverseAuthMode.STATIC_TOKEN and not _is_loopback(parts.hostname):
        problems.append("DATAVERSE_AUTH_MODE=static-token is allowed only with a loopback DATAVERSE_URL")
    return mode
