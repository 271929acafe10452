"""What the engine needs from Microsoft Graph (implemented by `shared/graph`)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from shared.graph.contacts import ContactPage, OutlookItem
from shared.graph.mail import MailPage
from shared.model import ContactFields, MailMessage


class MailSource(Protocol):
    async def read_page(self, user: str, folder: str, link: str, since: datetime | None) -> MailPage:
        """One message-delta page of a folder: from a saved link, or (link == "") a new round of the
        messages received since `since`."""
        ...

    async def get_message(self, user: str, message_id: str) -> MailMessage | None:
        """The message by immutable id, or None when it no longer exists."""
        ...

    async def folder_id(self, user: str, folder: str) -> str:
        """The id of a folder named by well-known name or id (what `MailMessage.folder_id` holds)."""
        ...

class ContactsSide(Protocol):
    """The owned Outlook contact folder (implemented by `shared/graph/contacts.py`)."""

    async def owned_folder(self, user: str, name: str) -> str: ...

    async def read_page(self, user: str, folder_id: str, link: str) -> ContactPage: ...

    async def get(self, user: str, folder_id: str, contact_id: str) -> OutlookItem | None: ...

    async def create(
        self, user: str, folder_id: str, fields: ContactFields, *, crm_id: str, notes: bool
    ) -> OutlookItem: ...

    async def update(
        self,
        user: str,
        folder_id: str,
        contact_id: str,
        fields: ContactFields,
        *,
        change_key: str,
        notes: bool,
    ) -> OutlookItem: ...

    async def delete(self, user: str, folder_id: str, contact_id: str) -> None: ...
