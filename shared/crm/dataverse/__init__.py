"""The CRM port over the Dataverse Web API (Dynamics 365).

Modules: `connector` (`DataverseConnector`, the port), `journals` (emails), `appointments`,
`users` (owners and colleagues), `tracking` (change tracking), `wire` (rows ⇄ records), `batch`
(`$batch` bodies), `webapi` (HTTP, retries, errors), `auth` (tokens).
"""

from __future__ import annotations

from shared.crm.dataverse.connector import CUSTOM_COLUMNS, DataverseConnector

__all__ = ["CUSTOM_COLUMNS", "DataverseConnector"]
