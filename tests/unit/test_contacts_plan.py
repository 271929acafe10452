from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.model import (
    ContactFields,
    ContactLink,
    CrmContact,
    CrmContactRemoved,
    CrmRef,
    Held,
    Link,
    OutlookContact,
    OutlookContactRemoved,
    OutlookItem,
)
from shared.sync import contacts_plan as cp
from shared.users import parse_user

UPN = "ann@contoso.com"
WHEN = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
BOB = ContactFields(given_name="Bob", surname="Buyer", emails=("bob@fabrikam.example",), job_title="Buyer")


def config(**columns: Any) -> Any:
    return parse_user(UPN, {"Enabled": True, "Contacts": True, **columns})


def outlook(
    oid: str = "o1", fields: ContactFields = BOB, key: str = "ck2", *, tag: str = "", at: datetime = WHEN
) -> OutlookItem:
    return OutlookItem(OutlookContact(oid, key, fields), modified=at, crm_tag=tag)


def crm(
    cid: str = "p1", fields: ContactFields = BOB, *, owner: str = UPN, key: str = "", at: datetime = WHEN
) -> CrmContact:
    return CrmContact(CrmRef(cid, "7"), owner, fields, key=key, updated_at=at)


def link(oid: str = "o1", cid: str = "p1", base: ContactFields = BOB, key: str = "ck1") -> Link:
    projected = cp.project(base, notes=False)
    print_ = cp.print_of(projected)
    return Link(
        UPN,
        "contacts",
        oid,
        crm_key=cid,
        change_key=key,
        local_fingerprint=print_,
        crm_fingerprint=print_,
        contact=ContactLink(base=projected),
    )


def plan(**inputs: Any) -> cp.Plan:
    inputs.setdefault("config", config())
    inputs.setdefault("links", {})
    inputs.setdefault("dropped", frozenset())
    inputs.setdefault("outlook", [])
    inputs.setdefault("crm", [])
    return cp.plan(cp.Inputs(**inputs))


def summary(result: cp.Plan) -> list[str]:
    """Each action in a few words: what is written where."""
    out: list[str] = []
    for a in result.actions:
        if isinstance(a, cp.SyncPair):
            crm_side = "-" if a.to_crm is None else ("create" if a.crm_ref is None else "update")
            outlook_side = "-" if a.to_outlook is None else ("update" if a.outlook_id else "create")
            out.append(f"pair crm:{crm_side} outlook:{outlook_side}")
        else:
            out.append(type(a).__name__)
    return out


# -- fields ----------------------------------------------------------------------------------------


def test_projection_caps_collections_derives_the_display_name_and_drops_notes_unless_enabled() -> None:
    fields = ContactFields(
        given_name=" Max ",
        surname="Many",
        emails=("a@x", "A@x", "b@x", "c@x", "d@x"),
        business_phones=("1", "2", "3"),
        notes="secret",
    )
    projected = cp.project(fields, notes=False)
    assert projected.emails == ("a@x", "b@x", "c@x") and projected.business_phones == ("1", "2")
    assert projected.display_name == "Max Many" and projected.notes == ""
    assert cp.project(fields, notes=True).notes == "secret"
    assert "4 e-mail addresses" in cp.overflow(fields) and "3 business phones" in cp.overflow(fields)
    assert cp.overflow(BOB) == ""


def test_crm_record_keeps_what_outlook_cannot_hold() -> None:
    current = ContactFields(emails=("a@x", "b@x", "c@x", "d@x"), business_phones=("1", "2", "3"), notes="n")
    merged = ContactFields(emails=("a@x", "b@x", "e@x"), business_phones=("1", "9"), job_title="CFO")
    written = cp.crm_record(merged, current, notes=False)
    assert written.emails == ("a@x", "b@x", "e@x", "d@x") and written.business_phones == ("1", "9", "3")
    assert written.notes == "n" and written.job_title == "CFO"


MERGE_CASES = [
    # (field values base / outlook / crm, rule, outlook newer?) → (merged, conflict?)
    (("a", "a", "a"), "crm-wins", False, "a", False),
    (("a", "b", "a"), "crm-wins", False, "b", False),  # only Outlook changed
    (("a", "a", "c"), "outlook-wins", False, "c", False),  # only the CRM changed
    (("a", "b", "b"), "crm-wins", False, "b", False),  # both to the same value: no conflict
    (("a", "b", "c"), "crm-wins", False, "c", True),
    (("a", "b", "c"), "outlook-wins", False, "b", True),
    (("a", "b", "c"), "newest", True, "b", True),
    (("a", "b", "c"), "newest", False, "c", True),
]


@pytest.mark.parametrize(("values", "rule", "newer", "merged", "conflict"), MERGE_CASES)
def test_three_way_merge_by_field(
    values: tuple[str, str, str], rule: str, newer: bool, merged: str, conflict: bool
) -> None:
    base, o, c = (replace(BOB, job_title=v) for v in values)
    result = cp.merge(base, replace(o, department="Sales"), c, rule=rule, outlook_newer=newer)
    assert result.fields.job_title == merged and result.fields.department == "Sales"
    assert result.conflicts == (("job_title",) if conflict else ())


