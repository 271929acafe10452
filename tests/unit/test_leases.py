"""When an admin may take over a lease (`crmsync sync --take-over`): never while its holder may be alive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.leases import take_over_verdict
from shared.model import Lease

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
HOST = "worker-7"


def lease(holder: str, *, renewed_ago: float, expires_in: float = 240) -> Lease:
    return Lease(
        "ann@contoso.com",
        "mail:inbox",
        "owner-1",
        expires=NOW + timedelta(seconds=expires_in),
        holder=holder,
        renewed=NOW - timedelta(seconds=renewed_ago),
    )


@pytest.mark.parametrize(
    ("held", "alive", "allowed", "says"),
    [
        (None, set(), False, "free"),
        (lease("worker-7:4242", renewed_ago=300, expires_in=-1), set(), False, "free"),  # expired already
        (lease("worker-7:4242", renewed_ago=200), {4242}, False, "is alive"),  # a live process here
        (lease("worker-7:4242", renewed_ago=5), set(), True, "gone"),  # a dead process here, however fresh
        (lease("func-instance-2:88", renewed_ago=20), set(), False, "may be alive"),  # elsewhere, fresh
        (lease("func-instance-2:88", renewed_ago=90), set(), True, "gone"),  # elsewhere, stale
        (lease("", renewed_ago=90), set(), True, "not recorded"),  # written before holders were recorded
    ],
)
def test_a_lease_is_taken_over_only_from_a_holder_that_is_gone(
    held: Lease | None, alive: set[int], allowed: bool, says: str
) -> None:
    verdict = take_over_verdict(held, NOW, HOST, lambda pid: pid in alive)
    assert verdict.allowed is allowed and says in verdict.reason
