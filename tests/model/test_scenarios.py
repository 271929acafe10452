"""Fixed runs of the engine model: the shortest histories that break an invariant if the engine gets
checkpoint order, crash recovery or Graph's move quirk wrong. Hypothesis explores around them
(`test_engine_model.py`); these pin them, so a regression fails on every run, not on a lucky one."""

from __future__ import annotations

import pytest

from tests.model.faults import encode
from tests.model.machine import Crash, with_world
from tests.model.pim import PHONES
from tests.model.pim import with_world as pim_world
from tests.model.world import ANN, DAN, TEMPLATES, MemoryWorld

Model = with_world(MemoryWorld)

GAPS: list[Crash] = [
    ("graph.read_page", 1, True),  # the page was read, nothing written
    ("crm.find_people", 1, True),
    ("state.get_keys", 1, False),
    ("crm.upsert_journals", 1, False),
    ("crm.upsert_journals", 1, True),  # the CRM applied the page's journals, the answer was lost
    ("state.put_keys", 1, False),
    ("state.put_keys", 1, True),
    ("state.record_decisions", 1, True),
    ("state.save_cursor", 1, False),
    ("state.save_cursor", 1, True),  # the cursor is saved, the lease is not renewed
    ("state.renew", 1, True),
    ("state.release", 1, False),
] + [("*", n, after) for n in range(1, 14) for after in (False, True)]  # every await of a first run


def run(steps: list[tuple[str, tuple]]) -> None:
    """Play the steps, checking the per-step invariants, then quiesce and check the end state."""
    model = Model()
    try:
        model.setup()
        for name, args in steps:
            getattr(model, name)(*args)
            model.journals_are_never_deleted_or_duplicated()
            model.cursors_never_go_backwards()
            model.checkpoints_follow_effects()
    except BaseException:
        model.loop.close()
        raise
    model.teardown()


@pytest.mark.parametrize("crash", GAPS, ids=[f"{c[0]}#{c[1]}{'-after' if c[2] else ''}" for c in GAPS if c])
def test_a_worker_killed_anywhere_in_a_round_loses_and_duplicates_nothing(crash: Crash) -> None:
    run([
        ("deliver", ((ANN, DAN), TEMPLATES[1], "inbox", True)),
        ("deliver", ((ANN,), TEMPLATES[0], "inbox", False)),
        ("deliver", ((ANN,), TEMPLATES[4], "archive", False)),
        ("worker_runs", (ANN, "mail:inbox", False, crash)),
        ("worker_runs", (DAN, "mail:inbox", False, crash)),
        ("worker_runs", (ANN, "mail:inbox", False, None)),
    ])  # fmt: skip


def test_mail_moved_away_and_back_between_two_rounds_is_journaled() -> None:
    run([
        ("worker_runs", (ANN, "mail:inbox", False, None)),
        ("deliver", ((ANN,), TEMPLATES[0], "inbox", False)),
        ("move_away_and_back", (0, "deleteditems")),
    ])  # fmt: skip


def test_a_crm_outage_during_a_round_is_retried_until_written() -> None:
    run([
        ("deliver", ((ANN,), TEMPLATES[0], "inbox", False)),
        ("deliver", ((ANN,), TEMPLATES[4], "inbox", False)),
        ("crm_fault", ("503", 4)),
        ("worker_runs", (ANN, "mail:inbox", False, None)),
        ("crm_fault", ("ambiguous", 1)),
        ("crm_fault", ("rejected", 1)),
        ("deliver", ((ANN,), TEMPLATES[1], "inbox", False)),
        ("worker_runs", (ANN, "mail:inbox", False, None)),
    ])  # fmt: skip


def test_an_expired_link_mid_round_and_on_the_stored_link_heal() -> None:
    run([
        ("deliver", ((ANN,), TEMPLATES[0], "inbox", False)),
        ("deliver", ((ANN,), TEMPLATES[1], "inbox", False)),
        ("deliver", ((ANN,), TEMPLATES[2], "inbox", False)),
        ("worker_runs", (ANN, "mail:inbox", False, ("state.save_cursor", 1, True))),
        ("expire_stored_links", (ANN,)),
        ("worker_runs", (ANN, "mail:inbox", False, None)),
        ("deliver", ((ANN,), TEMPLATES[4], "inbox", False)),
        ("graph_fault", ("410", 1)),
        ("worker_runs", (ANN, "mail:inbox", False, None)),
    ])  # fmt: skip


