"""The calendar through msgraph-sdk: calendarView delta over a window, events by id, a series' instances,
and the writes of the CRM → Outlook push.

Reading (graph-behaviour.md 1.5, 1.6): the window (`startDateTime`/`endDateTime`) goes on the first
request of a round only, since it is frozen into the token; the Prefer set (page size, immutable ids,
UTC times, text bodies) is re-sent on every page because Prefer is not part of the token.

Writing never notifies anyone. Events the push creates carry no attendees, and the service never calls
`/cancel`, `/forward`, `/accept`, `/decline`, `/tentativelyAccept` or `sendMail`: in Exchange a POST,
PATCH or DELETE of a meeting *with attendees* in the organizer's calendar sends invitations, updates or
cancellations, so the service only ever writes to attendee-less events it created itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.headers_collection import HeadersCollection
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.event import Event
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.location import Location
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import DeltaRequestBuilder
from msgraph.generated.users.item.events.item.instances.instances_request_builder import (
    InstancesRequestBuilder,
)
from msgraph.graph_service_client import GraphServiceClient

from shared.errors import GraphNotFound
from shared.graph.client import GraphCaller
from shared.model import Address, Attendee, CrmAppointmentChange
from shared.sync.calendar_plan import EventChange, EventRemoved, OutlookEvent


@dataclass(frozen=True)
class EventPage:
    changes: list[EventChange]
    next_link: str = ""
    delta_link: str = ""


def prefer_headers(page_size: int) -> HeadersCollection:
    headers = HeadersCollection()  # always a new collection (a shared default leaked in old kiota)
    headers.add("Prefer", f"odata.maxpagesize={page_size}")
    headers.add("Prefer", 'IdType="ImmutableId"')
    headers.add("Prefer", 'outlook.timezone="UTC"')
    headers.add("Prefer", 'outlook.body-content-type="text"')
    return headers


def _graph_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GraphCalendar:
    def __init__(self, client: GraphServiceClient, caller: GraphCaller, *, page_size: int = 50) -> None:
        self._client = client
        self._caller = caller
        self._page_size = page_size

    def _config(self, params: Any = None) -> RequestConfiguration[Any]:
        return RequestConfiguration(headers=prefer_headers(self._page_size), query_parameters=params)

    async def read_page(self, user: str, link: str, window: tuple[datetime, datetime] | None) -> EventPage:
        """One calendarView delta page: from a saved link, or (link == "") a new round over `window`."""
        builder = self._client.users.by_user_id(user).calendar_view.delta
        if link:
            config = self._config()
            request = builder.with_url(link)
        else:
            assert window is not None, "a new round needs its window"
            params = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
                start_date_time=_graph_time(window[0]), end_date_time=_graph_time(window[1])
            )
            config = self._config(params)
            request = builder
        response = await self._caller.call(user, lambda: request.get(request_configuration=config))
        if response is None:
            return EventPage(changes=[])
        return EventPage(
            changes=[_to_change(e) for e in response.value or []],
            next_link=response.odata_next_link or "",
            delta_link=response.odata_delta_link or "",
        )

    async def get_event(self, user: str, event_id: str) -> OutlookEvent | None:
        """The event (single, master, occurrence or exception) by immutable id; None when it is gone."""
        builder = self._client.users.by_user_id(user).events.by_event_id(event_id)
        config = self._config()
        try:
            event = await self._caller.call(user, lambda: builder.get(request_configuration=config))
        except GraphNotFound:
            return None
        return _to_event(event) if event is not None else None

    async def instances(
        self, user: str, master_id: str, window: tuple[datetime, datetime]
    ) -> list[OutlookEvent] | None:
        """The occurrences and exceptions of a series inside the window; None when the series is gone."""
        builder = self._client.users.by_user_id(user).events.by_event_id(master_id).instances
        params = InstancesRequestBuilder.InstancesRequestBuilderGetQueryParameters(
            start_date_time=_graph_time(window[0]), end_date_time=_graph_time(window[1])
        )
        config = self._config(params)
        found: list[OutlookEvent] = []
        link = ""
        try:
            while True:
                request = builder.with_url(link) if link else builder
                response = await self._caller.call(user, _getter(request, config))
                if response is None:
                    return found
                found += [_to_event(e) for e in response.value or []]
                if not response.odata_next_link:
                    return found
                link, config = response.odata_next_link, self._config()
        except GraphNotFound:
            return None

    # -- the push: attendee-less events only, nothing is ever sent -----------------------------------

    async def create_event(self, user: str, change: CrmAppointmentChange) -> tuple[str, str]:
        """Create the event for a CRM appointment. `transactionId` makes a retried POST idempotent
        in Exchange. Returns (event id, changeKey)."""
        event = _event_body(change)
        event.transaction_id = f"crm-{change.ref.id}"[:100]
        builder = self._client.users.by_user_id(user).events
        config = self._config()
        created = await self._caller.call(user, lambda: builder.post(event, request_configuration=config))
        assert created is not None
        return created.id or "", created.change_key or ""

    async def update_event(self, user: str, event_id: str, change: CrmAppointmentChange) -> str | None:
        """Update an event the push created; None when it no longer exists. Returns the changeKey."""
        builder = self._client.users.by_user_id(user).events.by_event_id(event_id)
        body = _event_body(change)
        config = self._config()
        try:
            updated = await self._caller.call(user, lambda: builder.patch(body, request_configuration=config))
        except GraphNotFound:
            return None
        return (updated.change_key or "") if updated is not None else ""

    async def delete_event(self, user: str, event_id: str) -> None:
        """Delete an attendee-less event the push created (idempotent)."""
        builder = self._client.users.by_user_id(user).events.by_event_id(event_id)
        try:
            await self._caller.call(user, lambda: builder.delete())
        except GraphNotFound:
            return


def _getter(request: Any, config: RequestConfiguration[Any]) -> Callable[[], Awaitable[Any]]:
    return lambda: request.get(request_configuration=config)


def _event_body(change: CrmAppointmentChange) -> Event:
    """An event without attendees (so nobody is invited) and not a meeting request."""
    if change.is_all_day:
        start = DateTimeTimeZone(date_time=f"{change.start.date().isoformat()}T00:00:00", time_zone="UTC")
        end = DateTimeTimeZone(date_time=f"{change.end.date().isoformat()}T00:00:00", time_zone="UTC")
    else:
        start = DateTimeTimeZone(date_time=_naive_utc(change.start), time_zone="UTC")
        end = DateTimeTimeZone(date_time=_naive_utc(change.end), time_zone="UTC")
    return Event(
        subject=change.subject,
        body=ItemBody(content_type=BodyType.Text, content=change.body),
        start=start,
        end=end,
        is_all_day=change.is_all_day,
        location=Location(display_name=change.location),
        attendees=[],
        response_requested=False,
    )


def _naive_utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _to_change(event: Event) -> EventChange:
    if "@removed" in (event.additional_data or {}):
        return EventRemoved(id=event.id or "")
    return _to_event(event)


def _enum(value: Any, default: str) -> str:
    return str(getattr(value, "value", value) or default)


def _instant(value: DateTimeTimeZone | None) -> datetime:
    """A dateTimeTimeZone as an aware UTC datetime (we ask for UTC; other zones are converted)."""
    if value is None or not value.date_time:
        return datetime.min.replace(tzinfo=UTC)
    naive = datetime.fromisoformat(value.date_time.split(".")[0].rstrip("Z"))
    try:
        zone = ZoneInfo(value.time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return naive.replace(tzinfo=zone).astimezone(UTC)


def _day(value: DateTimeTimeZone | None) -> date | None:
    """All-day events are floating dates: the wall-clock date as given, never shifted by a zone."""
    if value is None or not value.date_time:
        return None
    return date.fromisoformat(value.date_time[:10])


def _address(recipient: Recipient | None) -> Address | None:
    if recipient is None or recipient.email_address is None or not recipient.email_address.address:
        return None
    return Address(address=recipient.email_address.address, name=recipient.email_address.name or "")


def _attendees(event: Event) -> tuple[Attendee, ...]:
    found: list[Attendee] = []
    for attendee in event.attendees or []:
        if attendee.email_address is None or not attendee.email_address.address:
            continue
        kind = _enum(attendee.type, "required")
        found.append(
            Attendee(
                address=Address(attendee.email_address.address, attendee.email_address.name or ""),
                type=kind if kind in ("required", "optional", "resource") else "required",  # type: ignore[arg-type]
                response=_enum(attendee.status.response if attendee.status else None, "none"),
            )
        )
    return tuple(found)


def _location(event: Event) -> str:
    if event.location is not None and event.location.display_name:
        return event.location.display_name
    names: Sequence[str] = [loc.display_name for loc in event.locations or [] if loc.display_name]
    return "; ".join(names)


def _to_event(event: Event) -> OutlookEvent:
    kind = _enum(event.type, "singleInstance")
    all_day = bool(event.is_all_day)
    skeletal = kind == "occurrence" and event.subject is None and event.i_cal_u_id is None
    original = event.original_start.astimezone(UTC) if event.original_start else None
    start, end = _instant(event.start), _instant(event.end)
    return OutlookEvent(
        id=event.id or "",
        type=kind,
        start=start,
        end=end,
        series_master_id=event.series_master_id or "",
        ical_uid=event.i_cal_u_id or "",
        change_key=event.change_key or "",
        original_start=original,
        subject=event.subject or "",
        body=(event.body.content or "") if event.body is not None else "",
        body_type=_enum(event.body.content_type if event.body else None, "text").lower(),
        is_all_day=all_day,
        start_date=_day(event.start) if all_day or skeletal else None,
        end_date=_day(event.end) if all_day or skeletal else None,
        location=_location(event),
        organizer=_address(event.organizer),
        attendees=_attendees(event),
        online_meeting_url=(event.online_meeting.join_url if event.online_meeting else None)
        or event.online_meeting_url
        or "",
        categories=tuple(event.categories or ()),
        sensitivity=_enum(event.sensitivity, "normal"),
        is_cancelled=bool(event.is_cancelled),
        is_draft=bool(event.is_draft),
        skeletal=skeletal,
    )
