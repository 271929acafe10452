"""Fixed runs of the engine model: the shortest histories that break an invariant if the engine gets
checkpoint order, crash recovery or Graph's move quirk wrong. Hypothesis explores around them
(`test_engine_model.py`); these pin them, so a regression fails on every run, not on a lucky one."""

from __future__ import annotations

import pytest

from tests.model.machine import Crash, with_world
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
