"""Meetings that are gone from a calendar, and the appointments that go with them.

A removal is never trusted on its own (`@removed` also means "left the window"): only an event a GET
no longer finds is withdrawn. Withdrawing takes this calendar off the appointment's `seenBy`, and
cancels the appointment when the organizer's calendar lost it or no synced calendar holds it any more
(`calendar_plan.withdraw`). Graph reports nothing for one deleted occurrence of a series, and a fresh
round cannot report deletions made in a gap, so the series check and the reconciliation after a fresh
round compare what is linked with what Graph still has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from shared.errors import ConcurrencyError, CrmRejectedError
from shared.model import Appointment, Cursor, Decision, Link, Outcome, OutlookEvent
from shared.ports.crm import CrmPort
from shared.ports.graph import CalendarSource
from shared.ports.state import StateStore
from shared.sync import calendar_plan as plan
from shared.sync.runner import Run
from shared.sync.stream import Applied

STREAM = "calendar"
SERIES_CHECK_EVERY = timedelta(hours=1)


@dataclass
class CalendarPage(Applied):
    """What a page of the calendar leaves to record, and what it already did."""

    round_id: str = ""  # the round that saw these items (stamped on their link rows)
    by_id: dict[str, Link] = field(default_factory=dict)  # the page's link rows, by Graph id
    withdrawn: set[tuple[str, str]] = field(default_factory=set)  # (Graph id, key) withdrawn this page
    collided: set[str] = field(default_factory=set)  # keys of meetings whose iCalUId another one took

    def recorded(self) -> CalendarPage:
        self.links = list(self.by_id.values())
        return self


def decision(run: Run, key: str, item_id: str, outcome: Outcome, reason: str, crm_key: str = "") -> Decision:
    return run.decision(key, outcome, reason, crm_key=crm_key, details={"graphId": item_id})


def at_pending_key(link: Link) -> Link:
    """The link as if it led to the new key noted on it (a re-keyed occurrence), without the note."""
    return replace(link, crm_key=link.event.pending_key, event=replace(link.event, pending_key=""))


def within(link: Link, window: tuple[datetime, datetime]) -> bool:
    start, end = link.event.start, link.event.end
    return start is None or end is None or (start < window[1] and end > window[0])


class Withdrawals:
    def __init__(self, state: StateStore, crm: CrmPort, source: CalendarSource) -> None:
        self._state = state
        self._crm = crm
        self._source = source

    async def own_keys(self, keyed: Sequence[plan.Keyed], page: CalendarPage) -> list[plan.Keyed]:
        """An event whose key another organizer's meeting took first (anyone can send an invitation
        with a known iCalUId) is another meeting: it goes under a key of its own from here on, so its
        link, its appointment and its withdrawal all agree on that key."""
        rows = await self._state.get_keys(sorted({k.key for k in keyed})) if keyed else {}
        own: list[plan.Keyed] = []
        for item in keyed:
            key = plan.own_key(rows.get(item.key), item.key, plan.identity(item.event.organizer))
            if key != item.key:
                page.collided.add(key)
            own.append(replace(item, key=key))
        return own

    async def members(self, user: str, master_id: str) -> list[Link]:
        return [
            link
            for link in await self._state.list_links(user, STREAM)
            if link.event.series == master_id and link.crm_key
        ]

    async def withdraw(
        self,
        run: Run,
        link: Link,
        page: CalendarPage,
        *,
        by_organizer: bool = False,
        keep_link: bool = False,
        pending: bool = True,
    ) -> None:
        """The meeting is confirmed gone from this calendar (or cancelled by its organizer). With
        `pending`, so is the new key a worker that died while re-keying it may have written."""
        new_key = link.event.pending_key
        if pending and new_key and new_key != link.crm_key:
            await self.withdraw(
                run, at_pending_key(link), page, by_organizer=by_organizer, keep_link=True, pending=False
            )
        key = link.crm_key
        page.withdrawn.add((link.item_id, key))
        for _ in range(8):
            record = await self._state.get_key(key)
            outcome = plan.withdraw(record, run.user)
            cancel = outcome.cancel or by_organizer
            if record is not None:
                # The key row first: a cancel the CRM applied whose answer was lost (a timeout, a 5xx
                # after the write, a worker that died) must not leave a row that says live, or the
                # meeting coming back (a series moved back) would look unchanged and stay cancelled.
                # A write that did not happen is retried with the removal, as before.
                changed = replace(record, mailboxes=outcome.remaining, cancelled=record.cancelled or cancel)
                try:
                    await self._state.put_key(changed)
                except ConcurrencyError:
                    continue
            if cancel and run.config.calendar_delete_in_crm:
                await self._crm.delete_appointment(key)
            elif cancel:
                await self._cancel(key)
            elif record is not None:
                current = await self._crm.get_appointment(key)
                if current is not None:
                    await self._keep_seen_by(replace(current, seen_by=outcome.remaining))
            break
        run.stats.add("cancelled", cancel)
        run.stats.add("removed")
        if not keep_link:
            await self._state.delete_link(run.user, STREAM, link.item_id)
            page.by_id.pop(link.item_id, None)
        reason = "cancelled by the organizer" if by_organizer else outcome.reason
        page.decisions.append(
            decision(run, key, link.item_id, Outcome.REMOVED, reason, crm_key=key if cancel else "")
        )

    async def _cancel(self, key: str) -> None:
        """Cancel the appointment. A CRM that checks an appointment's links on every write (the
        reference CRM, and BottleCRM's cancel, which is a rewrite) refuses it once a person it links was
        deleted there: it is then written cancelled with only the people the CRM still matches."""
        try:
            await self._crm.cancel_appointment(key)
        except CrmRejectedError:
            current = await self._crm.get_appointment(key)
            if current is None or not current.people:
                raise
            await self._keep_seen_by(replace(current, cancelled=True))

    async def _keep_seen_by(self, appointment: Appointment) -> None:
        """Rewrite an appointment (fewer calendars hold it, or cancelled). When the CRM refuses it
        because a linked person was deleted there meanwhile, write it again with only the people it
        still matches."""
        try:
            await self._crm.upsert_appointment(appointment)
        except CrmRejectedError:
            if not appointment.people:
                raise
            found = await self._crm.find_people(
                sorted({p.email.lower() for p in appointment.people if p.email})
            )
            live = {p.id for refs in found.values() for p in refs}
            people = tuple(p for p in appointment.people if p.id in live)
            if people == appointment.people:
                raise
            await self._crm.upsert_appointment(replace(appointment, people=people))

    async def drop_stale(self, run: Run, master: OutlookEvent, current: set[str], page: CalendarPage) -> None:
        """A series arrived whole: its linked occurrences not among the current ones (a rescheduled
        series, a cancelled occurrence) are fetched, and withdrawn when gone or re-keyed."""
        members = {m.item_id: m for m in await self.members(run.user, master.id)}
        stale = plan.stale_keys({i: m.crm_key for i, m in members.items()}, current)
        for item_id, old_key in stale.items():
            if (item_id, old_key) in page.withdrawn:
                continue
            if item_id in page.by_id and page.by_id[item_id].crm_key != old_key:
                await self.withdraw(run, members[item_id], page, keep_link=True, pending=False)
                continue
            event = await self._source.get_event(run.user, item_id)
            full = plan.hydrate(event, master) if event is not None else None
            key = plan.appointment_key(full, master) if full is not None else ""
            if full is not None and key:
                [own] = await self.own_keys([plan.Keyed(full, key, master)], page)
                key = own.key
            if full is None or key != old_key:
                await self.withdraw(run, members[item_id], page, pending=full is None)

    async def reconcile(self, run: Run, cursor: Cursor) -> None:
        """After a fresh round (a roll-over, or a 410 that lost the deletions of the gap): meetings
        linked inside the window that the round did not report are fetched; those gone are withdrawn."""
        window = (cursor.window_start, cursor.window_end)
        current = cursor.calendar.round_id
        page = CalendarPage(round_id=current)
        for link in await self._state.list_links(run.user, STREAM):
            if link.event.from_crm or link.event.round_id == current:
                continue
            if window[0] is None or window[1] is None or not within(link, (window[0], window[1])):
                continue
            if await self._source.get_event(run.user, link.item_id) is not None:
                continue
            if link.event.master:
                for member in await self.members(run.user, link.item_id):
                    await self.withdraw(run, member, page)
                await self._state.delete_link(run.user, STREAM, link.item_id)
            elif link.crm_key:
                await self.withdraw(run, link, page)
            await run.renew()
        await self._state.record_decisions(page.decisions)
        await run.save(replace(cursor, calendar=replace(cursor.calendar, reconciled_round=current)))

    async def check_series(self, run: Run, cursor: Cursor, every: timedelta) -> None:
        """Graph reports nothing for one deleted occurrence: compare each series' linked occurrences
        in the window with the master's instances, and withdraw those confirmed gone."""
        now = run.now()
        last = cursor.calendar.series_checked
        if last and now - last < every:
            return
        if cursor.window_start is None or cursor.window_end is None:
            return
        window = (cursor.window_start, cursor.window_end)
        links = await self._state.list_links(run.user, STREAM)
        page = CalendarPage()
        checked = 0
        # every series an occurrence is linked to, whether or not its master has a link of its own (a
        # worker that died between linking the occurrences and the master left them to this check)
        for series_id in sorted({m.event.series for m in links if m.event.series and m.crm_key}):
            members = [m for m in links if m.event.series == series_id and m.crm_key]
            checked += 1
            found = await self._source.instances(run.user, series_id, window)
            present = {e.id for e in found or []}
            for member in members:
                if member.item_id in present or not within(member, window):
                    continue
                if found is None or await self._source.get_event(run.user, member.item_id) is None:
                    await self.withdraw(run, member, page)
            if found is None:
                await self._state.delete_link(run.user, STREAM, series_id)
            await run.renew()
        await self._state.record_decisions(page.decisions)
        # how many series were checked: the sweep skips this hourly check for users without any
        progress = replace(cursor.calendar, series_checked=now, series_linked=checked)
        await run.save(replace(cursor, calendar=progress))


def series_check_due(cursor: Cursor, now: datetime, every: timedelta = SERIES_CHECK_EVERY) -> bool:
    """The next run compares series occurrences with their masters (`check_series`): never checked, or
    checked over `every` ago while the user had series, or had pages since (new series may have come)."""
    checked = cursor.calendar.series_checked
    if checked is None:
        return True
    if now - checked < every:
        return False
    linked = cursor.calendar.series_linked
    return (linked is None or linked > 0) or bool(cursor.last_page and cursor.last_page > checked)
