"""Builds the msgraph-sdk client from the settings, and calls Graph with our own throttling rules.

The SDK's retry middleware is switched off: it would sleep up to 180 s inside a job. Instead `call()`
retries 429/503/504 itself while the wait is short (Retry-After as integer, fractional, HTTP-date or
absent), and raises `GraphThrottled` with the wait otherwise, so the job is re-queued for later and
the worker goes on with other users. At most `MAX_CONCURRENT_PER_MAILBOX` requests per mailbox are in
flight from this process (Graph allows 4 per app and mailbox).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from kiota_abstractions.api_error import APIError
from kiota_abstractions.authentication import AccessTokenProvider, AllowedHostsValidator
from kiota_abstractions.authentication.base_bearer_token_authentication_provider import (
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.request_adapter import RequestAdapter
from kiota_abstractions.request_information import RequestInformation
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from shared.config import GraphAuthMode, Settings
from shared.errors import DeltaExpired, GraphError, GraphNotFound, GraphThrottled, MailboxDenied
from shared.retry_after import parse_retry_after

logger = logging.getLogger(__name__)
_ODATA_ERRORS: dict[str, Any] = {"XXX": ODataError}  # every error status parsed as ODataError

T = TypeVar("T")
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
MAX_CONCURRENT_PER_MAILBOX = 4
SHORT_WAIT_SECONDS = 10.0  # waits up to this long happen in the job; longer ones re-queue it
MAX_ATTEMPTS = 4


class _StaticToken(AccessTokenProvider):
    """A fixed bearer token, for the loopback Graph emulator only (config.py enforces loopback)."""

    def __init__(self, token: str, host: str) -> None:
        self._token = token
        self._validator = AllowedHostsValidator([host])

    async def get_authorization_token(self, uri: str, additional_authentication_context: Any = None) -> str:
        return self._token

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._validator


def _credential(settings: Settings) -> Any:
    from azure.identity.aio import (
        CertificateCredential,
        ClientAssertionCredential,
        ClientSecretCredential,
        ManagedIdentityCredential,
    )

    mode = settings.graph_auth_mode
    if mode is GraphAuthMode.MANAGED_IDENTITY:
        return ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
    if mode is GraphAuthMode.WORKLOAD_IDENTITY:
        # The app registration trusts the function app's managed identity (federated credential):
        # the managed identity's token for the token-exchange audience is the client assertion.
        from azure.identity import ManagedIdentityCredential as SyncManagedIdentity

        identity = SyncManagedIdentity(client_id=settings.managed_identity_client_id)

        def assertion() -> str:
            return str(identity.get_token("api://AzureADTokenExchange/.default").token)

        return ClientAssertionCredential(settings.graph_tenant_id, settings.graph_client_id, assertion)
    if mode is GraphAuthMode.CERTIFICATE:
        return CertificateCredential(
            settings.graph_tenant_id, settings.graph_client_id, settings.graph_client_certificate_path
        )
    return ClientSecretCredential(
        settings.graph_tenant_id, settings.graph_client_id, settings.graph_client_secret
    )


def build_graph_client(settings: Settings) -> GraphServiceClient:
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(base_url=settings.graph_base_url, timeout=httpx.Timeout(60.0, connect=10.0)),
        options={RetryHandlerOption.get_key(): RetryHandlerOption(max_retries=0, should_retry=False)},
    )
    if settings.graph_auth_mode is GraphAuthMode.STATIC_TOKEN:
        host = httpx.URL(settings.graph_base_url).host
        auth: Any = BaseBearerTokenAuthenticationProvider(_StaticToken(settings.graph_static_token, host))
    else:
        from kiota_authentication_azure.azure_identity_authentication_provider import (
            AzureIdentityAuthenticationProvider,
        )

        auth = AzureIdentityAuthenticationProvider(
            _credential(settings),
            scopes=[GRAPH_SCOPE],
            allowed_hosts=[httpx.URL(settings.graph_base_url).host],
        )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = settings.graph_base_url
    return GraphServiceClient(request_adapter=adapter)


def translate(exc: BaseException) -> GraphError:
    """Turn an SDK/HTTP exception into our error tree."""
    if isinstance(exc, GraphError):
        return exc
    if isinstance(exc, APIError):
        status = int(exc.response_status_code or 0)
        headers = exc.response_headers or {}
        retry_after = parse_retry_after(_header(headers, "retry-after"))
        error = getattr(exc, "error", None)
        code = str(getattr(error, "code", "") or "")
        message = str(getattr(error, "message", "") or exc.message or "")
        text = f"Graph answered {status} {code}".strip()
        if status == 410 or code.lower() in {"syncstatenotfound", "resyncrequired", "syncstateinvalid"}:
            return DeltaExpired(text, status=status, code=code)
        if status in (429, 503, 504, 509):
            return GraphThrottled(text, status=status, code=code, retry_after=retry_after)
        if status == 403 and (
            code.lower() in {"erroraccessdenied", "extensionerror"} or "odata" in message.lower()
        ):
            return MailboxDenied(f"{text}: the app may not read this mailbox", status=status, code=code)
        if status == 404:
            return GraphNotFound(text, status=status, code=code)
        return GraphError(text, status=status, code=code)
    if isinstance(exc, httpx.TimeoutException | httpx.TransportError):
        return GraphThrottled(f"Graph unreachable: {type(exc).__name__}", status=0, retry_after=None)
    return GraphError(f"Graph call failed: {type(exc).__name__}")


def _header(headers: Any, name: str) -> str | None:
    try:
        for key, value in dict(headers).items():
            if str(key).lower() == name:
                return str(next(iter(value)) if isinstance(value, list | tuple | set) else value)
    except (TypeError, ValueError):
        return None
    return None


class GraphCaller:
    """Runs Graph calls per mailbox: bounded concurrency, short throttling waits, error translation."""

    def __init__(
        self,
        *,
        short_wait: float = SHORT_WAIT_SECONDS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self._slots: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(MAX_CONCURRENT_PER_MAILBOX)
        )
        self._short_wait = short_wait
        self._sleep = sleep
        self.requests = 0

    async def call(self, mailbox: str, fn: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._slots[mailbox.lower()]:
                    self.requests += 1
                    return await fn()
            except Exception as exc:  # noqa: BLE001 - every SDK/HTTP failure is translated here
                error = translate(exc)
                if not isinstance(error, GraphThrottled):
                    raise error from exc
                wait = error.retry_after if error.retry_after is not None else min(2.0**attempt, 8.0)
                wait += random.uniform(0, 0.1)
                if attempt >= MAX_ATTEMPTS or wait > self._short_wait:
                    error.retry_after = wait
                    raise error from exc
                logger.info("graph throttled status=%s wait_s=%.2f attempt=%d", error.status, wait, attempt)
                await self._sleep(wait)

    async def fetch_json(
        self, mailbox: str, adapter: RequestAdapter, info: RequestInformation, what: str
    ) -> dict[str, Any]:
        """Send a request the SDK built through its request adapter (auth, middleware, errors mapped to
        `ODataError`, then translated and retried by `call`), and parse the answer with `json.loads`:
        kiota's model parsing costs tens of milliseconds per item (`get_field_deserializers` re-imports
        every entity subtype on each call), which made a page of 100 messages cost seconds of CPU.
        An empty answer is `{}`; one that is not a JSON object raises GraphError naming `what`."""

        async def send() -> bytes | None:
            raw: bytes | None = await adapter.send_primitive_async(info, "bytes", _ODATA_ERRORS)
            return raw

        raw = await self.call(mailbox, send)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise GraphError(f"Graph answered {what} that is not JSON") from exc
        if not isinstance(body, dict):
            raise GraphError(f"Graph answered {what} that is not a JSON object")
        return body
