"""The calendar through msgraph-sdk: calendarView delta over a window, events by id, a series' instances,
and the writes of the CRM → Outlook push.

Reading (docs/graph-behaviour.md §1.5, §1.6): the window (`startDateTime`/`endDateTime`) goes on the first
request of a round only, since it is frozen into the token; the Prefer set (page size, immutable ids,
UTC times, text bodies) is re-sent on every page because Prefer is not part of the token.

Writing never notifies anyone. Events the push creates carry no attendees, and the service never calls
`/cancel`, `/forward`, `/accept`, `/decline`, `/tentativelyAccept` or `sendMail`: in Exchange a POST,
PATCH or DELETE of a meeting *with attendees* in the organizer's calendar sends invitations, updates or
cancellations, so the service only ever writes to attendee-less events it created itself.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.headers_collection import HeadersCollection
from kiota_abstractions.request_information import RequestInformation
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.event import Event
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.location import Location
from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import DeltaRequestBuilder
from msgraph.generated.users.item.events.item.instances.instances_request_builder import (
    InstancesRequestBuilder,
)
from msgraph.graph_service_client import GraphServiceClient

from shared.errors import GraphNotFound
from shared.graph.client import GraphCaller
from shared.model import (
    PUSH_TRANSACTION_PREFIX,
    Address,
    Attendee,
    CrmAppointmentChange,
    EventChange,
    EventRemoved,
    OutlookEvent,
    Page,
)


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
    """Reads parse the JSON answers without the SDK's models (`GraphCaller.fetch_json`: kiota's model
    parsing made a 600-event first sync take a minute). The SDK still builds the requests,
    authenticates, and maps errors to `ODataError`."""

    def __init__(self, client: GraphServiceClient, caller: GraphCaller, *, page_size: int = 50) -> None:
        self._client = client
        self._caller = caller
        self._page_size = page_size

    def _config(self, params: Any = None) -> RequestConfiguration[Any]:
        return RequestConfiguration(headers=prefer_headers(self._page_size), query_parameters=params)

    async def _get_json(self, user: str, info: RequestInformation) -> dict[str, Any]:
        return await self._caller.fetch_json(user, self._client.request_adapter, info, "a calendar answer")

    async def read_page(
        self, user: str, link: str, window: tuple[datetime, datetime] | None
    ) -> Page[EventChange]:
        """One calendarView delta page: from a saved link, or (link == "") a new round over `window`."""
        builder = self._client.users.by_user_id(user).calendar_view.delta
        if link:
            info = builder.with_url(link).to_get_request_information(self._config())
        else:
            assert window is not None, "a new round needs its window"
            params = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
                start_date_time=_graph_time(window[0]), end_date_time=_graph_time(window[1])
            )
            info = builder.to_get_request_information(self._config(params))
        body = await self._get_json(user, info)
        return Page(
            changes=[_to_change(e) for e in body.get("value") or [] if isinstance(e, dict)],
            next_link=str(body.get("@odata.nextLink") or ""),
            delta_link=str(body.get("@odata.deltaLink") or ""),
        )

    async def get_event(self, user: str, event_id: str) -> OutlookEvent | None:
        """The event (single, master, occurrence or exception) by immutable id; None when it is gone."""
        builder = self._client.users.by_user_id(user).events.by_event_id(event_id)
        try:
            body = await self._get_json(user, builder.to_get_request_information(self._config()))
        except GraphNotFound:
            return None
        return _to_event(body) if body.get("id") else None

    async def instances(
        self, user: str, master_id: str, window: tuple[datetime, datetime]
    ) -> list[OutlookEvent] | None:
        """The occurrences and exceptions of a series inside the window; None when the series is gone."""
        builder = self._client.users.by_user_id(user).events.by_event_id(master_id).instances
        params = InstancesRequestBuilder.InstancesRequestBuilderGetQueryParameters(
            start_date_time=_graph_time(window[0]), end_date_time=_graph_time(window[1])
        )
        info = builder.to_get_request_information(self._config(params))
        found: list[OutlookEvent] = []
        try:
            while True:
                body = await self._get_json(user, info)
                found += [_to_event(e) for e in body.get("value") or [] if isinstance(e, dict)]
                link = body.get("@odata.nextLink")
                if not link:
                    return found
                info = builder.with_url(str(link)).to_get_request_information(self._config())
        except GraphNotFound:
            return None

    # -- the push: attendee-less events only, nothing is ever sent -----------------------------------

    async def create_event(self, user: str, change: CrmAppointmentChange) -> tuple[str, str]:
        """Create the event for a CRM appointment. `transactionId` makes a retried POST idempotent
        in Exchange, and marks the event as the push's (never captured back). Returns (event id,
        changeKey)."""
        event = _event_body(change)
        event.transaction_id = f"{PUSH_TRANSACTION_PREFIX}{change.ref.id}"[:100]
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


Json = dict[str, Any]


def _to_change(item: Json) -> EventChange:
    if "@removed" in item:
        return EventRemoved(id=str(item.get("id") or ""))
    return _to_event(item)


def _instant(value: Json | None) -> datetime:
    """A dateTimeTimeZone as an aware UTC datetime (we ask for UTC; other zones are converted)."""
    if not value or not value.get("dateTime"):
        return datetime.min.replace(tzinfo=UTC)
    naive = datetime.fromisoformat(str(value["dateTime"]).split(".")[0].rstrip("Z"))
    try:
        zone = ZoneInfo(str(value.get("timeZone") or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return naive.replace(tzinfo=zone).astimezone(UTC)


def _day(value: Json | None) -> date | None:
    """All-day events are floating dates: the wall-clock date as given, never shifted by a zone."""
    if not value or not value.get("dateTime"):
        return None
    return date.fromisoformat(str(value["dateTime"])[:10])


def _address(recipient: Json | None) -> Address | None:
    email = (recipient or {}).get("emailAddress") or {}
    if not email.get("address"):
        return None
    return Address(address=str(email["address"]), name=str(email.get("name") or ""))


def _attendees(item: Json) -> tuple[Attendee, ...]:
    found: list[Attendee] = []
    for attendee in item.get("attendees") or []:
        address = _address(attendee)
        if address is None:
            continue
        kind = str(attendee.get("type") or "required")
        found.append(
            Attendee(
                address=address,
                type=kind if kind in ("required", "optional", "resource") else "required",  # type: ignore[arg-type]
                response=str((attendee.get("status") or {}).get("response") or "none"),
            )
        )
    return tuple(found)


def _location(item: Json) -> str:
    name = str((item.get("location") or {}).get("displayName") or "")
    if name:
        return name
    return "; ".join(
        str(loc.get("displayName")) for loc in item.get("locations") or [] if loc.get("displayName")
    )


def _original_start(item: Json) -> datetime | None:
    value = item.get("originalStart")
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _to_event(item: Json) -> OutlookEvent:
    kind = str(item.get("type") or "singleInstance")
    all_day = bool(item.get("isAllDay"))
    skeletal = kind == "occurrence" and "subject" not in item and "iCalUId" not in item
    body = item.get("body") or {}
    return OutlookEvent(
        id=str(item.get("id") or ""),
        type=kind,
        start=_instant(item.get("start")),
        end=_instant(item.get("end")),
        series_master_id=str(item.get("seriesMasterId") or ""),
        ical_uid=str(item.get("iCalUId") or ""),
        change_key=str(item.get("changeKey") or ""),
        original_start=_original_start(item),
        subject=str(item.get("subject") or ""),
        body=str(body.get("content") or ""),
        body_type=str(body.get("contentType") or "text").lower(),
        is_all_day=all_day,
        start_date=_day(item.get("start")) if all_day or skeletal else None,
        end_date=_day(item.get("end")) if all_day or skeletal else None,
        location=_location(item),
        organizer=_address(item.get("organizer")),
        attendees=_attendees(item),
        online_meeting_url=str(
            (item.get("onlineMeeting") or {}).get("joinUrl") or item.get("onlineMeetingUrl") or ""
        ),
        categories=tuple(str(c) for c in item.get("categories") or ()),
        sensitivity=str(item.get("sensitivity") or "normal"),
        is_cancelled=bool(item.get("isCancelled")),
        is_draft=bool(item.get("isDraft")),
        skeletal=skeletal,
        transaction_id=str(item.get("transactionId") or ""),
    )
