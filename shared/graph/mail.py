"""Reads a mail folder's message delta with msgraph-sdk and turns it into domain records.

Every request re-sends the Prefer set (page size, immutable ids, HTML bodies): Graph does not keep
Prefer headers in its tokens. Links are used verbatim (`with_url`), never rebuilt. The first request
of a round carries `$select`, `$expand` and the `receivedDateTime ge` window; Graph encodes them in
the token, so later pages must not repeat them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.headers_collection import HeadersCollection
from msgraph.generated.models.message import Message
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.users.item.mail_folders.item.mail_folder_item_request_builder import (
    MailFolderItemRequestBuilder,
)
from msgraph.generated.users.item.mail_folders.item.messages.delta.delta_request_builder import (
    DeltaRequestBuilder,
)
from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
    MessagesRequestBuilder,
)
from msgraph.generated.users.item.messages.item.message_item_request_builder import MessageItemRequestBuilder
from msgraph.graph_service_client import GraphServiceClient

from shared.graph.client import GraphCaller
from shared.model import Address, Attachment, MailMessage, MessageChange, MessageRemoved, Page

SENSITIVITY_PROPERTY = "Integer 0x0036"  # PidTagSensitivity: v1.0 messages have no sensitivity property
_SENSITIVITY = {"0": "normal", "1": "personal", "2": "private", "3": "confidential"}
SELECT = [
    "id", "internetMessageId", "subject", "uniqueBody", "from", "sender", "toRecipients", "ccRecipients",
    "sentDateTime", "receivedDateTime", "conversationId", "categories", "isDraft", "hasAttachments",
    "parentFolderId", "changeKey",
]  # fmt: skip
EXPAND = [
    "attachments($select=name,size)",
    f"singleValueExtendedProperties($filter=id eq '{SENSITIVITY_PROPERTY}')",
]


def prefer_headers(page_size: int) -> HeadersCollection:
    headers = HeadersCollection()  # always a new collection (a shared default leaked in old kiota)
    headers.add("Prefer", f"odata.maxpagesize={page_size}")
    headers.add("Prefer", 'IdType="ImmutableId"')
    headers.add("Prefer", 'outlook.body-content-type="html"')
    return headers


class GraphMailReader:
    def __init__(self, client: GraphServiceClient, caller: GraphCaller, *, page_size: int = 100) -> None:
        self._client = client
        self._caller = caller
        self._page_size = page_size

    def _delta(self, user: str, folder: str) -> DeltaRequestBuilder:
        builder: DeltaRequestBuilder = (
            self._client.users.by_user_id(user).mail_folders.by_mail_folder_id(folder).messages.delta
        )
        return builder

    async def read_page(
        self, user: str, folder: str, link: str, since: datetime | None
    ) -> Page[MessageChange]:
        """One delta page: from `link` (a saved nextLink/deltaLink) or, when empty, a new round.

        The SDK builds and sends the request; the answer is parsed into domain records without its
        models (`GraphCaller.fetch_json`, which says why)."""
        builder = self._delta(user, folder)
        if link:
            config: RequestConfiguration[Any] = RequestConfiguration(headers=prefer_headers(self._page_size))
            info = builder.with_url(link).to_get_request_information(config)
        else:
            params = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=SELECT, expand=EXPAND)
            if since is not None:  # newest first: a round Graph caps at 5,000 holds the newest 5,000
                params.filter = f"receivedDateTime ge {_instant_literal(since)}"
                params.orderby = ["receivedDateTime desc"]
            config = RequestConfiguration(headers=prefer_headers(self._page_size), query_parameters=params)
            info = builder.to_get_request_information(config)
        return await self._fetch(user, info)

    async def list_page(
        self, user: str, folder: str, link: str, since: datetime, until: datetime | None = None
    ) -> Page[MessageChange]:
        """One page of a plain (non-delta) listing of the folder's messages received since `since`
        and, with `until`, at or before `until` (in that whole second), newest first.

        Used after a filtered first round that hit Graph's 5,000-message cap: that round holds the
        newest messages of the window (it is ordered newest first), so only the messages received at
        or before the oldest of them are listed (`le`: those sharing its timestamp are listed again
        rather than lost). A listing has no cap; its pages carry only nextLinks. `$orderby` names the
        property the filter starts with, as Exchange requires (else 400 InefficientFilter)."""
        builder = self._client.users.by_user_id(user).mail_folders.by_mail_folder_id(folder).messages
        config: RequestConfiguration[Any] = RequestConfiguration(headers=prefer_headers(self._page_size))
        if link:
            info = builder.with_url(link).to_get_request_information(config)
        else:
            window = f"receivedDateTime ge {_instant_literal(since)}"
            if until is not None:
                window += f" and receivedDateTime le {_instant_literal(until, upper=True)}"
            config.query_parameters = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
                select=SELECT,
                expand=EXPAND,
                top=self._page_size,
                filter=window,
                orderby=["receivedDateTime desc"],
            )
            info = builder.to_get_request_information(config)
        return await self._fetch(user, info)

    async def _fetch(self, user: str, info: Any) -> Page[MessageChange]:
        body = await self._caller.fetch_json(user, self._client.request_adapter, info, "a message page")
        items = body.get("value")
        if not isinstance(items, list):
            items = []
        changes = [_change_from_json(m) for m in items if isinstance(m, dict)]
        return Page(
            changes=changes,
            next_link=str(body.get("@odata.nextLink") or ""),
            delta_link=str(body.get("@odata.deltaLink") or ""),
        )

    async def get_message(self, user: str, message_id: str) -> MailMessage | None:
        """The message by immutable id; None when it no longer exists (404)."""
        from shared.errors import GraphNotFound

        params = MessageItemRequestBuilder.MessageItemRequestBuilderGetQueryParameters(
            select=SELECT, expand=EXPAND
        )
        config: RequestConfiguration[Any] = RequestConfiguration(
            headers=prefer_headers(self._page_size), query_parameters=params
        )
        builder = self._client.users.by_user_id(user).messages.by_message_id(message_id)
        try:
            message = await self._caller.call(user, lambda: builder.get(request_configuration=config))
        except GraphNotFound:
            return None
        return _to_message(message) if message is not None else None

    async def folder_id(self, user: str, folder: str) -> str:
        """The folder's id (a well-known name such as "inbox" resolves to the opaque id Graph uses in
        `parentFolderId`)."""
        params = MailFolderItemRequestBuilder.MailFolderItemRequestBuilderGetQueryParameters(select=["id"])
        config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=params)
        builder = self._client.users.by_user_id(user).mail_folders.by_mail_folder_id(folder)
        found = await self._caller.call(user, lambda: builder.get(request_configuration=config))
        return (found.id or folder) if found is not None else folder


def _instant_literal(when: datetime, *, upper: bool = False) -> str:
    """An OData DateTimeOffset literal in UTC, to the second (as Graph renders receivedDateTime). An
    upper bound stands for its whole second, so it takes that second's last tick."""
    text = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (".9999999Z" if upper else "Z")