def test_throttling_requeues_and_the_queued_job_finishes() -> None:
    run([
        ("deliver", ((ANN,), TEMPLATES[0], "inbox", False)),
        ("graph_fault", ("429-long", 1)),
        ("notify", (ANN, "mail:inbox", 3, 2)),
        ("worker_takes_a_queued_job", (0, None)),
        ("time_passes", (400.0,)),
        ("graph_fault", ("429-missing", 2)),
        ("graph_fault", ("429-fractional", 1)),
        ("two_workers_one_job", (ANN, "mail:inbox")),
    ])  # fmt: skip


# -- contacts and calendar (tests/model/pim.py) -------------------------------------------------------

Pim = pim_world(MemoryWorld)
CAL_GAPS: list[Crash] = [
    ("graph.read_page", 1, True),
    ("crm.find_people", 1, True),
    ("state.get_key", 1, False),
    ("crm.upsert_appointment", 1, False),
    ("crm.upsert_appointment", 1, True),  # the CRM applied it, the answer was lost
    ("state.put_key", 1, False),  # found by the model: the appointment had no link yet
    ("state.put_key", 1, True),
    ("state.put_links", 1, True),
    ("state.put_links", 2, False),
    ("state.record_decisions", 1, True),
    ("state.save_cursor", 1, False),
    ("state.save_cursor", 1, True),
    ("crm.appointment_changes", 1, True),
    ("graph.create_event", 1, False),
    ("graph.create_event", 1, True),  # the push made the event, its links were never written
] + [("*", n, after) for n in range(1, 30, 2) for after in (False, True)]
CONTACT_GAPS: list[Crash] = [
    ("graph.read_page", 1, True),
    ("crm.contact_changes", 1, True),
    ("crm.upsert_contact", 1, False),
    ("crm.upsert_contact", 1, True),  # the CRM created it, the answer was lost
    ("graph.create", 1, False),
    ("graph.create", 1, True),  # Outlook created it, the link was never written
    ("graph.update", 1, True),
    ("graph.delete", 1, True),
    ("state.put_links", 1, False),
    ("state.put_links", 2, True),
    ("state.delete_link", 1, False),
    ("state.save_cursor", 1, False),
    ("state.save_cursor", 2, True),
] + [("*", n, after) for n in range(1, 30, 2) for after in (False, True)]


def run_pim(steps: list[tuple[str, tuple]], meetings: list[tuple] = (), contacts: list[tuple] = ()) -> None:  # type: ignore[assignment]
    model = Pim()
    try:
        model.setup(list(meetings), list(contacts))
        for name, args in steps:
            getattr(model, name)(*args)
            model.contacts_are_never_lost_or_duplicated()
            model.appointments_are_never_deleted_or_duplicated()
            model.cursors_never_go_backwards()
    except BaseException:
        model.loop.close()
        raise
    model.teardown()


def ids(gaps: list[Crash]) -> list[str]:
    return [f"{c[0]}#{c[1]}{'-after' if c[2] else ''}" for c in gaps if c]


@pytest.mark.parametrize("crash", CAL_GAPS, ids=ids(CAL_GAPS))
def test_a_calendar_worker_killed_anywhere_then_the_meetings_change_leaves_nothing_stale(
    crash: Crash,
) -> None:
    run_pim(
        [
            ("crm_makes_appointment", (2, 9)),
            ("worker_runs", (ANN, "calendar", False, crash)),
            ("worker_runs", (DAN, "calendar", False, crash)),
            ("organizer_deletes_meeting", (2,)),  # the single meeting
            ("organizer_moves_one_occurrence", (1, 1, 15)),  # the series of three
            ("organizer_deletes_one_occurrence", (1, 2)),
            ("crm_moves_or_cancels_appointment", (0, 3, 11, False)),
            ("worker_runs", (ANN, "calendar", False, None)),
        ],
        # the first two come first in the delta and are left alone: only the crashed run's page has them
        meetings=[(DAN, True, 4, 9, 0), (ANN, False, 5, 11, 2), (ANN, True, 1, 8, 0), (ANN, True, 2, 10, 3)],
    )


