"""Checks that a mailbox is reachable with the permissions each of its streams needs (`crmsync check`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.errors import GraphError
from shared.model import UserConfig

if TYPE_CHECKING:  # msgraph costs ~0.4 s to import: not at function indexing, only when services are built
    from msgraph.graph_service_client import GraphServiceClient

    from shared.graph.client import GraphCaller


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


class MailboxProbe:
    def __init__(self, client: GraphServiceClient, caller: GraphCaller) -> None:
        self._client = client
        self._caller = caller

    async def _one(self, upn: str, name: str, permission: str, call: Callable[[], Awaitable[Any]]) -> Check:
        try:
            await self._caller.call(upn, call)
        except GraphError as error:
            return Check(name, False, f"{error} (needs {permission})")
        return Check(name, True, f"reachable ({permission})")

    async def check(self, config: UserConfig) -> list[Check]:
        user = self._client.users.by_user_id(config.upn)
        checks: list[Check] = []
        if config.mail:
            for folder in config.mail_folders:
                builder = user.mail_folders.by_mail_folder_id(folder)
                checks.append(await self._one(config.upn, f"mail folder {folder}", "Mail.Read", builder.get))
        if config.contacts:
            checks.append(
                await self._one(config.upn, "contact folders", "Contacts.ReadWrite", user.contact_folders.get)
            )
        if config.calendar:
            checks.append(await self._one(config.upn, "calendar", "Calendars.Read", user.calendar.get))
        return checks
