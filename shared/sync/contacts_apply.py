"""Applying a contacts plan: each action's effect first, then its link row; a failed action becomes an
issue planned again by later runs, and the others go on. Conflicts are recorded on the user's status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from shared.errors import (
    CrmRejectedError,
    DeltaExpired,
    GraphError,
    GraphNotFound,
    GraphThrottled,
    OutlookChanged,
)
from shared.model import (
    ContactLink,
    CrmContact,
    CrmContactRemoved,
    Issue,
    Link,
    Outcome,
    OutlookChange,
    PendingWrite,
    change_id,
)
from shared.ports.crm import CrmPort
from shared.ports.graph import ContactsSide
from shared.ports.state import StateStore
from shared.sync import contacts_plan as cp
from shared.sync.runner import Run

STREAM = "contacts"
DROPPED = "contacts-dropped"  # link rows keyed by CRM id: contacts the user deleted from Outlook
RETRY_PREFIX = "retry:"
RENEW_EVERY = 25  # actions between lease renewals


class ContactsWriter:
    def __init__(self, state: StateStore, crm: CrmPort, outlook: ContactsSide) -> None:
        self._state = state
        self._crm = crm
        self._outlook = outlook

    async def apply(self, run: Run, folder: str, plan: cp.Plan) -> set[str]:
        """Apply every action; returns the retry keys of the actions that failed."""
        failed: set[str] = set()
        for n, action in enumerate(plan.actions, start=1):
            try:
                await self._one(run, folder, action)
            except (CrmRejectedError, OutlookChanged) as error:
                failed.add(await self._failed(run, action, error))
            except GraphError as error:
                if isinstance(error, GraphThrottled | DeltaExpired) or error.status in (0, 401, 403):
                    raise
                failed.add(await self._failed(run, action, error))
            if n % RENEW_EVERY == 0:
                await run.renew()
        return failed

    async def _one(self, run: Run, folder: str, action: cp.Action) -> None:
        user, config = run.user, run.config
        if isinstance(action, cp.SyncPair):
            try:
                await self._pair(run, folder, action)
            except GraphNotFound:
                if not action.outlook_id or action.crm_ref is None:
                    raise
                # deleted in Outlook after this run read the folder: as if the delta had said so
                delete = config.contacts_delete_in_crm and config.contacts_direction != "crm-to-outlook"
                await self._one(run, folder, cp.Unlink(action.outlook_id, action.crm_ref, delete))
        elif isinstance(action, cp.Unlink):
            if action.crm_ref is not None:
                if action.delete_in_crm:
                    await self._crm.delete_contact(action.crm_ref)
                    run.stats.add("removed")
                else:
                    await self._state.put_links([Link(user, DROPPED, action.crm_ref.id)])
            await self._state.delete_link(user, STREAM, action.outlook_id)
            run.stats.add("unlinked")
        elif isinstance(action, cp.RemoveFromOutlook):
            if action.delete:
                # marked first: a run that dies after the delete must not take it for the user's
                link = await self._state.get_link(user, STREAM, action.outlook_id)
                if link is not None and not link.contact.removing:
                    await self._state.put_links([replace(link, contact=replace(link.contact, removing=True))])
                await self._outlook.delete(user, folder, action.outlook_id)
                await self._state.delete_link(user, STREAM, action.outlook_id)
                run.stats.add("removed")
            else:
                await self._state.put_links([Link(user, STREAM, action.outlook_id, crm_key="")])
                run.stats.add("unlinked")
        elif isinstance(action, cp.ForgetLink):
            await self._state.delete_link(user, STREAM, action.outlook_id)
        else:
            await self._state.delete_link(user, DROPPED, action.crm_id)

    async def _pair(self, run: Run, folder: str, a: cp.SyncPair) -> None:
        user, notes = run.user, run.config.contacts_notes
        if a.drop:
            await self._state.put_links([Link(user, DROPPED, a.drop)])
        crm_ref, crm_print, version = a.crm_ref, a.crm_print, a.crm_version
        if (a.to_crm is None) != (a.to_outlook is None) and a.crm_ref is not None and a.outlook_id:
            await self._note_pending(run, a)
        if a.to_crm is not None:
            written = await self._crm.upsert_contact(
                CrmContact(ref=a.crm_ref, owner=run.config.owner, fields=a.to_crm, key=a.crm_key)
            )
            crm_ref, version = written, written.version
            crm_print = cp.print_of(cp.project(a.to_crm, notes=notes))
            run.stats.add("created" if a.crm_ref is None else "updated")
        if crm_ref is None:
            raise GraphError("a contact pair without a CRM side")  # the plan never makes one
        outlook_id, change_key, outlook_print = a.outlook_id, a.outlook_change_key, a.outlook_print
        if a.to_outlook is not None:
            if outlook_id:
                item = await self._outlook.update(
                    user, folder, outlook_id, a.to_outlook, change_key=a.outlook_change_key, notes=notes
                )
                run.stats.add("updated")
            else:
                item = await self._outlook.create(user, folder, a.to_outlook, crm_id=crm_ref.id, notes=notes)
                run.stats.add("created")
            outlook_id, change_key = item.contact.id, item.contact.change_key
            outlook_print = cp.print_of(cp.project(item.contact.fields, notes=notes))
        if a.crm_ref is not None and a.outlook_id and a.reason.startswith("matched"):
            run.stats.add("linked")
        link = Link(
            user,
            STREAM,
            outlook_id,
            crm_key=crm_ref.id,
            change_key=change_key,
            local_fingerprint=outlook_print,
            crm_fingerprint=crm_print,
            contact=ContactLink(base=a.merged, crm_version=version),
        )
        await self._state.put_links([link])
        if a.undrop:
            await self._state.delete_link(user, DROPPED, a.undrop)

    async def _note_pending(self, run: Run, a: cp.SyncPair) -> None:
        """Before a linked contact's one-sided write, on its link: should the answer be lost while the
        side applied it, the next run recognises that side's copy as this write, not as an edit there."""
        notes = run.config.contacts_notes
        link = await self._state.get_link(run.user, STREAM, a.outlook_id)
        if link is None or a.crm_ref is None or link.crm_key != a.crm_ref.id:
            return
        crm_print, outlook_print = a.crm_print, a.outlook_print
        if a.to_crm is not None:
            crm_print = cp.print_of(cp.project(a.to_crm, notes=notes))
        if a.to_outlook is not None:
            outlook_print = cp.print_of(cp.project(a.to_outlook, notes=notes))
        side = "crm" if a.to_crm is not None else "outlook"
        pending = PendingWrite(side, crm_print, outlook_print, a.outlook_change_key, a.merged)
        await self._state.put_links([replace(link, contact=replace(link.contact, pending_write=pending))])

    async def _failed(self, run: Run, action: cp.Action, error: Exception) -> str:
        """Recorded with its reason and planned again by later runs; the other contacts go on."""
        run.stats.add("failed")
        if isinstance(action, cp.SyncPair) and action.outlook_id:
            key, item_id = f"{RETRY_PREFIX}outlook:{action.outlook_id}", action.outlook_id
        elif isinstance(action, cp.SyncPair) and action.crm_ref is not None:
            key, item_id = f"{RETRY_PREFIX}crm:{action.crm_ref.id}", action.crm_ref.id
        else:
            return ""  # deletes and unlinks are found again from the link rows
        changed = isinstance(error, OutlookChanged)
        await run.note_issue(
            key, "Outlook changed meanwhile; merged again next run" if changed else str(error), item_id
        )
        return key

    async def issues(
        self,
        run: Run,
        plan: cp.Plan,
        open_issues: Mapping[str, Issue],
        outlook: Sequence[OutlookChange],
        crm: Sequence[CrmContact | CrmContactRemoved],
        failed: set[str],
    ) -> None:
        for key, reason in plan.issues.items():
            known = open_issues.get(key)
            if known is None or known.reason != reason:
                await run.note_issue(key, reason)
        for key in plan.resolved:
            if key in open_issues:
                await self._state.resolve_issue(run.user, key)
        retried = {change_id(c) for c in outlook} | {crm_id(c) for c in crm}
        for key, issue in open_issues.items():
            if key.startswith(RETRY_PREFIX) and issue.item_id in retried and key not in failed:
                await self._state.resolve_issue(run.user, key)

    async def conflicts(self, run: Run, plan: cp.Plan) -> None:
        """Recorded as decisions and on the user's status (no values: which fields, which rule decided);
        the run's `conflicts` counter is kept with the stream's totals like every other."""
        if not plan.conflicts:
            return
        run.stats.add("conflicts", len(plan.conflicts))
        decisions = [
            run.decision(
                cp.contact_issue_key(c.crm_id),
                Outcome.SYNCED,
                f"conflict on {', '.join(cp.API_NAMES[f] for f in c.fields)}: {c.rule} ({c.winner} kept)",
                crm_key=c.crm_id,
                details={"fields": [cp.API_NAMES[f] for f in c.fields]},
            )
            for c in plan.conflicts
        ]
        await self._state.record_decisions(decisions)
        row = await self._state.get_user(run.user)
        total = int((row.columns.get("ContactsConflicts") or 0) if row else 0) + len(plan.conflicts)
        last = decisions[-1]
        await self._state.update_status(
            run.user,
            {
                "ContactsConflicts": total,
                "LastContactsConflict": f"{run.now():%Y-%m-%d %H:%M} UTC contact {last.crm_key}: "
                + last.reason,
            },
        )


def crm_id(change: CrmContact | CrmContactRemoved) -> str:
    if isinstance(change, CrmContactRemoved):
        return change.ref.id
    return change.ref.id if change.ref is not None else ""