@pytest.mark.parametrize("crash", CONTACT_GAPS, ids=ids(CONTACT_GAPS))
def test_a_contacts_worker_killed_anywhere_loses_and_duplicates_no_contact(crash: Crash) -> None:
    run_pim(
        [
            ("worker_runs", (ANN, "contacts", False, crash)),
            ("outlook_edits_contact", (1, "job_title", "CFO")),
            ("crm_edits_contact", (2, "department", "Finance")),
            ("new_contact", (ANN, "crm", "Engineer", "Engineer", PHONES[1], "Sales")),
            ("worker_runs", (ANN, "contacts", False, crash)),
            ("worker_runs", (ANN, "contacts", False, None)),
        ],
        contacts=[(ANN, "crm"), (ANN, "outlook"), (ANN, "both")],
    )


def test_edits_of_one_field_on_both_sides_follow_the_conflict_rule() -> None:
    run_pim(
        [
            ("worker_runs", (ANN, "contacts", False, None)),
            ("outlook_edits_contact", (2, "job_title", "CFO")),  # P1, made in the CRM
            ("crm_edits_contact", (2, "job_title", "Engineer")),  # crm-wins: the CRM's title stays
            ("outlook_edits_contact", (2, "mobile_phone", PHONES[2])),  # Outlook's own field arrives
            ("worker_runs", (ANN, "contacts", False, None)),
        ],
        contacts=[(ANN, "crm")],
    )


def test_deleted_reassigned_and_deleted_in_the_crm_contacts_end_where_they_belong() -> None:
    run_pim(
        [
            ("worker_runs", (ANN, "contacts", False, None)),
            ("worker_runs", (DAN, "contacts", False, None)),
            ("outlook_deletes_contact", (2,)),  # P1: unlinked, kept in the CRM, not pushed back
            ("crm_edits_contact", (2, "department", "Finance")),
            ("crm_reassigns_contact", (3,)),  # P2 leaves Ann's folder for Dan's
            ("crm_deletes_contact", (4,)),  # P3 leaves Dan's folder
            ("worker_runs", (ANN, "contacts", False, None)),
        ],
        contacts=[(ANN, "crm"), (ANN, "outlook"), (DAN, "both")],
    )


def test_an_expired_link_and_throttling_on_both_streams_heal() -> None:
    run_pim(
        [
            ("worker_runs", (ANN, "contacts", False, ("state.save_cursor", 2, True))),
            ("worker_runs", (ANN, "calendar", False, None)),
            ("expire_stored_links", (ANN,)),
            ("outlook_deletes_contact", (1,)),
            ("organizer_deletes_meeting", (0,)),  # deleted in the gap: the fresh round must find it
            ("graph_fault", ("contacts", "429-long", 1)),
            ("graph_fault", ("calendar", "410", 1)),
            ("notify", (ANN, "contacts", 2, 1)),
            ("notify", (ANN, "calendar", 1, 0)),
            ("worker_takes_a_queued_job", (0, None)),
            ("time_passes", (400.0,)),
            ("graph_fault", ("calendar", "429-fractional", 2)),
            ("two_workers_one_job", (ANN, "calendar")),
            ("crm_fault", ("upsert_contact", "ambiguous", 1)),
            ("new_contact", (ANN, "outlook", "CFO", "CFO", PHONES[0], "Sales")),
            ("worker_runs", (ANN, "contacts", False, None)),
        ],
        meetings=[(ANN, False, 3, 9, 0)],
        contacts=[(ANN, "crm"), (ANN, "crm")],
    )