def test_names_changed_on_both_sides_merge_without_a_display_name_conflict() -> None:
    base = cp.project(BOB, notes=False)
    o = cp.project(replace(BOB, surname="Smith", display_name=""), notes=False)
    c = cp.project(replace(BOB, given_name="Rob", display_name=""), notes=False)
    result = cp.merge(base, o, c, rule="crm-wins", outlook_newer=False)
    assert result.fields.display_name == "Rob Smith" and result.conflicts == ()


REUSE_CASES = [
    (ContactFields(given_name="Jane", surname="Rogers", emails=("jane@xyz",)), True),
    (
        ContactFields(given_name="Jane", surname="Rogers", emails=("bob@fabrikam.example",)),
        False,
    ),  # address kept
    (replace(BOB, emails=("bob@new.example",)), False),  # same name, new address
    (ContactFields(given_name="Jane", surname="Rogers"), False),  # no address left: not a new person
]


@pytest.mark.parametrize(("now", "expected"), REUSE_CASES)
def test_reused_contact(now: ContactFields, expected: bool) -> None:
    assert cp.reused(cp.project(BOB, notes=False), cp.project(now, notes=False)) is expected


# -- plans -----------------------------------------------------------------------------------------


def test_first_sync_links_by_any_address_case_insensitively_and_creates_only_the_rest() -> None:
    result = plan(
        outlook=[
            outlook("o1", replace(BOB, emails=("other@x", "BOB@Fabrikam.example"))),
            outlook("o2", ContactFields(emails=("new@x",))),
        ],
        crm=[crm("p1", replace(BOB, company="Fabrikam")), crm("p2", ContactFields(emails=("carl@x",)))],
        crm_complete=True,
        outlook_complete=True,
    )
    assert summary(result) == [
        "pair crm:update outlook:update",
        "pair crm:create outlook:-",
        "pair crm:- outlook:create",
    ]
    linked = result.actions[0]
    assert isinstance(linked, cp.SyncPair) and linked.crm_ref == CrmRef("p1") and linked.outlook_id == "o1"
    assert linked.merged.company == "Fabrikam" and linked.changes_existing
    assert linked.merged.emails == ("bob@fabrikam.example", "other@x")  # both kept, the CRM's first


def test_a_contact_of_another_owner_is_never_linked() -> None:
    result = plan(outlook=[outlook()], candidates=[crm(owner="dan@contoso.com")])
    assert summary(result) == ["pair crm:create outlook:-"]


def test_our_own_creations_are_recognised_after_a_crash() -> None:
    mine = crm("p9", ContactFields(emails=("x@y",)), key=cp.outlook_key(UPN, "o1"))
    stamped = outlook("o2", ContactFields(emails=("carl@x",)), tag="p2")
    result = plan(
        outlook=[outlook("o1", ContactFields(emails=("x@y",))), stamped],
        crm=[mine, crm("p2", ContactFields(emails=("carl@x",)))],
    )
    assert summary(result) == ["pair crm:- outlook:-", "pair crm:- outlook:-"]


def test_no_echo_of_our_own_writes() -> None:
    base = link()
    echoed = outlook(key="ck1")  # the change key we recorded after our write
    same_fields_new_key = outlook(key="ck9")  # e.g. a category changed: not a mapped field
    assert plan(links={"o1": base}, outlook=[echoed], crm=[crm()]).actions == []
    result = plan(links={"o1": base}, outlook=[same_fields_new_key], crm=[crm()])
    assert summary(result) == ["pair crm:- outlook:-"] and result.changes == 0


def test_edits_flow_one_way_per_direction() -> None:
    edited = outlook(fields=replace(BOB, job_title="Head Buyer"))
    crm_edit = crm(fields=replace(BOB, mobile_phone="+1"))
    two_way = plan(links={"o1": link()}, outlook=[edited], crm=[crm_edit])
    assert summary(two_way) == ["pair crm:update outlook:update"]
    pair = two_way.actions[0]
    assert (
        isinstance(pair, cp.SyncPair)
        and pair.merged.job_title == "Head Buyer"
        and pair.merged.mobile_phone == "+1"
    )
    assert two_way.conflicts == []
    mirror = plan(
        config=config(ContactsDirection="crm-to-outlook"),
        links={"o1": link()},
        outlook=[edited],
        crm=[crm_edit],
    )
    assert summary(mirror) == ["pair crm:- outlook:update"]
    upload = plan(
        config=config(ContactsDirection="outlook-to-crm"),
        links={"o1": link()},
        outlook=[edited],
        crm=[crm_edit],
    )
    assert summary(upload) == ["pair crm:update outlook:-"]


