"""Capturing meetings as appointments: occurrences hydrated from their master and keyed (a key another
organizer took is replaced by one of the event's own), `calendar_plan.plan` followed, appointments
written through SyncKeys (`keyed_write`), and a removal that turns out to be a move out of the window
captured again with its new times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from shared.errors import CrmError, CrmRetryableError
from shared.model import EventLink, Link, Outcome, OutlookEvent
from shared.ports.crm import CrmPort
from shared.ports.graph import CalendarSource
from shared.ports.state import StateStore
from shared.sync import calendar_plan as plan
from shared.sync.calendar_withdraw import STREAM, CalendarPage, Withdrawals, at_pending_key, decision
from shared.sync.keyed_write import Written, write_keyed
from shared.sync.people import people_by_address
from shared.sync.runner import Run

MAX_CONSECUTIVE_CRM_FAILURES = 3
NO_MASTER = "series master unavailable: free/busy data alone never becomes an appointment"
COLLIDED = (
    "its iCalUId was already taken by another organizer's meeting: captured separately under a key of its own"
)

Masters = dict[str, OutlookEvent | None]


class Captures:
    def __init__(
        self,
        state: StateStore,
        crm: CrmPort,
        source: CalendarSource,
        withdrawals: Withdrawals,
        *,
        body_limit: int,
        subject_limit: int | None,
    ) -> None:
        self._state = state
        self._crm = crm
        self._source = source
        self._withdrawals = withdrawals
        self._body_limit = body_limit
        self._subject_limit = subject_limit

    async def master(self, user: str, master_id: str, masters: Masters) -> OutlookEvent | None:
        if master_id not in masters:
            masters[master_id] = await self._source.get_event(user, master_id) if master_id else None
        return masters[master_id]

    async def hydrate(
        self, run: Run, events: Sequence[OutlookEvent], page: CalendarPage, masters: Masters
    ) -> list[plan.Keyed]:
        keyed: list[plan.Keyed] = []
        for event in events:
            master = None
            if event.type != "singleInstance":
                master = await self.master(run.user, event.series_master_id, masters)
            full = plan.hydrate(event, master)
            key = plan.appointment_key(full, master) if full is not None else ""
            if full is None or not key:
                run.stats.add("skipped")
                page.decisions.append(decision(run, event.id, event.id, Outcome.SKIPPED, NO_MASTER))
                continue
            keyed.append(plan.Keyed(full, key, master))
        return await self._withdrawals.own_keys(keyed, page)

    async def capture_all(
        self, run: Run, keyed: Sequence[plan.Keyed], links: dict[str, Link], page: CalendarPage
    ) -> None:
        config = run.config
        inputs = plan.Inputs(keyed, links, {}, config.upn, config.calendar_policy, config.calendar_category)
        inputs = replace(inputs, matches=await people_by_address(self._crm, plan.addresses(inputs)))
        captures: list[plan.Capture] = []
        for action in plan.plan(inputs):
            if isinstance(action, plan.Skip):
                run.stats.add("skipped")
                page.decisions.append(
                    decision(run, action.key, action.event_id, Outcome.SKIPPED, action.reason)
                )
            elif isinstance(action, plan.Withdraw):
                await self._withdrawals.withdraw(run, action.link, page, by_organizer=True)
            else:
                captures.append(action)
        # A meeting seen for the first time is linked before its appointment is written: a worker that
        # dies between the CRM write and the page's links would otherwise leave an appointment no link
        # leads to, which the meeting's later deletion (or a fresh round's reconciliation) never finds.
        first = [self._link(run, c.keyed, page.round_id) for c in captures if c.previous is None]
        # The same for a new key (a rescheduled series): noted on the old link, which keeps its key so the
        # old appointment is still withdrawn; a removal found later withdraws the new key too.
        first += [
            replace(c.previous, event=replace(c.previous.event, pending_key=c.keyed.key))
            for c in captures
            if c.previous is not None
            and c.previous.crm_key not in ("", c.keyed.key)
            and c.previous.event.pending_key != c.keyed.key
        ]
        if first:
            await self._state.put_links(first)
        for c in captures:  # a new key a dead worker wrote, and the meeting moved on again
            old = c.previous
            if old is not None and old.event.pending_key not in ("", c.keyed.key, old.crm_key):
                await self._withdrawals.withdraw(
                    run, at_pending_key(old), page, keep_link=True, pending=False
                )
        failures = 0
        for c in captures:
            failures = await self._capture(run, c, page, failures)
            old, captured = c.previous, page.by_id.get(c.keyed.event.id)
            if (
                old is not None
                and old.crm_key not in ("", c.keyed.key)
                and captured is not None
                and captured.crm_key == c.keyed.key
                and (old.item_id, old.crm_key) not in page.withdrawn
            ):  # re-keyed (a rescheduled series), also when retried alone: its old key is withdrawn
                await self._withdrawals.withdraw(run, old, page, keep_link=True, pending=False)

    async def _capture(self, run: Run, capture: plan.Capture, page: CalendarPage, failures: int) -> int:
        """Write one appointment; a CRM failure becomes an issue, and the third retryable failure in a
        row stops the page. Returns the retryable failures in a row."""
        event, key, master = capture.keyed.event, capture.keyed.key, capture.keyed.master
        appointment = plan.build_appointment(
            event,
            key,
            master.ical_uid if master else "",
            owner=run.config.owner,
            people=capture.people,
            body_limit=self._body_limit,
            seen_by=(run.user.lower(),),
            subject_limit=self._subject_limit,
        )
        if key in page.collided:
            appointment = plan.APPOINTMENTS.rekey(appointment, key)  # its series goes under its own key too
        try:
            written: Written = await write_keyed(
                self._state,
                appointment,
                run.user,
                plan.APPOINTMENTS,
                upsert=self._crm.upsert_appointment,
                doubt_first=True,
            )
        except CrmError as error:
            run.stats.add("failed")
            await run.note_issue(key, f"CRM: {error}", event.id)
            page.decisions.append(decision(run, key, event.id, Outcome.FAILED, f"CRM: {error}"))
            if isinstance(error, CrmRetryableError):
                failures += 1
                if failures >= MAX_CONSECUTIVE_CRM_FAILURES:
                    raise
            return failures
        run.stats.add("captured" if written.changed else "unchanged")
        reason = capture.reason
        if key in page.collided or written.collided:
            reason = f"{reason}; {COLLIDED}"
            run.stats.add("collisions", written.changed)  # counted once: when its own appointment is written
        page.by_id[event.id] = self._link(run, replace(capture.keyed, key=written.key), page.round_id)
        page.decisions.append(decision(run, key, event.id, Outcome.SYNCED, reason, crm_key=written.key))
        return 0

    @staticmethod
    def _link(run: Run, keyed: plan.Keyed, round_id: str) -> Link:
        event = keyed.event
        return Link(
            run.user,
            STREAM,
            event.id,
            crm_key=keyed.key,
            change_key=event.change_key,
            event=EventLink(
                series=keyed.master.id if keyed.master else "",
                start=event.start,
                end=event.end,
                round_id=round_id,
            ),
        )

    async def confirm_removal(
        self, run: Run, item_id: str, link: Link | None, page: CalendarPage, masters: Masters
    ) -> None:
        """`@removed` means deleted *or* out of the window: only a 404 withdraws the meeting."""
        if link is None or link.event.from_crm:
            return
        event = await self._source.get_event(run.user, item_id)
        if link.event.master:
            if event is None:
                for member in await self._withdrawals.members(run.user, item_id):
                    await self._withdrawals.withdraw(run, member, page)
                await self._state.delete_link(run.user, STREAM, item_id)
                page.by_id.pop(item_id, None)
            return
        if event is None:
            await self._withdrawals.withdraw(run, link, page)
            return
        run.stats.add("kept")  # still there, outside the window: keep it, with its new times
        master = (
            await self.master(run.user, event.series_master_id, masters) if event.series_master_id else None
        )
        full = plan.hydrate(event, master)
        key = plan.appointment_key(full, master) if full is not None else ""
        if full is not None and key:
            [own] = await self._withdrawals.own_keys([plan.Keyed(full, key, master)], page)
            if own.key != link.crm_key:
                await self._withdrawals.withdraw(run, link, page, pending=False)
            await self.capture_all(run, [own], {}, page)