@pytest.mark.parametrize("crash", [("state.delete_link", 1, False), ("graph.delete", 1, True)])
def test_a_contact_removed_by_a_worker_that_died_comes_back_when_assigned_back(crash: Crash) -> None:
    """Found by the model: the engine's own delete (the CRM contact went to Dan) was taken for Ann's when
    the worker died before forgetting the link, so the contact stayed out of her folder for good."""
    run_pim(
        [
            ("worker_runs", (ANN, "contacts", False, None)),
            ("crm_reassigns_contact", (0,)),  # Bob goes to Dan
            ("worker_runs", (ANN, "contacts", False, crash)),  # removed from Ann's folder, then died
            ("crm_reassigns_contact", (0,)),  # Bob comes back to Ann
            ("worker_runs", (ANN, "contacts", False, None)),
        ]
    )


def test_an_attendee_leaving_a_meeting_whose_crm_person_was_deleted_is_written() -> None:
    """Found by the model: rewriting the appointment without the attendee's calendar was refused (the
    CRM person it linked was deleted meanwhile) on every run, so the job never finished."""
    run_pim(
        [
            ("worker_runs", (DAN, "calendar", False, None)),
            ("worker_runs", (ANN, "calendar", False, None)),
            ("crm_deletes_contact", (0,)),  # Bob, who attends
            ("attendee_removes_their_copy", (0,)),  # Ann removes her copy; Dan still holds the meeting
            ("worker_runs", (ANN, "calendar", False, None)),
        ],
        meetings=[(DAN, True, 3, 9, 0)],
    )


def test_an_attendee_whose_worker_died_while_re_keying_a_series_then_left_it_is_not_seen_by() -> None:
    """Found by the model: Dan's worker wrote the rescheduled occurrences' new keys and died before their
    link rows; Dan then removed his copy, and nothing took him off the new appointments."""
    run_pim(
        [
            ("sweep", ()),
            ("organizer_deletes_meeting", (0,)),
            ("organizer_deletes_meeting", (0,)),
            ("two_workers_one_job", (DAN, "calendar")),
            ("worker_takes_a_queued_job", (0, None)),
            ("worker_takes_a_queued_job", (0, None)),
            ("reschedule_meeting", (0, 1, 8)),  # the series, an hour earlier: new keys
            ("worker_takes_a_queued_job", (1, ("*", 12, False))),  # Dan's calendar
            ("attendee_removes_their_copy", (0,)),
        ],
        meetings=[(ANN, False, 1, 8, 0), (ANN, False, 1, 8, 0), (ANN, True, 1, 9, 2)],
    )


def test_a_series_moved_back_after_a_worker_died_while_re_keying_it_leaves_no_stale_occurrence() -> None:
    """Found by the model: the dead worker had written the new keys; the series moved back before the
    next run, which then found nothing stale and left those appointments live."""
    run_pim(
        [
            ("sweep", ()),
            ("two_workers_one_job", (ANN, "calendar")),
            ("reschedule_meeting", (0, 1, 9)),
            ("worker_takes_a_queued_job", (1, ("*", 12, False))),  # Ann's calendar
            ("reschedule_meeting", (0, 1, 8)),  # back where it was
        ],
        meetings=[(ANN, False, 1, 8, 2)],
    )


def test_a_rescheduled_series_whose_write_failed_and_was_retried_leaves_no_stale_occurrence() -> None:
    """Found by the model: the issue retry captured each occurrence alone under its new key and moved
    its link there, so the old keys were never withdrawn."""
    run_pim(
        [
            ("sweep", ()),
            ("worker_runs", (ANN, "calendar", False, None)),
            ("crm_fault", ("upsert_appointment", "503", 3)),
            ("reschedule_meeting", (0, 1, 8)),
            ("reschedule_meeting", (1, 1, 8)),
            ("worker_takes_a_queued_job", (1, None)),
        ],
        meetings=[(ANN, False, 1, 9, 0), (ANN, False, 1, 9, 2)],
    )


