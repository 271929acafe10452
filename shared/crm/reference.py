"""`ReferenceCrmConnector`: the CRM port over the project's JSON API (`docs/crm-api.yaml`), with httpx.

Retries 429, 5xx, timeouts and connection failures with exponential backoff and jitter, honouring
Retry-After (seconds, fractional seconds or an HTTP date). A wait longer than `max_retry_after` is not
slept inside the job: `CrmRetryableError` is raised at once with `.retry_after` so the caller can
reschedule. Other 4xx raise `CrmRejectedError` carrying the server's reason. Creates without a key
(`POST /contacts`) are not repeated after an ambiguous failure. Nothing logged carries a body, an
address or a key: log lines name the route template only.

`upsert_journals` sends up to 100 journals per `POST /journals/bulk` and answers per journal; against a
CRM without that route (API 1.0: 404 / 405) it falls back to one `PUT /journals/{key}` per journal,
`concurrency` at a time.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import httpx

from shared.crm import reference_json as wire
from shared.errors import CrmError, CrmRejectedError, CrmRetryableError
from shared.model import (
    Appointment,
    ContactFeedPage,
    CrmAppointmentChange,
    CrmContact,
    CrmContactRemoved,
    CrmRef,
    CrmTask,
    CrmTaskRemoved,
    Journal,
    PersonRef,
    TaskFeedPage,
)
from shared.ports.crm import Capabilities, Health
from shared.retry_after import parse_retry_after

logger = logging.getLogger(__name__)
LOOKUP_BATCH = 500
BULK_JOURNALS = 100  # journals per POST /journals/bulk (the API's limit)


def _key(key: str) -> str:
    """A key (or id) as one path segment. `quote` leaves dots alone, and a segment that is "." or ".."
    is removed by the HTTP client (RFC 3986 dot segments): `PUT /journals/..` would be `PUT /`. So dots
    are escaped too; the server decodes `%2E` back to the key's own dot."""
    return quote(key, safe="").replace(".", "%2E")


def _reason(response: httpx.Response) -> str:
    try:
        error = response.json().get("error") or {}
        message = str(error.get("message") or error.get("code") or "")
    except (ValueError, AttributeError):
        message = ""
    return (message or response.reason_phrase or "no reason given")[:300]


def _failure(method: str, route: str, response: httpx.Response) -> CrmRetryableError:
    """The retryable error for a 429/5xx answer; raises `CrmRejectedError` for any other 4xx."""
    status = response.status_code
    if status == 401:
        raise CrmRejectedError(
            f"CRM refused the credentials (401) on {method} {route}: {_reason(response)}", status=401
        )
    if status == 403:
        raise CrmRejectedError(
            f"CRM denied access (403) on {method} {route}: {_reason(response)}", status=403
        )
    if status != 429 and status < 500:
        raise CrmRejectedError(
            f"CRM rejected {method} {route} ({status}): {_reason(response)}", status=status
        )
    wait = parse_retry_after(response.headers.get("retry-after"))
    return CrmRetryableError(
        f"CRM {method} {route} answered {status}: {_reason(response)}", status=status, retry_after=wait
    )


