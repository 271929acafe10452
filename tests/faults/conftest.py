"""The fault tests run on the integration stack (Azurite, the Graph emulator, the reference CRM)."""

from __future__ import annotations

from tests.integration.conftest import azurite_stack, crm_server, graph, stack

__all__ = ["azurite_stack", "crm_server", "graph", "stack"]
