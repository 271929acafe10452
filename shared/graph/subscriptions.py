"""Graph change-notification subscriptions (create, renew, delete) with msgraph-sdk."""

from __future__ import annotations

from datetime import datetime

from msgraph.generated.models.subscription import Subscription
from msgraph.graph_service_client import GraphServiceClient

from shared.errors import GraphError, GraphNotFound
from shared.graph.client import GraphCaller


class GraphSubscriptions:
    def __init__(self, client: GraphServiceClient, caller: GraphCaller) -> None:
        self._client = client
        self._caller = caller

    async def create(
        self,
        mailbox: str,
        *,
        resource: str,
        notification_url: str,
        lifecycle_url: str,
        client_state: str,
        expires: datetime,
    ) -> tuple[str, datetime]:
        body = Subscription(
            change_type="created,updated,deleted",
            notification_url=notification_url,
            lifecycle_notification_url=lifecycle_url,
            resource=resource,
            expiration_date_time=expires,
            client_state=client_state,
        )
        created = await self._caller.call(mailbox, lambda: self._client.subscriptions.post(body))
        if created is None or not created.id:
            raise GraphError("Graph created a subscription without an id")
        return created.id, created.expiration_date_time or expires

    async def renew(self, mailbox: str, subscription_id: str, expires: datetime) -> datetime:
        """Extend (which also reauthorizes). Raises GraphNotFound when Graph already removed it."""
        body = Subscription(expiration_date_time=expires)
        builder = self._client.subscriptions.by_subscription_id(subscription_id)
        updated = await self._caller.call(mailbox, lambda: builder.patch(body))
        return (updated.expiration_date_time if updated else None) or expires

    async def list_ids(self) -> set[str]:
        """Ids of every subscription this app holds in Graph (one request per page, for all users)."""
        ids: set[str] = set()
        page = await self._caller.call("", lambda: self._client.subscriptions.get())
        while page is not None:
            ids.update(s.id for s in page.value or [] if s.id)
            link = page.odata_next_link
            if not link:
                break
            page = await self._caller.call("", self._client.subscriptions.with_url(link).get)
        return ids

    async def delete(self, mailbox: str, subscription_id: str) -> None:
        builder = self._client.subscriptions.by_subscription_id(subscription_id)
        try:
            await self._caller.call(mailbox, lambda: builder.delete())
        except GraphNotFound:
            pass
