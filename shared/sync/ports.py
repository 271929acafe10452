"""What the engine needs from Microsoft Graph (implemented by `shared/graph`)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from shared.graph.mail import MailPage
from shared.model import MailMessage


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
