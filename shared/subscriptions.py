"""Keeps one Graph subscription per enabled user and stream, and answers lifecycle events.

- upkeep (timer): creates missing subscriptions, recreates those Graph dropped without a lifecycle
  event (one `GET /subscriptions` lists them all), renews those within `RENEW_BEFORE` of expiry,
  deletes those of disabled users or dropped streams.
- lifecycle: the webhook only verifies and enqueues a `lifecycle:<event>` job; the worker then calls
  `on_lifecycle` (`reauthorizationRequired` → renew; `subscriptionRemoved` → recreate; `missed` →
  nothing to fix) and syncs the stream by delta, which covers whatever changed while notifications
  were not flowing.

Each subscription has its own random clientState (kept in SyncSubscriptions, compared in constant
time by the notification handler). Notification URLs carry the function key in their query string;
Graph passes it back on every POST, so only Graph (and admins) can call the webhook.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote

from shared.errors import GraphError, GraphNotFound, UserConfigError
from shared.model import Cursor, StreamKind, SubscriptionRecord
from shared.ports.state import JobQueue, StateStore
from shared.sync.stream import Stream
from shared.users import EVERYTHING, Granted, parse_user

if TYPE_CHECKING:  # keeps msgraph out of the function app's import (cold start)
    from shared.graph.subscriptions import GraphSubscriptions

logger = logging.getLogger(__name__)

LIFETIME = timedelta(minutes=4200)  # Graph's maximum for Outlook resources is 4,230 minutes
RENEW_BEFORE = timedelta(hours=24)


@dataclass
class UpkeepReport:
    created: int = 0
    renewed: int = 0
    deleted: int = 0
    failed: list[str] = field(default_factory=list)


class SubscriptionKeeper:
    def __init__(
        self,
        state: StateStore,
        graph: GraphSubscriptions,
        queue: JobQueue,
        streams: Mapping[StreamKind, Stream],
        *,
        webhook_base_url: str,
        webhook_key: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        granted: Granted = EVERYTHING,
    ) -> None:
        self._state = state
        self._graph = graph
        self._queue = queue
        self._streams = streams
        self._base = webhook_base_url.rstrip("/")
        self._key = webhook_key
        self._clock = clock
        self._granted = granted  # no subscription for a stream the deployment has no permission for

    @property
    def enabled(self) -> bool:
        return bool(self._base)

    def _url(self, function: str) -> str:
        url = f"{self._base}/{function}"
        return f"{url}?code={quote(self._key, safe='')}" if self._key else url

    async def _wanted(self) -> dict[tuple[str, str], str]:
        """(user, resource) → stream, for every enabled user with a valid row."""
        wanted: dict[tuple[str, str], str] = {}
        for row in await self._state.list_users():
            try:
                config = parse_user(row.upn, row.columns, self._granted)
            except UserConfigError:
                continue
            if not config.enabled:
                continue
            cursors = await self._state.list_cursors(config.upn)
            for stream in config.streams():
                policy = self._streams.get(stream.kind)
                resource = (
                    policy.subscription(config, stream, cursors.get(stream) or Cursor()) if policy else None
                )
                if resource:
                    wanted[(config.upn, resource)] = stream
        return wanted

    async def upkeep(self) -> UpkeepReport:
        report = UpkeepReport()
        if not self.enabled:
            return report
        wanted = await self._wanted()
        existing = {(r.user, r.resource): r for r in await self._state.list_subscriptions()}
        in_graph = await self._graph.list_ids() if existing else set()
        now = self._clock()
        for (user, resource), record in existing.items():
            try:
                if (user, resource) not in wanted:
                    await self._graph.delete(user, record.subscription_id)
                    await self._state.delete_subscription(user, resource)
                    report.deleted += 1
                elif record.subscription_id not in in_graph:  # Graph dropped it without telling us
                    await self._state.delete_subscription(user, resource)
                    await self.create(user, resource, record.stream)
                    report.created += 1
                elif record.expires - now < RENEW_BEFORE:
                    await self._renew_or_recreate(record)
                    report.renewed += 1
            except GraphError as error:
                report.failed.append(f"{user}: {error}")
        for (user, resource), stream in wanted.items():
            if (user, resource) in existing:
                continue
            try:
                await self.create(user, resource, stream)
                report.created += 1
            except GraphError as error:
                report.failed.append(f"{user}: {error}")
                await self._state.update_status(user, {"LastError": f"subscription for {stream}: {error}"})
        return report

    async def create(self, user: str, resource: str, stream: str) -> SubscriptionRecord:
        client_state = secrets.token_urlsafe(32)
        subscription_id, expires = await self._graph.create(
            user,
            resource=resource,
            notification_url=self._url("notifications"),
            lifecycle_url=self._url("lifecycle"),
            client_state=client_state,
            expires=self._clock() + LIFETIME,
        )
        record = SubscriptionRecord(user, resource, stream, subscription_id, client_state, expires)
        await self._state.put_subscription(record)
        return record

    async def _renew_or_recreate(self, record: SubscriptionRecord) -> None:
        try:
            expires = await self._graph.renew(record.user, record.subscription_id, self._clock() + LIFETIME)
        except GraphNotFound:
            await self._state.delete_subscription(record.user, record.resource)
            await self.create(record.user, record.resource, record.stream)
            return
        await self._state.put_subscription(
            SubscriptionRecord(record.user, record.resource, record.stream, record.subscription_id,
                               record.client_state, expires)
        )  # fmt: skip

    async def on_lifecycle(self, user: str, stream: str, event: str) -> None:
        """Called by the worker for a `lifecycle:<event>` job, before it syncs the stream."""
        records = [r for r in await self._state.list_subscriptions(user) if r.stream == stream]
        for record in records:
            if event == "reauthorizationRequired":
                await self._renew_or_recreate(record)
            elif event == "subscriptionRemoved":
                await self._state.delete_subscription(record.user, record.resource)
                await self.create(record.user, record.resource, record.stream)
