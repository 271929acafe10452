"""The real-stack profile uses the integration stack's session fixtures (Azurite, Graph emulator, CRM)."""

from __future__ import annotations

from tests.integration.conftest import azurite_stack, crm_server, graph

__all__ = ["azurite_stack", "crm_server", "graph"]
