"""Pure decisions for contacts: what one run writes on each side, given both sides' changes and the links.

No I/O here. The runner reads the owned folder's delta, the CRM's contact feed and the link rows, and
`plan()` returns the actions; `brake()` says whether the run may apply them.

- Mapped fields are compared as `project()`ed: Outlook's caps (three e-mail addresses, two business
  phones), trimmed text, a display name derived as Outlook derives it when empty, notes only when
  `ContactsNotes` is on. A contact's base is the projected fields both sides agreed on at the last
  sync (kept on the link, `ContactLink.base`); a side changed when its fingerprint differs from the one
  recorded after the last sync (for Outlook, also its changeKey), so our own writes never come back.
- Both sides changed: each field changed on one side takes that side; a field changed on both to
  different values follows `ContactsConflictRule`, and the conflict is reported.
- Unlinked contacts are matched (our key, our stamp on an Outlook contact we created, then any shared
  e-mail address, case-insensitive) and linked instead of duplicated; only the rest are created.
- Deletes: Outlook delete → unlink (the CRM contact is deleted only with `ContactsDeleteInCrm`, and
  otherwise remembered as "dropped" so it is not pushed back); CRM delete or unassignment → removed
  from the owned folder.
- An Outlook contact whose name and every e-mail address changed at once was reused for another
  person: it becomes a new CRM contact and the old one is left unchanged and unlinked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.model import (
    ConflictRule,
    ContactFields,
    CrmContact,
    CrmContactRemoved,
    CrmRef,
    Held,
    Link,
    OutlookChange,
    OutlookContactRemoved,
    OutlookItem,
    PostalAddress,
    UserConfig,
    change_id,
    fingerprint,
)

MAX_EMAILS = 3  # Outlook's cap on emailAddresses
MAX_BUSINESS_PHONES = 2  # Outlook's cap on businessPhones
FIELD_NAMES = tuple(f.name for f in dataclasses.fields(ContactFields))
API_NAMES = {
    "given_name": "givenName", "surname": "surname", "display_name": "displayName", "emails": "emails",
    "business_phones": "businessPhones", "mobile_phone": "mobilePhone", "company": "company",
    "job_title": "jobTitle", "department": "department", "business_address": "businessAddress",
    "notes": "notes",
}  # fmt: skip

# ---------------------------------------------------------------------------------------------
# Fields


def derived_display_name(fields: ContactFields) -> str:
    """What Outlook shows when the display name is empty: the names, else the company, else the address."""
    name = " ".join(p for p in (fields.given_name.strip(), fields.surname.strip()) if p)
    return name or fields.company.strip() or (fields.emails[0].strip() if fields.emails else "")


def project(fields: ContactFields, *, notes: bool) -> ContactFields:
    """The fields as both sides can hold them: what the sync compares, merges and writes to Outlook."""
    emails = tuple(e.strip() for e in fields.emails if e.strip())
    phones = tuple(p.strip() for p in fields.business_phones if p.strip())
    postal = fields.business_address
    clean = ContactFields(
        given_name=fields.given_name.strip(),
        surname=fields.surname.strip(),
        display_name=fields.display_name.strip(),
        emails=_unique(emails)[:MAX_EMAILS],
        business_phones=phones[:MAX_BUSINESS_PHONES],
        mobile_phone=fields.mobile_phone.strip(),
        company=fields.company.strip(),
        job_title=fields.job_title.strip(),
        department=fields.department.strip(),
        business_address=PostalAddress(*(v.strip() for v in dataclasses.astuple(postal))),
        notes=fields.notes.strip() if notes else "",
    )
    return dataclasses.replace(clean, display_name=clean.display_name or derived_display_name(clean))


def _unique(emails: Sequence[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    kept: list[str] = []
    for email in emails:
        if email.lower() not in seen:
            seen.add(email.lower())
            kept.append(email)
    return tuple(kept)


def crm_record(merged: ContactFields, current: ContactFields | None, *, notes: bool) -> ContactFields:
    """The full record to write to the CRM: the merged fields, plus what Outlook cannot hold and the
    CRM already has (addresses after the third, business phones after the second, notes when off)."""
    if current is None:
        return merged
    kept_emails = {e.lower() for e in merged.emails}
    extra_emails = tuple(
        e for e in _unique(current.emails)[MAX_EMAILS:] if e.strip().lower() not in kept_emails
    )
    extra_phones = tuple(
        p for p in current.business_phones[MAX_BUSINESS_PHONES:] if p not in merged.business_phones
    )
    display = merged.display_name
    if display == derived_display_name(merged) and not current.display_name.strip():
        display = current.display_name  # the CRM derives it too: keep it empty
    return dataclasses.replace(
        merged,
        display_name=display,
        emails=merged.emails + extra_emails,
        business_phones=merged.business_phones + extra_phones,
        notes=merged.notes if notes else current.notes,
    )


def overflow(fields: ContactFields) -> str:
    """Why a CRM contact cannot be held whole by Outlook ("" when it can)."""
    parts: list[str] = []
    emails = _unique(tuple(e.strip() for e in fields.emails if e.strip()))
    phones = [p for p in fields.business_phones if p.strip()]
    if len(emails) > MAX_EMAILS:
        parts.append(
            f"{len(emails)} e-mail addresses: Outlook holds {MAX_EMAILS}, so the first {MAX_EMAILS} "
            f"are synced and the other {len(emails) - MAX_EMAILS} stay in the CRM only"
        )
    if len(phones) > MAX_BUSINESS_PHONES:
        parts.append(
            f"{len(phones)} business phones: Outlook holds {MAX_BUSINESS_PHONES}, so the first "
            f"{MAX_BUSINESS_PHONES} are synced and the rest stay in the CRM only"
        )
    return "; ".join(parts)


def to_dict(fields: ContactFields) -> dict[str, Any]:
    return dataclasses.asdict(fields)


def print_of(fields: ContactFields) -> str:
    return fingerprint(to_dict(fields))


@dataclass(frozen=True)
class Merged:
    fields: ContactFields
    conflicts: tuple[str, ...]  # fields changed on both sides to different values


def merge(
    base: ContactFields, outlook: ContactFields, crm: ContactFields, *, rule: str, outlook_newer: bool
) -> Merged:
    """Three-way merge by field: a field changed on one side takes that side; changed on both, `rule`."""
    values: dict[str, Any] = {}
    conflicts: list[str] = []
    outlook_wins = rule == "outlook-wins" or (rule == "newest" and outlook_newer)
    for name in FIELD_NAMES:
        b, o, c = getattr(base, name), getattr(outlook, name), getattr(crm, name)
        if o in (c, b):
            values[name] = c
        elif c == b:
            values[name] = o
        else:
            conflicts.append(name)
            values[name] = o if outlook_wins else c
    merged = ContactFields(**values)
    if all(x.display_name == derived_display_name(x) for x in (base, outlook, crm)):
        # every side shows the name Outlook derives: derive it from the merged names, no conflict
        conflicts = [name for name in conflicts if name != "display_name"]
        merged = dataclasses.replace(merged, display_name=derived_display_name(merged))
    return Merged(merged, tuple(conflicts))


def reused(base: ContactFields, now: ContactFields) -> bool:
    """The name and every e-mail address changed at once: an old contact reused for a new person."""
    old = {e.lower() for e in base.emails}
    new = {e.lower() for e in now.emails}
    renamed = derived_or(base).casefold() != derived_or(now).casefold()
    return bool(old) and bool(new) and not (old & new) and renamed


def derived_or(fields: ContactFields) -> str:
    return fields.display_name or derived_display_name(fields)


def outlook_key(user: str, outlook_id: str, reused_from: str = "") -> str:
    """Our idempotency key for a CRM contact made from an Outlook contact (a re-run finds it)."""
    return "outlook:" + fingerprint([user.lower(), outlook_id, reused_from])


# ---------------------------------------------------------------------------------------------
# Actions


@dataclass(frozen=True)
class SyncPair:
    """Write one contact pair where needed, then record the link (base = `merged`).

    `outlook_id == ""`: create the contact in Outlook. `crm_ref is None`: create it in the CRM under
    `crm_key`. `to_outlook` / `to_crm` are None when that side already holds the merged fields."""

    outlook_id: str
    crm_ref: CrmRef | None
    crm_key: str
    merged: ContactFields
    to_outlook: ContactFields | None
    to_crm: ContactFields | None
    outlook_change_key: str = ""  # If-Match for an Outlook update
    outlook_print: str = ""  # the Outlook side's fingerprint when it is not written
    crm_print: str = ""  # the CRM side's fingerprint when it is not written
    crm_version: str = ""
    reason: str = ""
    conflicts: tuple[str, ...] = ()
    undrop: str = ""  # a CRM id no longer "dropped" (the user added it back)
    drop: str = ""  # a CRM id left unlinked (reused contact: the old one)
    changes_existing: bool = False  # counts toward the mass-change brake


@dataclass(frozen=True)
class Unlink:
    """The contact was deleted in Outlook: forget the link; delete or remember ("drop") the CRM contact."""

    outlook_id: str
    crm_ref: CrmRef | None
    delete_in_crm: bool
    reason: str = "deleted in Outlook"


@dataclass(frozen=True)
class RemoveFromOutlook:
    """The CRM contact was deleted or unassigned: delete it from the owned folder and forget the link
    (or, when Outlook is not written to, keep the Outlook contact detached from any CRM contact)."""

    outlook_id: str
    crm_id: str
    delete: bool
    reason: str = "deleted or unassigned in the CRM"


@dataclass(frozen=True)
class ForgetLink:
    """Both sides are gone (or a detached Outlook contact was deleted): drop the link row."""

    outlook_id: str


@dataclass(frozen=True)
class ForgetDropped:
    crm_id: str


Action = SyncPair | Unlink | RemoveFromOutlook | ForgetLink | ForgetDropped


@dataclass(frozen=True)
class Conflict:
    crm_id: str
    fields: tuple[str, ...]
    rule: str
    winner: str


@dataclass(frozen=True)
class Plan:
    actions: list[Action] = field(default_factory=list)
    issues: dict[str, str] = field(default_factory=dict)  # item key → reason (CRM contacts too big)
    resolved: list[str] = field(default_factory=list)  # item keys whose issue no longer holds
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def changes(self) -> int:
        """Deletes and changes of existing contacts (creations and first links do not count)."""
        return sum(
            1
            for a in self.actions
            if isinstance(a, Unlink | RemoveFromOutlook) or (isinstance(a, SyncPair) and a.changes_existing)
        )


@dataclass(frozen=True)
class Inputs:
    config: UserConfig
    links: Mapping[str, Link]  # by Outlook id (stream "contacts")
    dropped: frozenset[str]  # CRM ids deleted from Outlook by the user, not to be pushed back
    outlook: Sequence[OutlookChange]  # this run's delta, latest by id
    crm: Sequence[CrmContact | CrmContactRemoved]  # this run's CRM feed, latest by id
    outlook_complete: bool = False  # a whole initial round: linked ids absent from it were deleted
    crm_complete: bool = False  # a whole CRM read: linked ids absent from it are no longer assigned
    crm_current: Mapping[str, CrmContact | None] = field(default_factory=dict)  # linked, read by id
    candidates: Sequence[CrmContact] = ()  # the owner's contacts found by address (for new Outlook ones)


def contact_issue_key(crm_id: str) -> str:
    return f"contact:{crm_id}"


# ---------------------------------------------------------------------------------------------
# The plan


def plan(inputs: Inputs) -> Plan:
    return _Planner(inputs).run()


class _Planner:
    def __init__(self, inputs: Inputs) -> None:
        self.i = inputs
        config = inputs.config
        self.notes = config.contacts_notes
        self.rule = config.contacts_conflict_rule
        self.to_outlook = config.contacts_direction in ("two-way", "crm-to-outlook")
        self.to_crm = config.contacts_direction in ("two-way", "outlook-to-crm")
        self.out = Plan()
        self.removed_by_us: set[str] = set()

    def run(self) -> Plan:
        i = self.i
        outlook: dict[str, OutlookChange] = {change_id(c): c for c in i.outlook}
        crm: dict[str, CrmContact | CrmContactRemoved] = {_crm_id(c): c for c in i.crm}
        if i.outlook_complete:
            for oid in i.links:
                outlook.setdefault(oid, OutlookContactRemoved(oid))
        # Our own removal from Outlook, finished by a run that died before forgetting the link: not the
        # user's delete. The CRM contact is then as if never linked (pushed again if it is back).
        self.removed_by_us = {
            oid
            for oid, link in i.links.items()
            if link.contact.removing and isinstance(outlook.get(oid), OutlookContactRemoved)
        }
        linked_crm = {
            link.crm_key for oid, link in i.links.items() if link.crm_key and oid not in self.removed_by_us
        }
        if i.crm_complete:
            for crm_id in linked_crm | set(i.dropped):
                crm.setdefault(crm_id, CrmContactRemoved(CrmRef(crm_id), i.config.owner))
        for change in crm.values():
            if isinstance(change, CrmContact) and change.ref is not None:
                self._note_overflow(change)
        for oid, link in sorted(i.links.items()):
            self._linked(oid, link, outlook.get(oid), crm)
        self._unlinked(
            [c for c in outlook.values() if isinstance(c, OutlookItem) and c.contact.id not in i.links],
            [c for c in crm.values() if _crm_id(c) not in linked_crm],
            linked_crm,
        )
        return self.out

    # -- linked contacts ---------------------------------------------------------------------------

    def _linked(
        self,
        oid: str,
        link: Link,
        o: OutlookChange | None,
        crm: Mapping[str, CrmContact | CrmContactRemoved],
    ) -> None:
        actions = self.out.actions
        if oid in self.removed_by_us:
            actions.append(ForgetLink(oid))
            return
        if not link.crm_key:  # detached: the CRM contact is gone and Outlook is not written to
            if isinstance(o, OutlookContactRemoved):
                actions.append(ForgetLink(oid))
            return
        c: CrmContact | CrmContactRemoved | None = crm.get(link.crm_key)
        if c is None and isinstance(o, OutlookItem) and link.crm_key in self.i.crm_current:
            current = self.i.crm_current[link.crm_key]
            c = (
                current
                if current is not None
                else CrmContactRemoved(CrmRef(link.crm_key), self.i.config.owner)
            )
        if o is None and c is None:
            return
        if isinstance(o, OutlookContactRemoved):
            if isinstance(c, CrmContactRemoved):
                actions.append(ForgetLink(oid))
            else:
                delete = self.i.config.contacts_delete_in_crm and self.to_crm
                actions.append(Unlink(oid, CrmRef(link.crm_key), delete_in_crm=delete))
            return
        if isinstance(c, CrmContactRemoved):
            actions.append(RemoveFromOutlook(oid, link.crm_key, delete=self.to_outlook))
            return
        before = len(actions)
        self._pair(oid, link, o, c)
        if link.contact.removing and len(actions) == before:  # back in the CRM before we removed it
            actions.append(
                SyncPair(
                    outlook_id=oid, crm_ref=CrmRef(link.crm_key), crm_key="",
                    merged=link.contact.base or ContactFields(),
                    to_outlook=None, to_crm=None, outlook_change_key=link.change_key,
                    outlook_print=link.local_fingerprint, crm_print=link.crm_fingerprint,
                    reason="kept: assigned again before it was removed from Outlook",
                )
            )  # fmt: skip

    def _pair(self, oid: str, link: Link, o: OutlookItem | None, c: CrmContact | None) -> None:
        stored, link = link, self._confirmed(link, o, c)
        base = link.contact.base
        o_fields = project(o.contact.fields, notes=self.notes) if o is not None else None
        c_fields = project(c.fields, notes=self.notes) if c is not None else None
        o_print = print_of(o_fields) if o_fields is not None else link.local_fingerprint
        c_print = print_of(c_fields) if c_fields is not None else link.crm_fingerprint
        o_changed = (
            o is not None and o.contact.change_key != link.change_key and o_print != link.local_fingerprint
        )
        c_changed = c is not None and c_print != link.crm_fingerprint
        if base is None:  # a link written before bases were kept: take the CRM's as the base
            base = c_fields or o_fields or ContactFields()
        if not o_changed and not c_changed:
            if o is not None and o.contact.change_key != link.change_key:
                self._record(oid, link, base, o, c, reason="Outlook changed unmapped fields")
            elif link is not stored:  # the lost answer's write, confirmed: the link as that write left it
                self.out.actions.append(
                    SyncPair(
                        outlook_id=oid, crm_ref=CrmRef(link.crm_key), crm_key="", merged=base,
                        to_outlook=None, to_crm=None, outlook_change_key=link.change_key,
                        outlook_print=link.local_fingerprint, crm_print=link.crm_fingerprint,
                        crm_version=c.ref.version if c is not None and c.ref else "",
                        reason="a CRM write whose answer was lost is there",
                    )
                )  # fmt: skip
            return
        assert link.crm_key
        if o_changed and o_fields is not None and self.to_crm and reused(base, o_fields):
            self.out.actions.append(
                SyncPair(
                    outlook_id=oid, crm_ref=None, crm_key=outlook_key(self.i.config.upn, oid, link.crm_key),
                    merged=o_fields, to_outlook=None, to_crm=o_fields, outlook_print=o_print,
                    reason="reused in Outlook for another person (name and every address changed): "
                    "a new CRM contact; the old one is left unchanged and unlinked",
                    drop=link.crm_key,
                )
            )  # fmt: skip
            return
        o_now = o_fields if o_changed and o_fields is not None else base
        c_now = c_fields if c_changed and c_fields is not None else base
        conflicts: tuple[str, ...] = ()
        if self.to_outlook and self.to_crm:
            result = merge(base, o_now, c_now, rule=self.rule, outlook_newer=_newer(o, c))
            merged, conflicts = result.fields, result.conflicts
        elif self.to_outlook:  # the CRM is the source: its change wins whole, Outlook edits wait
            merged = c_now if c_changed else base
        else:
            merged = o_now if o_changed else base
        if conflicts:
            winner = (
                "outlook"
                if self.rule == "outlook-wins" or (self.rule == "newest" and _newer(o, c))
                else "crm"
            )
            self.out.conflicts.append(Conflict(link.crm_key, conflicts, self.rule, winner))
        self._emit(oid, link, merged, o, c, o_print, c_print, conflicts, reason="changed")

    def _confirmed(self, link: Link, o: OutlookItem | None, c: CrmContact | None) -> Link:
        """A one-sided write whose answer was lost (a timeout, a 5xx after the write, a worker that died)
        and which the written side now holds exactly: the link as if the write had been confirmed.
        Otherwise our copy would look like an edit made on that side, and win over the other side's
        user setting the field back meanwhile. A write the side does not hold is planned again."""
        pending = link.contact.pending_write
        if pending is None:
            return link
        change_key = pending.change_key
        if pending.side == "crm":
            if c is None or print_of(project(c.fields, notes=self.notes)) != pending.crm:
                return link
        elif pending.side == "outlook":
            if o is None or print_of(project(o.contact.fields, notes=self.notes)) != pending.local:
                return link
            change_key = o.contact.change_key
        else:
            return link
        return dataclasses.replace(
            link,
            change_key=change_key,
            crm_fingerprint=pending.crm,
            local_fingerprint=pending.local,
            contact=dataclasses.replace(link.contact, pending_write=None, base=pending.base),
        )

    def _emit(
        self,
        oid: str,
        link: Link,
        merged: ContactFields,
        o: OutlookItem | None,
        c: CrmContact | None,
        o_print: str,
        c_print: str,
        conflicts: tuple[str, ...],
        reason: str,
    ) -> None:
        to_outlook = merged if self.to_outlook and print_of(merged) != o_print else None
        to_crm: ContactFields | None = None
        if self.to_crm and print_of(merged) != c_print:
            current = c.fields if c is not None else None
            to_crm = crm_record(merged, current, notes=self.notes)
            if current is not None and to_crm == current:
                to_crm = None
        self.out.actions.append(
            SyncPair(
                outlook_id=oid, crm_ref=CrmRef(link.crm_key), crm_key="", merged=merged,
                to_outlook=to_outlook, to_crm=to_crm,
                outlook_change_key=o.contact.change_key if o is not None else link.change_key,
                outlook_print=o_print, crm_print=c_print, crm_version=c.ref.version if c and c.ref else "",
                reason=reason, conflicts=conflicts,
                changes_existing=to_outlook is not None or to_crm is not None,
            )
        )  # fmt: skip

    def _record(
        self, oid: str, link: Link, base: ContactFields, o: OutlookItem, c: CrmContact | None, reason: str
    ) -> None:
        o_print = print_of(project(o.contact.fields, notes=self.notes))
        self.out.actions.append(
            SyncPair(
                outlook_id=oid, crm_ref=CrmRef(link.crm_key), crm_key="", merged=base, to_outlook=None,
                to_crm=None, outlook_change_key=o.contact.change_key, outlook_print=o_print,
                crm_print=link.crm_fingerprint, reason=reason,
            )
        )  # fmt: skip

    # -- unlinked contacts: match, link, create ----------------------------------------------------

    def _unlinked(
        self,
        outlook_new: list[OutlookItem],
        crm_unlinked: list[CrmContact | CrmContactRemoved],
        linked_crm: set[str],
    ) -> None:
        i = self.i
        pool: dict[str, CrmContact] = {}
        from_feed: set[str] = set()
        for change in crm_unlinked:
            crm_id = _crm_id(change)
            if isinstance(change, CrmContactRemoved):
                if crm_id in i.dropped:
                    self.out.actions.append(ForgetDropped(crm_id))
                continue
            from_feed.add(crm_id)
            pool[crm_id] = change
        for candidate in i.candidates:
            crm_id = _crm_id(candidate)
            if crm_id not in linked_crm and candidate.owner == i.config.owner:
                pool.setdefault(crm_id, candidate)
        used: set[str] = set()
        by_key = {c.key: cid for cid, c in pool.items() if c.key}
        for item in outlook_new:
            oid = item.contact.id
            match = self._match(item, pool, by_key, used)
            if match is not None:
                used.add(_crm_id(match))
                self._link(item, match)
            elif self.to_crm:
                fields = project(item.contact.fields, notes=self.notes)
                self.out.actions.append(
                    SyncPair(
                        outlook_id=oid, crm_ref=None, crm_key=outlook_key(i.config.upn, oid), merged=fields,
                        to_outlook=None, to_crm=fields, outlook_change_key=item.contact.change_key,
                        outlook_print=print_of(fields), reason="new in Outlook",
                    )
                )  # fmt: skip
        if not self.to_outlook:
            return
        for crm_id in sorted(from_feed - used):
            if crm_id in i.dropped:
                continue
            contact = pool[crm_id]
            fields = project(contact.fields, notes=self.notes)
            self.out.actions.append(
                SyncPair(
                    outlook_id="", crm_ref=contact.ref, crm_key="", merged=fields, to_outlook=fields,
                    to_crm=None,
                    crm_print=print_of(fields), crm_version=contact.ref.version if contact.ref else "",
                    reason="new in the CRM",
                )
            )  # fmt: skip

    def _match(
        self, item: OutlookItem, pool: Mapping[str, CrmContact], by_key: Mapping[str, str], used: set[str]
    ) -> CrmContact | None:
        oid = item.contact.id
        ours = by_key.get(outlook_key(self.i.config.upn, oid))
        if ours is not None and ours not in used:
            return pool[ours]
        if item.crm_tag and item.crm_tag in pool and item.crm_tag not in used:
            return pool[item.crm_tag]
        wanted = {e.strip().lower() for e in item.contact.fields.emails if e.strip()}
        if not wanted:
            return None
        for crm_id in sorted(pool):
            if crm_id in used:
                continue
            if wanted & {e.strip().lower() for e in pool[crm_id].fields.emails}:
                return pool[crm_id]
        return None

    def _link(self, item: OutlookItem, contact: CrmContact) -> None:
        """First link of two contacts that are the same person: fill each side from the other."""
        o_fields = project(item.contact.fields, notes=self.notes)
        c_fields = project(contact.fields, notes=self.notes)
        rule = self.rule
        if not (self.to_outlook and self.to_crm):
            rule = ConflictRule.CRM_WINS if self.to_outlook else ConflictRule.OUTLOOK_WINS
        empty = ContactFields(business_address=PostalAddress())
        result = merge(empty, o_fields, c_fields, rule=rule, outlook_newer=_newer(item, contact))
        first, second = (o_fields, c_fields) if _outlook_wins(rule, item, contact) else (c_fields, o_fields)
        merged = dataclasses.replace(  # addresses and phones of both are kept, the winner's first
            result.fields,
            emails=_unique(first.emails + second.emails)[:MAX_EMAILS],
            business_phones=tuple(dict.fromkeys(first.business_phones + second.business_phones))[
                :MAX_BUSINESS_PHONES
            ],
        )
        assert contact.ref is not None
        link = Link(
            self.i.config.upn, "contacts", item.contact.id, crm_key=contact.ref.id,
            change_key=item.contact.change_key,
        )  # fmt: skip
        before = len(self.out.actions)
        self._emit(
            item.contact.id, link, merged, item, contact, print_of(o_fields), print_of(c_fields), (),
            reason="matched by e-mail address or our stamp: linked, not duplicated",
        )  # fmt: skip
        if contact.ref.id in self.i.dropped and len(self.out.actions) > before:
            pair = self.out.actions[-1]
            assert isinstance(pair, SyncPair)
            self.out.actions[-1] = dataclasses.replace(pair, undrop=contact.ref.id)

    def _note_overflow(self, contact: CrmContact) -> None:
        assert contact.ref is not None
        key = contact_issue_key(contact.ref.id)
        reason = overflow(contact.fields)
        if reason:
            self.out.issues[key] = f"CRM contact {contact.ref.id} has {reason}"
        else:
            self.out.resolved.append(key)


def _crm_id(change: CrmContact | CrmContactRemoved) -> str:
    if isinstance(change, CrmContactRemoved):
        return change.ref.id
    return change.ref.id if change.ref is not None else ""


def _outlook_wins(rule: str, o: OutlookItem | None, c: CrmContact | None) -> bool:
    return rule == "outlook-wins" or (rule == "newest" and _newer(o, c))


def _newer(o: OutlookItem | None, c: CrmContact | None) -> bool:
    """Whether the Outlook side was edited after the CRM side (ties go to the CRM)."""
    o_when: datetime | None = o.modified if o is not None else None
    c_when: datetime | None = c.updated_at if c is not None else None
    return o_when is not None and c_when is not None and o_when > c_when


# ---------------------------------------------------------------------------------------------
# The mass-change brake


@dataclass(frozen=True)
class BrakeVerdict:
    apply: bool
    reason: str


def brake(
    planned: int,
    threshold: int,
    held: Held | None,
    approved_at: datetime | None,
    *,
    things: str = "contacts",
    column: str = "ContactsChangeThreshold",
    where: str = "the Outlook folder",
) -> BrakeVerdict:
    """A run that would delete or change more than `threshold` existing contacts (or, for the tasks
    stream, tasks) applies nothing and waits for an admin. An approval given after the run was held
    lets through as many changes as were held, plus the threshold (so a few more edits meanwhile do
    not hold it again)."""
    if planned <= threshold:
        return BrakeVerdict(True, "")
    approved = held is not None and approved_at is not None and approved_at >= held.since
    if approved and held is not None and planned <= held.changes + threshold:
        return BrakeVerdict(True, f"approved: {planned} deletes/changes")
    return BrakeVerdict(
        False,
        f"this run would delete or change {planned} {things} (more than {column} "
        f"{threshold}); nothing was applied. Check the CRM and {where}, then approve with "
        "`crmsync approve <user>`",
    )


def latest_by_id(changes: Sequence[OutlookChange]) -> list[OutlookChange]:
    """Graph may repeat an item within a round; the last occurrence wins (a removal beats an earlier add)."""
    last: dict[str, OutlookChange] = {}
    for change in changes:
        key = change_id(change)
        last.pop(key, None)
        last[key] = change
    return list(last.values())
