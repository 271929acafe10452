"""What the engine needs from Microsoft Graph (implemented by `shared/graph`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from shared.model import (
    ContactFields,
    CrmAppointmentChange,
    CrmTask,
    EventChange,
    MailMessage,
    MessageChange,
    OutlookChange,
    OutlookEvent,
    OutlookItem,
    OutlookTask,
    Page,
    SubRequest,
    SubResponse,
    TaskChange,
    TaskFields,
)

MAX_BATCH = 20  # Graph's limit of requests per $batch


class MailSource(Protocol):
    async def read_page(
        self, user: str, folder: str, link: str, since: datetime | None
    ) -> Page[MessageChange]:
        """One message-delta page of a folder: from a saved link, or (link == "") a new round of the
        messages received since `since`."""
        ...

    async def get_message(self, user: str, message_id: str) -> MailMessage | None:
        """The message by immutable id, or None when it no longer exists."""
        ...

    async def list_page(
        self, user: str, folder: str, link: str, since: datetime, until: datetime | None = None
    ) -> Page[MessageChange]:
        """One page of a plain listing of the folder's messages received since `since` and, when given,
        at or before `until` (no 5,000 cap)."""
        ...

    async def folder_id(self, user: str, folder: str) -> str:
        """The id of a folder named by well-known name or id (what `MailMessage.folder_id` holds)."""
        ...


class ContactsSide(Protocol):
    """The owned Outlook contact folder (implemented by `shared/graph/contacts.py`)."""

    async def owned_folder(self, user: str, name: str) -> str: ...

    async def read_page(self, user: str, folder_id: str, link: str) -> Page[OutlookChange]: ...

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


class TasksSide(Protocol):
    """The owned To Do list (implemented by `shared/graph/tasks.py`). `zone` is the user's time zone,
    in which a To Do due date is a date."""

    async def owned_list(self, user: str, name: str) -> str: ...

    async def read_page(self, user: str, list_id: str, link: str, zone: str) -> Page[TaskChange]: ...

    async def get(self, user: str, list_id: str, task_id: str, zone: str) -> OutlookTask | None: ...

    async def create(
        self, user: str, list_id: str, fields: TaskFields, *, crm: CrmTask, zone: str
    ) -> OutlookTask: ...

    async def update(
        self,
        user: str,
        list_id: str,
        task_id: str,
        fields: TaskFields,
        *,
        since: TaskFields | None,
        etag: str,
        zone: str,
    ) -> OutlookTask:
        """Write the fields that differ from `since` (all when None), If-Match `etag`."""
        ...

    async def delete(self, user: str, list_id: str, task_id: str) -> None: ...


class CalendarSource(Protocol):
    """The calendar through Graph (implemented by `shared/graph/calendar.py`)."""

    async def read_page(
        self, user: str, link: str, window: tuple[datetime, datetime] | None
    ) -> Page[EventChange]:
        """One calendarView delta page: from a saved link, or (link == "") a new round over `window`."""
        ...

    async def get_event(self, user: str, event_id: str) -> OutlookEvent | None:
        """The event by immutable id, or None when it no longer exists (404)."""
        ...

    async def instances(
        self, user: str, master_id: str, window: tuple[datetime, datetime]
    ) -> list[OutlookEvent] | None:
        """A series' occurrences and exceptions in the window; None when the series is gone."""
        ...

    async def create_event(self, user: str, change: CrmAppointmentChange) -> tuple[str, str]:
        """An attendee-less event for a CRM appointment: (event id, changeKey)."""
        ...

    async def update_event(self, user: str, event_id: str, change: CrmAppointmentChange) -> str | None:
        """Update an event the push created: its changeKey, or None when it is gone."""
        ...

    async def delete_event(self, user: str, event_id: str) -> None: ...


class DeltaBatch(Protocol):
    """Saved delta links read together in one `POST /$batch` (implemented by `shared/graph/batch.py`)."""

    def relative_url(self, link: str) -> str | None:
        """The link relative to the API root, or None when it points elsewhere (it cannot be batched)."""
        ...

    async def send(self, mailbox: str, requests: Sequence[SubRequest]) -> dict[str, SubResponse]:
        """One `$batch` of at most `MAX_BATCH` requests for one mailbox; answers by request id. Raises the
        translated error when the batch as a whole fails (throttled, denied, malformed)."""
        ...