def test_a_contact_refused_by_the_crm_then_deleted_in_outlook_leaves_no_issue() -> None:
    """Found by the model: the retry of a refused write found the Outlook contact gone and kept the
    issue open for ever."""
    run_pim(
        [
            ("crm_fault", ("upsert_contact", "rejected", 1)),
            ("worker_runs", (ANN, "contacts", False, None)),
            ("outlook_deletes_contact", (2,)),  # P1, made in Outlook, never reached the CRM
            ("worker_runs", (ANN, "contacts", False, None)),
        ],
        contacts=[(ANN, "outlook")],
    )


@pytest.mark.parametrize(
    "cancel",
    [
        [
            ("crm_fault", ("cancel_appointment", "ambiguous", 1)),
            ("worker_runs", (ANN, "calendar", False, None)),
        ],
        [("worker_runs", (ANN, "calendar", False, ("crm.cancel_appointment", 1, True)))],
    ],
    ids=["cancel-applied-answer-lost", "worker-died-after-the-cancel"],
)
def test_a_series_moved_back_after_a_cancel_the_crm_applied_unseen_is_live_again(
    cancel: list[tuple[str, tuple]],
) -> None:
    """Found by reading the real-stack adapter (a CRM timeout there was a cancel applied after the
    connector gave up, which `ambiguous` and a crash after the call reproduce in memory): the moved
    series' old occurrences were cancelled in the CRM while their key rows still said live, so when the
    series moved back nothing wrote them again and they stayed cancelled."""
    run_pim(
        [
            ("worker_runs", (ANN, "calendar", False, None)),
            ("reschedule_meeting", (0, 2, 10)),  # new keys; the 9:00 occurrences are withdrawn
            *cancel,
            ("reschedule_meeting", (0, 2, 9)),  # back: the 9:00 keys are live again
        ],
        meetings=[(ANN, False, 2, 9, 2)],
    )


@pytest.mark.parametrize(
    "write",
    [
        [
            ("crm_fault", ("upsert_appointment", "ambiguous", 1)),
            ("worker_runs", (ANN, "calendar", False, None)),
        ],
        [("worker_runs", (ANN, "calendar", False, ("crm.upsert_appointment", 1, True)))],
    ],
    ids=["write-applied-answer-lost", "worker-died-after-the-write"],
)
def test_a_meeting_moved_back_after_a_write_the_crm_applied_unseen_has_its_times(
    write: list[tuple[str, tuple]],
) -> None:
    """Found by reading, after the cancel above: the CRM took the moved meeting's new times while its
    key row kept the old ones, so when the meeting moved back it looked unchanged and the CRM kept the
    times it had moved to."""
    run_pim(
        [
            ("worker_runs", (ANN, "calendar", False, None)),
            ("reschedule_meeting", (0, 3, 10)),
            *write,
            ("reschedule_meeting", (0, 2, 9)),  # back where it was
        ],
        meetings=[(ANN, False, 2, 9, 0)],
    )


@pytest.mark.parametrize(
    "write",
    [
        [("crm_fault", ("upsert_contact", "ambiguous", 1)), ("worker_runs", (ANN, "contacts", False, None))],
        [("worker_runs", (ANN, "contacts", False, ("crm.upsert_contact", 1, True)))],
    ],
    ids=["write-applied-answer-lost", "worker-died-after-the-write"],
)
def test_an_outlook_edit_undone_after_a_write_the_crm_applied_unseen_stays_undone(
    write: list[tuple[str, tuple]],
) -> None:
    """Found by reading, after the calendar's: the CRM took an Outlook edit while the link kept the
    old fingerprints; the user then edited the field back, Outlook looked unchanged, and the CRM's copy
    of the edit looked like a CRM edit, which came back to Outlook over the user's latest value."""
    run_pim(
        [
            ("worker_runs", (ANN, "contacts", False, None)),
            ("outlook_edits_contact", (2, "job_title", "CFO")),  # P1, made in Outlook as a Buyer
            *write,
            ("outlook_edits_contact", (2, "job_title", "Buyer")),  # back
        ],
        contacts=[(ANN, "outlook")],
    )