class ReferenceCrmConnector:
    capabilities = Capabilities()

    def __init__(
        self,
        base_url: str,
        token: str,
        auth_scheme: str = "bearer",
        *,
        client: httpx.AsyncClient | None = None,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 30.0,
        timeout: float = 15.0,
        page_size: int = 500,
        concurrency: int = 8,
    ) -> None:
        if auth_scheme not in ("bearer", "api-key"):
            raise ValueError("auth_scheme must be 'bearer' or 'api-key'")
        self._base = base_url.rstrip("/")
        self._headers = (
            {"Authorization": f"Bearer {token}"} if auth_scheme == "bearer" else {"X-API-Key": token}
        )
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.page_size = page_size
        self._random = random.Random()
        self._gate = asyncio.Semaphore(concurrency)  # the one-by-one fallback of upsert_journals
        self._bulk = True  # the CRM serves POST /journals/bulk (until it answers 404 / 405)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * 2.0**attempt)
        return ceiling / 2 + self._random.uniform(0, ceiling / 2)

    async def _call(
        self,
        method: str,
        route: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        missing_ok: bool = False,
        repeatable: bool = True,
        retries: int | None = None,
    ) -> httpx.Response | None:
        """One API call with the retry policy. `route` (a template, no values) is what gets logged."""
        budget = self.max_retries if retries is None else retries
        for attempt in range(budget + 1):
            try:
                response = await self._client.request(
                    method, self._base + path, json=json, params=params, headers=self._headers
                )
            except httpx.TransportError as exc:
                failure = CrmRetryableError(f"CRM {method} {route} failed: {type(exc).__name__}")
                if not repeatable and not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                    raise failure from exc
            else:
                logger.debug(
                    "crm_call method=%s route=%s status=%d attempt=%d",
                    method,
                    route,
                    response.status_code,
                    attempt,
                )
                if response.status_code < 400:
                    return response
                if response.status_code == 404 and missing_ok:
                    return None
                failure = _failure(method, route, response)  # raises CrmRejectedError for a refusal
                if not repeatable and failure.status != 429:
                    raise failure
            if attempt == budget or (failure.retry_after or 0.0) > self.max_retry_after:
                raise failure
            delay = failure.retry_after if failure.retry_after is not None else self._backoff(attempt)
            logger.info(
                "crm_retry method=%s route=%s attempt=%d wait=%.2f", method, route, attempt + 1, delay
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _json(self, method: str, route: str, path: str, **kwargs: Any) -> Any:
        response = await self._call(method, route, path, **kwargs)
        if response is None:
            return None
        try:
            return response.json()
        except ValueError:
            raise CrmRetryableError(
                f"CRM {method} {route} answered {response.status_code} without JSON"
            ) from None

    async def find_people(self, addresses: Sequence[str]) -> dict[str, list[PersonRef]]:
        wanted = list(dict.fromkeys(a.strip().lower() for a in addresses))
        found: dict[str, list[PersonRef]] = {}
        for start in range(0, len(wanted), LOOKUP_BATCH):
            batch = wanted[start : start + LOOKUP_BATCH]
            data = await self._json("POST", "/people/lookup", "/people/lookup", json={"addresses": batch})
            matches = data.get("matches") or {}
            for address in batch:
                found[address] = [wire.parse_person(p) for p in matches.get(address) or []]
        return found

    async def upsert_journal(self, journal: Journal) -> CrmRef:
        path = f"/journals/{_key(journal.key)}"
        return wire.parse_ref(
            await self._json("PUT", "/journals/{key}", path, json=wire.journal_to_json(journal))
        )

    async def upsert_journals(self, journals: Sequence[Journal]) -> list[CrmRef | CrmError]:
        outcomes: list[CrmRef | CrmError] = []
        for start in range(0, len(journals), BULK_JOURNALS):
            outcomes += await self._upsert_batch(journals[start : start + BULK_JOURNALS])
        return outcomes

    async def _upsert_batch(self, batch: Sequence[Journal]) -> list[CrmRef | CrmError]:
        """One bulk request, then the journals it answered with a retryable error again, with the
        retry policy of a single call (backoff, Retry-After, `max_retries`)."""
        outcomes: list[CrmRef | CrmError] = [CrmRetryableError("not sent")] * len(batch)
        todo = list(range(len(batch)))
        for attempt in range(self.max_retries + 1):
            answered = await self._upsert_bulk([batch[n] for n in todo]) if self._bulk else None
            if answered is None:  # no bulk route: one PUT each (each with its own retries)
                answered = list(await asyncio.gather(*(self._upsert_one(batch[n]) for n in todo)))
                for n, outcome in zip(todo, answered, strict=True):
                    outcomes[n] = outcome
                return outcomes
            again = []
            for n, outcome in zip(todo, answered, strict=True):
                outcomes[n] = outcome
                if isinstance(outcome, CrmRetryableError):
                    again.append(n)
            waits = [outcomes[n].retry_after for n in again]  # type: ignore[union-attr]
            wait = max((w for w in waits if w is not None), default=self._backoff(attempt))
            if not again or attempt == self.max_retries or wait > self.max_retry_after:
                break
            logger.info("crm_retry method=POST route=/journals/bulk attempt=%d items=%d wait=%.2f",
                        attempt + 1, len(again), wait)  # fmt: skip
            await asyncio.sleep(wait)
            todo = again
        return outcomes

    async def _upsert_bulk(self, batch: Sequence[Journal]) -> list[CrmRef | CrmError] | None:
        """One bulk request; None when the CRM has no bulk route (then it is not asked again)."""
        body = {"journals": [{"key": j.key, **wire.journal_to_json(j)} for j in batch]}
        try:
            data = await self._json("POST", "/journals/bulk", "/journals/bulk", json=body)
        except CrmRejectedError as exc:
            if exc.status not in (404, 405):
                raise
            self._bulk = False
            return None
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list) or len(results) != len(batch):
            raise CrmRetryableError("CRM POST /journals/bulk answered without one result per journal")
        outcomes: list[CrmRef | CrmError] = []
        for result in results:
            error = result.get("error") if isinstance(result, dict) else None
            if not isinstance(error, dict):
                outcomes.append(wire.parse_ref(result))
                continue
            status = int(error.get("status") or 422)
            reason = str(error.get("message") or error.get("code") or "no reason given")[:300]
            message = f"CRM POST /journals/bulk answered {status} for this journal: {reason}"
            if status == 429 or status >= 500:
                wait = parse_retry_after(str(error["retryAfter"])) if error.get("retryAfter") else None
                outcomes.append(CrmRetryableError(message, status=status, retry_after=wait))
            else:
                outcomes.append(CrmRejectedError(message, status=status))
        return outcomes

    async def _upsert_one(self, journal: Journal) -> CrmRef | CrmError:
        async with self._gate:
            try:
                return await self.upsert_journal(journal)
            except CrmError as error:
                return error

    async def get_journal(self, key: str) -> Journal | None:
        data = await self._json("GET", "/journals/{key}", f"/journals/{_key(key)}", missing_ok=True)
        return None if data is None else wire.journal_from_json(data)

    async def upsert_appointment(self, appointment: Appointment) -> CrmRef:
        path = f"/appointments/by-key/{_key(appointment.key)}"
        body = wire.appointment_to_json(appointment)
        return wire.parse_ref(await self._json("PUT", "/appointments/by-key/{key}", path, json=body))

    async def cancel_appointment(self, key: str) -> None:
        path = f"/appointments/by-key/{_key(key)}/cancel"
        await self._call("POST", "/appointments/by-key/{key}/cancel", path, missing_ok=True)

    async def delete_appointment(self, key: str) -> None:
        path = f"/appointments/by-key/{_key(key)}"
        await self._call("DELETE", "/appointments/by-key/{key}", path, missing_ok=True)

    async def get_appointment(self, key: str) -> Appointment | None:
        path = f"/appointments/by-key/{_key(key)}"
        data = await self._json("GET", "/appointments/by-key/{key}", path, missing_ok=True)
        return None if data is None else wire.appointment_from_json(data)

    async def _pages(self, route: str, owner: str, cursor: str | None) -> tuple[list[dict[str, Any]], str]:
        pages: list[dict[str, Any]] = []
        while True:
            params = {"owner": owner, "limit": str(self.page_size), **({"cursor": cursor} if cursor else {})}
            page = await self._json("GET", route, route, params=params)
            pages.append(page)
            cursor = str(page["cursor"])
            if not page.get("hasMore"):
                return pages, cursor

    async def appointment_changes(
        self, owner: str, cursor: str | None
    ) -> tuple[list[CrmAppointmentChange], str]:
        pages, next_cursor = await self._pages("/appointments/changes", owner, cursor)
        latest = {item["id"]: item for page in pages for item in page["changes"]}
        return [wire.appointment_change_from_json(item) for item in latest.values()], next_cursor

    async def upsert_contact(self, contact: CrmContact) -> CrmRef:
        body = wire.contact_to_json(contact)
        if contact.ref is not None:
            if contact.key:
                body["key"] = contact.key
            path = f"/contacts/{_key(contact.ref.id)}"  # only while it is still this owner's (API 1.2)
            data = await self._json(
                "PATCH", "/contacts/{id}", path, json=body, params={"owner": contact.owner}
            )
        elif contact.key:
            path = f"/contacts/by-key/{_key(contact.key)}"
            data = await self._json("PUT", "/contacts/by-key/{key}", path, json=body)
        else:
            data = await self._json("POST", "/contacts", "/contacts", json=body, repeatable=False)
        return wire.parse_ref(data)

    async def get_contact(self, ref: CrmRef) -> CrmContact | None:
        data = await self._json("GET", "/contacts/{id}", f"/contacts/{_key(ref.id)}", missing_ok=True)
        return None if data is None else wire.contact_from_json(data)

    async def delete_contact(self, ref: CrmRef, owner: str) -> None:
        path = f"/contacts/{_key(ref.id)}"
        await self._call("DELETE", "/contacts/{id}", path, params={"owner": owner}, missing_ok=True)

    async def contact_changes(self, owner: str, cursor: str | None) -> ContactFeedPage:
        pages, next_cursor = await self._pages("/contacts/changes", owner, cursor)
        changes = tuple(
            wire.contact_from_json(item)
            if live
            else CrmContactRemoved(ref=CrmRef(id=item["id"]), owner=owner)
            for item, live in _latest(pages)
        )
        return ContactFeedPage(changes=changes, cursor=next_cursor)

    async def upsert_task(self, task: CrmTask) -> CrmRef:
        body = wire.task_to_json(task)
        if task.ref is not None:
            path = f"/tasks/{_key(task.ref.id)}"
            data = await self._json("PATCH", "/tasks/{id}", path, json=body)
        elif task.key:
            path = f"/tasks/by-key/{_key(task.key)}"
            data = await self._json("PUT", "/tasks/by-key/{key}", path, json=body)
        else:
            data = await self._json("POST", "/tasks", "/tasks", json=body, repeatable=False)
        return wire.parse_ref(data)

    async def get_task(self, ref: CrmRef) -> CrmTask | None:
        data = await self._json("GET", "/tasks/{id}", f"/tasks/{_key(ref.id)}", missing_ok=True)
        return None if data is None else self._task(data)

    async def delete_task(self, ref: CrmRef) -> None:
        await self._call("DELETE", "/tasks/{id}", f"/tasks/{_key(ref.id)}", missing_ok=True)

    async def task_changes(self, owner: str, cursor: str | None) -> TaskFeedPage:
        pages, next_cursor = await self._pages("/tasks/changes", owner, cursor)
        changes = tuple(
            self._task(item) if live else CrmTaskRemoved(ref=CrmRef(id=item["id"]), owner=owner)
            for item, live in _latest(pages)
        )
        return TaskFeedPage(changes=changes, cursor=next_cursor)

    def _task(self, data: dict[str, Any]) -> CrmTask:
        task = wire.task_from_json(data)
        return replace(task, url=f"{self._base}/#task-{quote(str(data['id']), safe='')}")

    async def check(self) -> Health:
        try:
            data = await self._json("GET", "/health", "/health", retries=1)
        except (CrmRejectedError, CrmRetryableError) as exc:
            return Health(ok=False, detail=str(exc))
        return Health(ok=True, detail=f"reachable, credentials accepted (API {data.get('version', '?')})")

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()


def _latest(pages: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], bool]]:
    """The items of a change feed read over pages, each reported once where its latest event falls:
    (item, True) for a change, (item, False) for a removal."""
    latest: dict[str, tuple[dict[str, Any], bool]] = {}
    for page in pages:
        events = [(item["seq"], item, True) for item in page["changes"]]
        events += [(item["seq"], item, False) for item in page["removals"]]
        for _, item, live in sorted(events, key=lambda e: e[0]):
            latest.pop(item["id"], None)
            latest[item["id"]] = (item, live)
    return list(latest.values())
