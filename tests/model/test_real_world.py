"""`RealWorld` injects the faults the model means: what `MemoryWorld` does, on the real stack."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from emulators.azurite import AzuriteStack
from emulators.crm.launcher import ReferenceCrm
from emulators.graph.launcher import GraphEmulator
from shared.errors import CrmRetryableError
from shared.model import Appointment
from tests.model.pim import with_world
from tests.model.real import RealWorld
from tests.model.world import ANN

pytestmark = pytest.mark.integration


def _answered(crm: ReferenceCrm) -> int:
    return sum(crm.stats()["byStatus"].values())


async def test_a_crm_timeout_is_never_applied_not_even_after_the_connector_gave_up(
    azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm
) -> None:
    """In the model a timed-out call wrote nothing ("ambiguous" is the fault that writes). A cancel
    the server applied once the connector had given up landed behind the next steps' writes, and
    cancelled a meeting that had come back meanwhile."""
    world = RealWorld(azurite_stack, graph, crm_server)
    await world.start()
    try:
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        meeting = Appointment(
            key="ical-timeout", subject="Visit", start=start, end=start + timedelta(hours=1),
            is_all_day=False, start_date=None, end_date=None, location="", organizer=None, attendees=(),
            online_meeting_url="", body="", owner=ANN, seen_by=(ANN,), people=(),
        )  # fmt: skip
        await world.crm.upsert_appointment(meeting)
        world.crm_fault_on("cancel_appointment", "timeout", 1)
        before = _answered(crm_server)
        with pytest.raises(CrmRetryableError):
            await world.crm.cancel_appointment(meeting.key)
        deadline = time.monotonic() + 30
        while _answered(crm_server) < before + 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the server answers both attempts after the connector gave up on them
        assert _answered(crm_server) >= before + 2
        assert [a.cancelled for a in world.appointments()] == [False]
    finally:
        await world.close()


def test_a_meeting_deleted_after_its_attendee_was_deleted_in_the_crm_is_cancelled_on_the_real_stack(
    azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm
) -> None:
    """The reference CRM refuses a cancel that links a deleted person (the cause of a random real-stack
    failure); `test_scenarios.py` pins the same history in memory, where `InMemoryCrm` now refuses too."""
    model = with_world(lambda: RealWorld(azurite_stack, graph, crm_server))()
    try:
        model.setup([(ANN, False, 2, 9, 0)], [])
        model.worker_runs(ANN, "calendar", False, None)
        model.crm_deletes_contact(0)  # Bob, an attendee of every meeting
        model.organizer_deletes_meeting(0)
    except BaseException:
        model.loop.close()
        raise
    model.teardown()
