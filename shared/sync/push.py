"""The push: CRM appointments made for a user become attendee-less events in their calendar
(`CalendarPushFromCrm`; only with a CRM whose appointments can be read back as a change feed).

Appointments that came from Outlook (they have a key) are skipped: that is the echo. Each pushed
event has two link rows: by CRM id (stream `calendar:push`: what was pushed, so an unchanged re-report
writes nothing) and by Graph id (stream `calendar`, from the CRM, so the calendar stream never captures
it back; the events also carry a transactionId that says so, for a worker that died before the link).
The push writes attendee-less events only, so nothing is ever sent to anyone.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from shared.model import (
    CrmAppointmentChange,
    Cursor,
    EventLink,
    Issue,
    Link,
    PushLink,
    StreamId,
    StreamKind,
    UserConfig,
    fingerprint,
)
from shared.ports.crm import CrmPort
from shared.ports.graph import CalendarSource
from shared.ports.state import StateStore
from shared.sync.calendar_withdraw import STREAM as CALENDAR
from shared.sync.runner import Run

PUSH_LINKS = "calendar:push"  # link rows of the push, by CRM appointment id


class PushStream:
    kind: StreamKind = StreamKind.PUSH
    stats: tuple[str, ...] = ("pushed",)
    totals: tuple[str, ...] = ("pushed",)
    probed: bool = False  # nothing to read in Graph: the CRM side says when there is work

    def __init__(self, state: StateStore, crm: CrmPort, source: CalendarSource) -> None:
        self._state = state
        self._crm = crm
        self._source = source

    # -- the sweep's questions -----------------------------------------------------------------------

    @property
    def crm_side(self) -> bool:
        return self._crm.capabilities.appointment_change_feed  # without a feed the push is off

    def job_anyway(self, config: UserConfig, cursor: Cursor, now: datetime) -> bool:
        return self.crm_side and not cursor.crm_cursor

    async def crm_changed(self, config: UserConfig, cursor: Cursor) -> bool:
        changes, _ = await self._crm.appointment_changes(config.owner, cursor.crm_cursor)
        return bool(changes)

    def retries(self, issue: Issue) -> bool:
        return True

    def subscription(self, config: UserConfig, stream: StreamId, cursor: Cursor) -> str | None:
        return None  # the CRM side has no notifications: the sweep's peek wakes it

    # -- a run ---------------------------------------------------------------------------------------

    async def run(self, run: Run, *, fresh_round: bool) -> None:
        if not self._crm.capabilities.appointment_change_feed:
            return
        cursor = await run.settled()
        since = cursor.crm_cursor
        if not cursor.etag:  # before the push was a stream of its own, the calendar's cursor held its place
            since = (await self._state.get_cursor(run.user, StreamId.of(StreamKind.CALENDAR))).crm_cursor
        changes, next_cursor = await self._crm.appointment_changes(run.config.owner, since or None)
        for change in changes:
            if change.key:
                continue
            await self._push_one(run, change)
            await run.renew()
        await run.save(replace(cursor, crm_cursor=next_cursor))

    async def _push_one(self, run: Run, change: CrmAppointmentChange) -> None:
        user = run.user
        link = await self._state.get_link(user, PUSH_LINKS, change.ref.id)
        wanted = _fingerprint(change)
        if link is not None and link.crm_fingerprint == wanted:
            return
        event_id = link.push.event_id if link is not None else ""
        # A create was started and its outcome never recorded (the worker died): Graph answers the same
        # transactionId with the event it may have made, which then needs this change too.
        unsure = link is not None and link.push.pending
        if change.cancelled:
            if not event_id and unsure:
                event_id, _ = await self._source.create_event(user, change)
            if event_id:
                await self._source.delete_event(user, event_id)
                await self._state.delete_link(user, CALENDAR, event_id)
            gone = Link(
                user, PUSH_LINKS, change.ref.id, crm_fingerprint=wanted, push=PushLink(cancelled=True)
            )
            await self._state.put_links([gone])
            return
        if event_id:
            if link is not None and link.crm_fingerprint:
                # doubt first: an update Outlook applied whose answer was lost must not leave the link
                # vouching for the old version, or the CRM moving the appointment back looks like nothing
                await self._state.put_links([replace(link, crm_fingerprint="")])
            change_key = await self._source.update_event(user, event_id, change)
            if change_key is None:  # the user deleted it in Outlook: their choice stands
                assert link is not None
                await self._state.put_links([replace(link, crm_fingerprint=wanted)])
                return
        else:
            if not unsure:
                await self._state.put_links(
                    [Link(user, PUSH_LINKS, change.ref.id, push=PushLink(pending=True))]
                )
            event_id, change_key = await self._source.create_event(user, change)
            if unsure:
                change_key = await self._source.update_event(user, event_id, change) or change_key
        run.stats.add("pushed")
        await self._state.put_links(
            [
                Link(
                    user,
                    CALENDAR,
                    event_id,
                    change_key=change_key,
                    event=EventLink(from_crm=True, crm_id=change.ref.id),
                ),
                Link(
                    user,
                    PUSH_LINKS,
                    change.ref.id,
                    crm_key=change.ref.id,
                    change_key=change_key,
                    crm_fingerprint=wanted,
                    push=PushLink(event_id=event_id),
                ),
            ]
        )


def _fingerprint(change: CrmAppointmentChange) -> str:
    return fingerprint(
        [
            change.subject,
            change.start,
            change.end,
            change.is_all_day,
            change.location,
            change.body,
            change.cancelled,
        ]
    )