def test_a_conflict_follows_the_rule_and_is_reported() -> None:
    result = plan(
        links={"o1": link()},
        outlook=[outlook(fields=replace(BOB, job_title="O"))],
        crm=[crm(fields=replace(BOB, job_title="C"))],
    )
    assert result.conflicts == [cp.Conflict("p1", ("job_title",), "crm-wins", "crm")]
    pair = result.actions[0]
    assert isinstance(pair, cp.SyncPair) and pair.merged.job_title == "C" and pair.to_crm is None


DELETE_CASES = [
    # (outlook change, crm change, columns) → actions
    ("removed", None, {}, ["Unlink"]),
    ("removed", "removed", {}, ["ForgetLink"]),
    (None, "removed", {}, ["RemoveFromOutlook"]),
    ("edited", "removed", {}, ["RemoveFromOutlook"]),
]


@pytest.mark.parametrize(("o", "c", "columns", "expected"), DELETE_CASES)
def test_deletes(o: str | None, c: str | None, columns: dict[str, Any], expected: list[str]) -> None:
    o_change = {
        "removed": [OutlookContactRemoved("o1")],
        "edited": [outlook(fields=replace(BOB, job_title="X"))],
    }
    c_change = {"removed": [CrmContactRemoved(CrmRef("p1"), UPN)]}
    result = plan(
        config=config(**columns),
        links={"o1": link()},
        outlook=o_change.get(o or "", []),
        crm=c_change.get(c or "", []),
    )
    assert summary(result) == expected


def test_deleted_in_outlook_deletes_in_the_crm_only_when_configured() -> None:
    for setting, delete in ((False, False), (True, True)):
        result = plan(
            config=config(ContactsDeleteInCrm=setting),
            links={"o1": link()},
            outlook=[OutlookContactRemoved("o1")],
        )
        [unlink] = result.actions
        assert isinstance(unlink, cp.Unlink) and unlink.delete_in_crm is delete


def test_dropped_contacts_are_not_pushed_back_and_a_crm_removal_forgets_them() -> None:
    assert plan(crm=[crm()], dropped=frozenset({"p1"})).actions == []
    assert summary(plan(crm=[CrmContactRemoved(CrmRef("p1"), UPN)], dropped=frozenset({"p1"}))) == [
        "ForgetDropped"
    ]


def test_a_whole_round_finds_the_deletes_that_happened_while_the_token_was_lost() -> None:
    result = plan(
        links={"o1": link(), "o2": link("o2", "p2")},
        outlook=[outlook("o2", key="ck1")],
        outlook_complete=True,
    )
    assert summary(result) == ["Unlink"]


def test_a_reused_contact_becomes_a_new_crm_contact_and_the_old_is_dropped() -> None:
    jane = ContactFields(given_name="Jane", surname="Rogers", emails=("jane@xyz",))
    result = plan(
        links={"o1": link()}, outlook=[outlook(fields=jane)], crm=[crm(fields=replace(BOB, job_title="Z"))]
    )
    [pair] = result.actions
    assert isinstance(pair, cp.SyncPair) and pair.crm_ref is None and pair.drop == "p1"
    assert pair.crm_key == cp.outlook_key(UPN, "o1", "p1") and pair.merged.given_name == "Jane"


def test_a_big_crm_contact_is_an_issue_until_it_fits() -> None:
    big = crm(fields=replace(BOB, emails=tuple(f"b{n}@x" for n in range(4))))
    assert list(plan(crm=[big]).issues) == ["contact:p1"]
    assert plan(crm=[crm()]).resolved == ["contact:p1"]


BRAKE_CASES = [
    # (planned, threshold, held, approved) → applies
    (10, 10, None, None, True),
    (11, 10, None, None, False),
    (15, 10, Held(WHEN, 15), WHEN + timedelta(minutes=1), True),
    (25, 10, Held(WHEN, 15), WHEN + timedelta(minutes=1), True),
    (26, 10, Held(WHEN, 15), WHEN + timedelta(minutes=1), False),
    (
        15,
        10,
        Held(WHEN, 15),
        WHEN - timedelta(minutes=1),
        False,
    ),  # approved earlier
    (1, 0, None, None, False),
]


@pytest.mark.parametrize(("planned", "threshold", "held", "approved", "applies"), BRAKE_CASES)
def test_brake(
    planned: int, threshold: int, held: Held | None, approved: datetime | None, applies: bool
) -> None:
    assert cp.brake(planned, threshold, held, approved).apply is applies


def test_changes_count_deletes_and_updates_not_creations() -> None:
    result = plan(
        links={"o1": link(), "o2": link("o2", "p2")},
        outlook=[
            OutlookContactRemoved("o1"),
            outlook("o2", fields=replace(BOB, job_title="X")),
            outlook("o3", ContactFields(emails=("n@x",))),
        ],
        crm=[crm("p5", ContactFields(emails=("m@x",)))],
    )
    assert result.changes == 2 and len(result.actions) == 4