def _change_from_json(item: dict[str, Any]) -> MessageChange:
    if "@removed" in item:
        return MessageRemoved(id=str(item.get("id") or ""))
    return _message_from_json(item)


def _address_json(recipient: Any) -> Address | None:
    email = recipient.get("emailAddress") if isinstance(recipient, dict) else None
    if not isinstance(email, dict) or not email.get("address"):
        return None
    return Address(address=str(email["address"]), name=str(email.get("name") or ""))


def _addresses_json(recipients: Any) -> tuple[Address, ...]:
    found = (_address_json(r) for r in recipients or [])
    return tuple(a for a in found if a is not None)


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _sensitivity_json(item: dict[str, Any]) -> Literal["normal", "personal", "private", "confidential"]:
    for prop in item.get("singleValueExtendedProperties") or []:
        if not isinstance(prop, dict):
            continue
        if str(prop.get("id") or "").replace(" ", "").lower() in {"integer0x0036", "integer0x36"}:
            value = _SENSITIVITY.get(str(prop.get("value") or "0").strip(), "normal")
            return value  # type: ignore[return-value]
    return "normal"


def _message_from_json(item: dict[str, Any]) -> MailMessage:
    """The same mapping as `_to_message`, from the JSON of a delta page."""
    body = item.get("uniqueBody") or item.get("body")
    body = body if isinstance(body, dict) else None
    content_type = str((body or {}).get("contentType") or "html").lower()
    return MailMessage(
        id=str(item.get("id") or ""),
        internet_message_id=str(item.get("internetMessageId") or ""),
        subject=str(item.get("subject") or ""),
        body_html=str(body.get("content") or "") if body is not None else "",
        body_type="text" if content_type == "text" else "html",
        sender=_address_json(item.get("from")) or _address_json(item.get("sender")),
        to=_addresses_json(item.get("toRecipients")),
        cc=_addresses_json(item.get("ccRecipients")),
        sent_at=_instant(item.get("sentDateTime")),
        received_at=_instant(item.get("receivedDateTime")),
        conversation_id=str(item.get("conversationId") or ""),
        categories=tuple(str(c) for c in item.get("categories") or ()),
        is_draft=bool(item.get("isDraft")),
        sensitivity=_sensitivity_json(item),
        attachments=tuple(
            Attachment(name=str(a.get("name") or ""), size=int(a.get("size") or 0))
            for a in item.get("attachments") or []
            if isinstance(a, dict)
        ),
        has_attachments=bool(item.get("hasAttachments")),
        folder_id=str(item.get("parentFolderId") or ""),
        change_key=str(item.get("changeKey") or ""),
    )


def _address(recipient: Recipient | None) -> Address | None:
    if recipient is None or recipient.email_address is None or not recipient.email_address.address:
        return None
    return Address(address=recipient.email_address.address, name=recipient.email_address.name or "")


def _addresses(recipients: Sequence[Recipient] | None) -> tuple[Address, ...]:
    found = (_address(r) for r in recipients or [])
    return tuple(a for a in found if a is not None)


def _sensitivity(message: Message) -> Literal["normal", "personal", "private", "confidential"]:
    for prop in message.single_value_extended_properties or []:
        if (prop.id or "").replace(" ", "").lower() in {"integer0x0036", "integer0x36"}:
            value = _SENSITIVITY.get(str(prop.value or "0").strip(), "normal")
            return value  # type: ignore[return-value]
    return "normal"


def _to_message(message: Message) -> MailMessage:
    body = message.unique_body or message.body
    content_type = str(getattr(getattr(body, "content_type", None), "value", "html") or "html").lower()
    return MailMessage(
        id=message.id or "",
        internet_message_id=message.internet_message_id or "",
        subject=message.subject or "",
        body_html=(body.content or "") if body is not None else "",
        body_type="text" if content_type == "text" else "html",
        sender=_address(message.from_) or _address(message.sender),
        to=_addresses(message.to_recipients),
        cc=_addresses(message.cc_recipients),
        sent_at=message.sent_date_time,
        received_at=message.received_date_time,
        conversation_id=message.conversation_id or "",
        categories=tuple(message.categories or ()),
        is_draft=bool(message.is_draft),
        sensitivity=_sensitivity(message),
        attachments=tuple(
            Attachment(name=a.name or "", size=int(a.size or 0)) for a in message.attachments or []
        ),
        has_attachments=bool(message.has_attachments),
        folder_id=message.parent_folder_id or "",
        change_key=message.change_key or "",
    )
