"""Checks that a mailbox is reachable with the permissions each of its streams needs (`crmsync check`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.errors import GraphError
from shared.model import UserConfig
from shared.users import EVERYTHING, WITHHELD, Granted

if TYPE_CHECKING:  # msgraph costs ~0.4 s to import: not at function indexing, only when services are built
    from msgraph.graph_service_client import GraphServiceClient

    from shared.graph.client import GraphCaller


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


class MailboxProbe:
    """Tries what each stream the user syncs needs, and nothing the deployment does not ask for: a
    stream switched off because the deployment lacks its permission (CONTACTS_SYNC, CALENDAR_SYNC,
    TASKS_SYNC) is
    reported as such, not tried."""

    def __init__(
        self, client: GraphServiceClient, caller: GraphCaller, granted: Granted = EVERYTHING
    ) -> None:
        self._client = client
        self._caller = caller
        self._granted = granted

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
        if config.contacts and self._granted.contacts:
            checks.append(
                await self._one(config.upn, "contact folders", "Contacts.ReadWrite", user.contact_folders.get)
            )
        elif config.contacts:
            checks.append(_not_asked_for("contact folders", "Contacts"))
        if config.calendar and self._granted.calendar:
            permission = "Calendars.ReadWrite" if config.calendar_push_from_crm else "Calendars.Read"
            checks.append(await self._one(config.upn, "calendar", permission, user.calendar.get))
        elif config.calendar:
            checks.append(_not_asked_for("calendar", "Calendar"))
        if config.tasks and self._granted.tasks:
            found = await self._one(config.upn, "To Do lists", "Tasks.ReadWrite.All", user.todo.lists.get)
            checks.append(Check(found.name, found.ok, f"{found.detail}; {TASKS_REACH}"))
        elif config.tasks:
            checks.append(_not_asked_for("To Do lists", "Tasks"))
        return checks


# What an admin must know of the To Do grant, said on every check of a user with tasks on.
TASKS_REACH = (
    "Exchange's RBAC for Applications does not cover To Do, so this grant is tenant-wide: "
    "the app can reach every user's tasks in the tenant"
)


def _not_asked_for(name: str, column: str) -> Check:
    permission, flag, effect = WITHHELD[column]
    return Check(
        name, True, f"not tried: this deployment does not ask for {permission} ({flag} is off); {effect}"
    )
