"""Logging setup: Application Insights when configured, and nothing personal or secret in any log.

Delta and notification URLs carry tokens and keys, and httpx and the Azure SDK log request URLs, so
their loggers are held at WARNING. Users appear in logs only as `user_tag()`: a short HMAC-SHA256 of
the UPN keyed with the deployment's secret `LOG_HASH_KEY` (`use_log_hash_key`). An unkeyed hash could
be reversed by hashing the tenant's user list; a keyed one only by whoever holds the key. Without a
key (a local run, or a Key Vault reference that did not resolve) the key is random per process: tags
still name no one, but match only within one process.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

_QUIET = (
    "httpx",
    "httpcore",
    "azure.core.pipeline.policies.http_logging_policy",
    "azure.identity",
    "kiota_http",
    "uvicorn.access",
)
# OpenTelemetry instrumentations the Azure Monitor distro turns on by default that would record request
# URLs as dependency telemetry: Graph delta links ($deltatoken / $skiptoken), CRM journal keys
# (internetMessageIds) and Table Storage entity URLs (user principal names in the keys). Off.
_URL_RECORDING_INSTRUMENTATIONS = ("azure_sdk", "httpx", "requests", "urllib", "urllib3")
_configured = False
_tag_key = secrets.token_bytes(32)
logger = logging.getLogger(__name__)


def use_log_hash_key(key: str) -> None:
    """Key the user tags with the deployment's `LOG_HASH_KEY`; empty keeps the per-process random key."""
    global _tag_key
    if key:
        _tag_key = key.encode("utf-8")
    else:
        logger.warning(
            "LOG_HASH_KEY is not set (or its Key Vault reference did not resolve): user tags in the logs "
            "match only within this process"
        )


def user_tag(upn: str) -> str:
    return hmac.new(_tag_key, upn.strip().lower().encode("utf-8"), hashlib.sha256).hexdigest()[:12]


def configure(appinsights_connection_string: str = "", managed_identity_client_id: str = "") -> None:
    global _configured
    if _configured:
        return
    _configured = True
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    if appinsights_connection_string:
        from azure.monitor.opentelemetry import configure_azure_monitor

        credential = None
        if managed_identity_client_id:  # Application Insights has local (key) auth off in Azure
            from azure.identity import ManagedIdentityCredential

            credential = ManagedIdentityCredential(client_id=managed_identity_client_id)
        configure_azure_monitor(
            connection_string=appinsights_connection_string,
            credential=credential,
            logger_name="shared",
            instrumentation_options={name: {"enabled": False} for name in _URL_RECORDING_INSTRUMENTATIONS},
        )
