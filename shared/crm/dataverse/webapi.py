"""Calls to the Dataverse Web API (v9.2) with httpx: the bearer token, the OData headers, retries, and
Dataverse's errors turned into the project's.

Retries (service protection, api-limits): a 429 is retried after its `Retry-After` (a request
answered 429 was not run, so even a create is sent again), unless the wait is longer than
`max_retry_wait`: then `CrmRetryableError` carries the wait at once, so a job never sleeps through
Dataverse's 5-minute window. 5xx, timeouts and dropped connections are retried with exponential
backoff and jitter, but only for requests safe to repeat (`resend=True`); a write that may have been
applied is left to the caller, which reads again before writing again. A 412 raises `Conflict`
(an etag or key that no longer holds), which the callers answer by reading again. Other 4xx raise
`CrmRejectedError` with Dataverse's code and message, which is outside text: control characters
are dropped and it is cut to 300 characters. Logs carry the route template only, never a value.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from shared.crm.dataverse import batch as multipart
from shared.errors import CrmError, CrmRejectedError, CrmRetryableError
from shared.retry_after import parse_retry_after

logger = logging.getLogger(__name__)
API = "/api/data/v9.2/"
TokenSource = Callable[[], Awaitable[str]]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
THROTTLING_CODES = {"0x80072322", "0x80072321", "0x80072326", "-2147015902", "-2147015903", "-2147015898"}


class Conflict(CrmError):
    """412: the row changed since it was read (etag), or a key is taken. Read again, then write."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, status=412)
        self.code = code


class Refused(CrmRejectedError):
    """A 4xx refusal, with Dataverse's error code (what a caller branches on; never the message)."""

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message, status=status)
        self.code = code


def outside_text(text: str, limit: int = 300) -> str:
    """Text Dataverse sent back (it may echo values someone else wrote): one line, bounded."""
    flat = _CONTROL.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def error_of(status: int, body: Any, route: str, retry_after: float | None = None) -> CrmError:
    """The project's error for a failed answer (or a failed operation inside a `$batch`)."""
    error = body.get("error") if isinstance(body, dict) else None
    code = str(error.get("code") or "") if isinstance(error, dict) else ""
    message = outside_text(str(error.get("message") or "")) if isinstance(error, dict) else ""
    detail = f"{code} {message}".strip() or "no reason given"
    if status == 412:
        return Conflict(f"Dataverse {route}: {detail}", code)
    if status == 429 or status >= 500 or code in THROTTLING_CODES:
        return CrmRetryableError(
            f"Dataverse {route} answered {status}: {detail}", status=status, retry_after=retry_after
        )
    if status == 401:
        return Refused(
            f"Dataverse refused the credentials (401) on {route}: check DATAVERSE_URL, the identity and its "
            "application user in the environment",
            status=401,
            code=code,
        )
    if status == 403:
        return Refused(
            f"Dataverse denied {route} (403, the application user's security role): {detail}",
            status=403,
            code=code,
        )
    return Refused(f"Dataverse refused {route} ({status}): {detail}", status=status, code=code)


class WebApi:
    def __init__(
        self,
        environment_url: str,
        token: TokenSource,
        *,
        client: httpx.AsyncClient | None = None,
        max_attempts: int = 5,
        max_retry_wait: float = 30.0,
        backoff_base: float = 0.5,
        concurrency: int = 8,
    ) -> None:
        self.root = environment_url.rstrip("/") + API
        self._token = token
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=10.0))
        self.max_attempts = max(1, max_attempts)
        self.max_retry_wait = max_retry_wait
        self.backoff_base = backoff_base
        self._gate = asyncio.Semaphore(concurrency)

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    def backoff(self, attempt: int) -> float:
        ceiling = min(self.max_retry_wait, self.backoff_base * 2.0**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def send(
        self,
        method: str,
        path: str,
        route: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        missing_ok: bool = False,
        resend: bool = True,
    ) -> httpx.Response | None:
        """One Web API call with the retry policy. `path` is relative to `/api/data/v9.2/` (or an
        absolute link Dataverse gave: a nextLink or deltaLink); `route` (no values) is what is logged."""
        url = path if path.startswith(("https://", "http://")) else self.root + path
        failure: CrmError | None = None
        for attempt in range(self.max_attempts):
            try:
                head = {
                    "Authorization": f"Bearer {await self._token()}",
                    "Accept": "application/json",
                    "OData-MaxVersion": "4.0",
                    "OData-Version": "4.0",
                    **(headers or {}),
                }
                async with self._gate:
                    response = await self._client.request(
                        method, url, params=params, json=json, content=content, headers=head
                    )
            except httpx.TransportError as exc:
                failure = CrmRetryableError(f"Dataverse {route} failed: {type(exc).__name__}")
                connect = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if not resend and not connect:
                    raise failure from exc
                wait = self.backoff(attempt)
            else:
                logger.debug(
                    "dataverse_call route=%s status=%d attempt=%d", route, response.status_code, attempt
                )
                status = response.status_code
                if status < 400:
                    return response
                if status == 404 and missing_ok:
                    return None
                wait_text = response.headers.get("retry-after")
                retry_after = parse_retry_after(wait_text)
                failure = error_of(status, _json(response), route, retry_after)
                if not isinstance(failure, CrmRetryableError):
                    raise failure
                if status != 429 and not resend:
                    raise failure
                if retry_after is not None and retry_after > self.max_retry_wait:
                    raise failure
                wait = retry_after if retry_after is not None else self.backoff(attempt)
            if attempt + 1 < self.max_attempts:
                logger.info("dataverse_retry route=%s attempt=%d wait=%.2f", route, attempt + 1, wait)
                await asyncio.sleep(wait)
        assert failure is not None
        raise failure

    async def json(self, method: str, path: str, route: str, **kwargs: Any) -> Any:
        response = await self.send(method, path, route, **kwargs)
        return None if response is None else _json(response)

    async def batch(
        self, body: multipart.BatchBody, route: str, *, resend: bool
    ) -> list[multipart.PartResult]:
        """One `$batch` (with `Prefer: odata.continue-on-error`, so one failed operation or change set
        stops only itself). `resend`: safe to send again after a 5xx (reads only)."""
        if body.size() > multipart.MAX_OPERATIONS:
            raise ValueError(f"a $batch holds at most {multipart.MAX_OPERATIONS} operations")
        content_type, content = body.render()
        headers = {"Content-Type": content_type, "Prefer": "odata.continue-on-error"}
        response = await self.send("POST", "$batch", route, content=content, headers=headers, resend=resend)
        assert response is not None
        kind = response.headers.get("content-type", "")
        if not kind.startswith("multipart/mixed"):
            raise CrmRetryableError(
                f"Dataverse {route} answered {response.status_code} without a multipart body"
            )
        return multipart.parse(kind, response.content)


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None
