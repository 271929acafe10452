"""Taking over a lease whose holder is gone (a `crmsync sync` killed mid-run, a crashed worker).

A lease frees itself when it expires (5 minutes after its holder last renewed it). An admin who knows
the holder is dead need not wait: `crmsync sync --take-over` frees it at once, but never while the
holder could still be alive. On this host a process id answers that; for a holder elsewhere (a Function
App instance), a lease its holder renewed within the last `FRESH` is taken as alive, since a running job
renews its lease at every page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.errors import ConcurrencyError
from shared.model import Lease
from shared.ports.state import LeaseStore

FRESH = timedelta(minutes=1)


@dataclass(frozen=True)
class TakeOver:
    allowed: bool
    reason: str


def take_over_verdict(
    lease: Lease | None, now: datetime, host: str, alive: Callable[[int], bool]
) -> TakeOver:
    """Whether the lease may be freed now: `host` is this machine, `alive(pid)` says whether a process
    of this machine runs."""
    if lease is None or lease.expires <= now:
        return TakeOver(False, "the lease is free: nothing to take over")
    holder_host, _, pid = lease.holder.rpartition(":")
    if holder_host == host and pid.isdigit() and alive(int(pid)):
        return TakeOver(
            False, f"its holder, process {pid} on this host, is alive: let it finish or stop it first"
        )
    if holder_host != host and lease.renewed is not None and now - lease.renewed < FRESH:
        seconds = int((now - lease.renewed).total_seconds())
        return TakeOver(
            False,
            f"its holder {lease.holder or '(not recorded)'} renewed it {seconds} s ago and may be alive; "
            f"it frees itself at {lease.expires:%H:%M:%S} UTC",
        )
    return TakeOver(True, f"taken over from {lease.holder or 'a holder not recorded'}, which is gone")


async def take_over(
    leases: LeaseStore, user: str, stream: str, now: datetime, host: str, alive: Callable[[int], bool]
) -> TakeOver:
    """Free the user+stream's lease when `take_over_verdict` allows it."""
    lease = await leases.get_lease(user, stream)
    verdict = take_over_verdict(lease, now, host, alive)
    if verdict.allowed and lease is not None:
        try:
            await leases.break_lease(lease)
        except ConcurrencyError:
            return TakeOver(False, "the lease changed meanwhile: its holder is alive after all")
    return verdict