def test_a_crm_edit_undone_after_outlook_took_it_unseen_stays_undone() -> None:
    """The other way round: Outlook took a CRM edit and the worker died before the link; the CRM user
    then set the field back, and Outlook's copy of the edit looked like an Outlook edit."""
    run_pim(
        [
            ("worker_runs", (ANN, "contacts", False, None)),
            ("crm_edits_contact", (2, "job_title", "CFO")),  # P1, made in the CRM as Head of Buying
            ("worker_runs", (ANN, "contacts", False, ("graph.update", 1, True))),
            ("crm_edits_contact", (2, "job_title", "Head of Buying")),  # back
        ],
        contacts=[(ANN, "crm")],
    )


def test_a_crm_edit_set_back_while_outlook_edited_the_field_leaves_outlook_s_edit() -> None:
    """No fault: the CRM sets a field and sets it back (A → B → A) while the Outlook user edits it. The
    merge compares contents with what both sides last agreed (docs/streams/contacts.md §6), so the CRM
    looks unchanged and the Outlook edit stands; the model allows it (found by a deep hunt, which
    expected only the CRM's last write)."""
    run_pim(
        [
            ("two_workers_one_job", (ANN, "contacts")),
            ("crm_edits_contact", (2, "job_title", "Buyer")),  # P1, made in the CRM as Head of Buying
            ("outlook_edits_contact", (2, "job_title", "Buyer")),
            ("job_title_set_back", (2, "crm", 0)),  # the CRM back to Head of Buying
        ],
        contacts=[(ANN, "crm")],
    )


def test_a_crm_appointment_moved_back_after_the_push_updated_outlook_unseen_has_its_times() -> None:
    """The push's update reached Outlook and the worker died before the link; the CRM appointment then
    moved back, and the link still vouched for those times, so Outlook kept the moved ones."""
    run_pim(
        [
            ("crm_makes_appointment", (2, 9)),
            ("worker_runs", (ANN, "calendar", False, None)),
            ("crm_moves_or_cancels_appointment", (0, 3, 10, False)),
            ("worker_runs", (ANN, "calendar", False, ("graph.update_event", 1, True))),
            ("crm_moves_or_cancels_appointment", (0, 2, 9, False)),  # back
        ]
    )


def test_a_meeting_deleted_after_its_attendee_was_deleted_in_the_crm_is_cancelled() -> None:
    """Found on the real stack (`MODEL_REAL_STEPS=20`): the reference CRM checks an appointment's links
    on every write, its cancel included, so once Bob was deleted in the CRM the deleted meeting could
    never be cancelled: an error on every run and a stale live appointment. `InMemoryCrm` now refuses
    such a cancel too; the stream then writes it cancelled with the people the CRM still matches."""
    run_pim(
        [
            ("worker_runs", (ANN, "calendar", False, None)),
            ("crm_deletes_contact", (0,)),  # Bob, an attendee of every meeting
            ("organizer_deletes_meeting", (0,)),
        ],
        meetings=[(ANN, False, 2, 9, 0)],
    )


def test_cursor_positions_order_every_sync_state_of_each_fake() -> None:
    """Found by the deep mail hunt: the 12th mail sync state ("c") crashed `link_position`, which
    stripped "c" and "e" as if they were only the contacts' and calendar's prefixes."""
    world = MemoryWorld()
    for prefix in ("", "c", "e"):
        links = [encode({"s": f"{prefix}{n:x}", "b": 0, "p": 3, "h": -1, "o": 0}) for n in range(1, 300)]
        positions = [world.link_position(link) for link in links]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)


def test_a_series_whose_worker_died_before_linking_its_master_leaves_no_stale_occurrence() -> None:
    """Found by the deep in-memory hunt (also on main): the worker died after linking the occurrences
    and before the master; one occurrence then deleted (Graph says nothing) and the series deleted
    (its master's removal had no link to follow), and the hourly check only visited series whose
    master was linked, so the deleted occurrence stayed live in the CRM."""
    run_pim(
        [
            ("worker_runs", (DAN, "calendar", False, None)),
            ("create_meeting", (DAN, False, 1, 8, 2)),
            ("worker_runs", (DAN, "calendar", False, ("*", 12, False))),
            ("organizer_deletes_one_occurrence", (0, 0)),
            ("organizer_deletes_meeting", (0,)),
        ]
    )
