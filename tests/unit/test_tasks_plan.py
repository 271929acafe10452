"""The tasks plan's rules, one by one (pure: no I/O)."""

from __future__ import annotations

from datetime import date

from shared.model import (
    CrmRef,
    CrmTask,
    CrmTaskRemoved,
    Link,
    OutlookTask,
    OutlookTaskRemoved,
    TaskFields,
    TaskLink,
    TaskStatus,
    UserConfig,
)
from shared.sync import tasks_plan as tp

ANN = "ann@contoso.com"
CONFIG = UserConfig(upn=ANN, enabled=True, tasks=True)


def crm(task_id: str, title: str, **fields: object) -> CrmTask:
    return CrmTask(CrmRef(task_id, "1"), ANN, TaskFields(title=title, **fields))  # type: ignore[arg-type]


def todo(task_id: str, title: str, etag: str = "e1", **fields: object) -> OutlookTask:
    return OutlookTask(task_id, etag, TaskFields(title=title, **fields))  # type: ignore[arg-type]


def linked(oid: str, crm_id: str, base: TaskFields, etag: str = "e1") -> Link:
    return Link(
        ANN, "tasks", oid, crm_key=crm_id, change_key=etag, local_fingerprint=tp.print_of(base),
        crm_fingerprint=tp.print_of(base), task=TaskLink(base=base),
    )  # fmt: skip


def plan(**inputs: object) -> tp.Plan:
    return tp.plan(tp.Inputs(**{"config": CONFIG, "links": {}, "dropped": frozenset(), **inputs}))  # type: ignore[arg-type]


def test_same_title_and_due_date_link_instead_of_duplicating() -> None:
    due = date(2024, 6, 3)
    result = plan(
        outlook=[todo("o1", "Call Bob", due=due)],
        crm=[crm("t1", "call bob", due=due, body="renewal"), crm("t2", "Call Bob", due=date(2024, 6, 4))],
        crm_complete=True, outlook_complete=True,
    )  # fmt: skip
    pairs = [a for a in result.actions if isinstance(a, tp.SyncPair)]
    assert [(a.outlook_id, a.crm_ref.id if a.crm_ref else "") for a in pairs] == [("o1", "t1"), ("", "t2")]
    assert pairs[0].to_outlook is not None and pairs[0].to_outlook.body == "renewal"
    assert result.changes == 0  # first links and creations do not count toward the brake


def test_a_completed_crm_task_is_not_brought_into_to_do() -> None:
    result = plan(
        outlook=[], crm=[crm("t1", "Done long ago", status=TaskStatus.COMPLETED)], crm_complete=True
    )
    assert result.actions == []


def test_our_own_write_read_back_changes_nothing() -> None:
    base = TaskFields(title="Call Bob", due=date(2024, 6, 3))
    result = plan(
        links={"o1": linked("o1", "t1", base)},
        outlook=[OutlookTask("o1", "e2", base)],
        crm=[CrmTask(CrmRef("t1", "2"), ANN, base)],
    )
    assert all(
        a.to_crm is None and a.to_outlook is None for a in result.actions if isinstance(a, tp.SyncPair)
    )


def test_a_field_edited_on_both_sides_follows_the_rule_and_is_a_conflict() -> None:
    base = TaskFields(title="Call Bob", due=date(2024, 6, 3))
    result = plan(
        links={"o1": linked("o1", "t1", base)},
        outlook=[todo("o1", "Call Bob", etag="e2", due=date(2024, 6, 10), body="todo")],
        crm=[crm("t1", "Call Bob", due=date(2024, 6, 20))],
    )
    [pair] = [a for a in result.actions if isinstance(a, tp.SyncPair)]
    assert (pair.merged.due, pair.merged.body) == (date(2024, 6, 20), "todo")  # crm-wins; one side each
    assert [c.fields for c in result.conflicts] == [("due",)]
    assert result.changes == 1


def test_a_to_do_delete_unlinks_and_a_crm_delete_removes_from_to_do() -> None:
    base = TaskFields(title="A")
    result = plan(
        links={"o1": linked("o1", "t1", base), "o2": linked("o2", "t2", base)},
        outlook=[OutlookTaskRemoved("o1")],
        crm=[CrmTaskRemoved(CrmRef("t2"), ANN)],
    )
    kinds = {type(a).__name__: a for a in result.actions}
    assert kinds["Unlink"].outlook_id == "o1" and not kinds["Unlink"].delete_in_crm
    assert kinds["RemoveFromOutlook"].outlook_id == "o2"
    assert result.changes == 2


def test_a_completed_recurring_occurrence_takes_the_link_and_the_series_becomes_a_new_crm_task() -> None:
    base = TaskFields(title="Weekly report", due=date(2024, 6, 3))
    series = OutlookTask("o1", "e2", TaskFields(title="Weekly report", due=date(2024, 6, 10)), recurring=True)
    done = todo(
        "o2", "Weekly report", due=date(2024, 6, 3), status=TaskStatus.COMPLETED, completed=date(2024, 6, 3)
    )
    result = plan(links={"o1": linked("o1", "t1", base)}, outlook=[series, done], crm=[])
    pairs = {a.outlook_id: a for a in result.actions if isinstance(a, tp.SyncPair)}
    assert pairs["o2"].crm_ref == CrmRef("t1") and pairs["o2"].to_crm is not None
    assert pairs["o2"].to_crm.status == TaskStatus.COMPLETED
    assert pairs["o1"].crm_ref is None and pairs["o1"].to_crm == series.fields  # the next occurrence
    assert len(pairs) == 2  # the completed occurrence is not also made a CRM task of its own


def test_fields_the_crm_does_not_hold_stay_to_do_s() -> None:
    base = TaskFields(title="A", categories=("Red",))
    result = plan(
        links={"o1": linked("o1", "t1", base)},
        outlook=[],
        crm=[crm("t1", "A2")],  # no categories: this CRM does not hold them
        crm_fields=frozenset({"title", "body", "due", "importance", "status"}),
    )
    [pair] = [a for a in result.actions if isinstance(a, tp.SyncPair)]
    assert pair.merged == TaskFields(title="A2", categories=("Red",))
