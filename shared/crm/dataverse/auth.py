"""The bearer token for the Dataverse Web API: an app-only token for the environment's `/.default`
scope from azure-identity (the function app's managed identity, or workload identity federation: an
app registration that trusts that identity), or a fixed token for the loopback stand-in only
(`shared/config.py` refuses it anywhere else). The identity must be an application user of the
environment with a security role (docs/deploy.md).
"""

from __future__ import annotations

from typing import Any


class StaticToken:
    def __init__(self, token: str) -> None:
        self._token = token

    async def __call__(self) -> str:
        return self._token

    async def aclose(self) -> None:
        return None


class IdentityToken:
    """azure-identity's async credential for `<environment URL>/.default` (it caches the token and
    renews it before it expires)."""

    def __init__(self, credential: Any, environment_url: str) -> None:
        self._credential = credential
        self._scope = environment_url.rstrip("/") + "/.default"

    async def __call__(self) -> str:
        return str((await self._credential.get_token(self._scope)).token)

    async def aclose(self) -> None:
        await self._credential.close()


def managed_identity(client_id: str, environment_url: str) -> IdentityToken:
    from azure.identity.aio import ManagedIdentityCredential

    return IdentityToken(ManagedIdentityCredential(client_id=client_id), environment_url)


def workload_identity(
    tenant_id: str, app_id: str, identity_client_id: str, environment_url: str
) -> IdentityToken:
    """An app registration's token, with the managed identity's token as the client assertion
    (a federated credential on the app registration trusts the identity; no secret anywhere)."""
    from azure.identity import ManagedIdentityCredential as SyncManagedIdentity
    from azure.identity.aio import ClientAssertionCredential

    identity = SyncManagedIdentity(client_id=identity_client_id)

    def assertion() -> str:
        return str(identity.get_token("api://AzureADTokenExchange/.default").token)

    return IdentityToken(ClientAssertionCredential(tenant_id, app_id, assertion), environment_url)
