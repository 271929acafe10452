from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared import admin
from shared.errors import UserConfigError
from shared.model import ContactsProgress, Cursor, Held, Job
from shared.state.memory import InMemoryJobQueue, InMemoryStateStore

ANN = "ann@contoso.com"
NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


async def test_approve_stamps_the_row_and_queues_the_contacts_job_only_when_a_run_is_held() -> None:
    state, queue = InMemoryStateStore(), InMemoryJobQueue()
    await state.put_config(ANN, {"Enabled": True, "Contacts": True})
    assert "nothing" in await admin.approve(state, queue, ANN, now=NOW)
    assert queue.receive() == []

    held = ContactsProgress(held=Held(NOW, 14))
    await state.save_cursor(ANN, "contacts", Cursor(contacts=held))
    assert "approved 14" in await admin.approve(state, queue, ANN, now=NOW)
    row = await state.get_user(ANN)
    assert row is not None and row.columns["ContactsApprovedUtc"] == NOW.isoformat()
    assert queue.receive() == [Job(ANN, "contacts", reason="manual")]


async def test_approve_an_unknown_user_is_an_error() -> None:
    with pytest.raises(UserConfigError):
        await admin.approve(InMemoryStateStore(), InMemoryJobQueue(), "nobody@contoso.com")
