"""BottleCRM timings: how long the local CRM takes to start (cache hit) and stop, and what the
connector's operations cost against it over loopback. Prints JSON.

    .venv/bin/python -m bench.bottlecrm [--rounds 20]

The first run on a machine also builds the cache (venv, migrated schema, cluster): that cold figure
is reported as `start_s` of that run. Operation figures are milliseconds (median, 95th percentile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from emulators.bottlecrm import bottlecrm
from shared.crm.bottlecrm import BottleCrmConnector
from shared.model import ContactFields, CrmContact, Direction, Journal, PersonRef


async def _timed(rounds: int, op: Callable[[int], Awaitable[object]]) -> dict[str, float]:
    samples = []
    for i in range(rounds):
        start = time.perf_counter()
        await op(i)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 1),
        "p95_ms": round(samples[max(0, int(len(samples) * 0.95) - 1)], 1),
    }


async def measure(base_url: str, token: str, rounds: int) -> dict[str, dict[str, float]]:
    crm = BottleCrmConnector(base_url, token, provision_owners=True)
    owner = "bench@example.com"
    run = uuid.uuid4().hex[:8]
    people: list[PersonRef] = []

    async def contact(i: int) -> None:
        email = f"b{i}-{run}@example.org"
        fields = ContactFields(given_name="Bench", surname=str(i), emails=(email,))
        ref = await crm.upsert_contact(CrmContact(ref=None, owner=owner, fields=fields, key=f"{run}-{i}"))
        people.append(PersonRef(ref.id, "contact", f"Bench {i}", email))

    def journal(i: int) -> Journal:
        return Journal(
            key=f"<{run}-{i}@bench>|{people[0].id}", subject=f"Bench {i}", body="x" * 2000,
            direction=Direction.INBOUND, sender=None, to=(), cc=(), sent_at=datetime.now(UTC),
            received_at=None, conversation_id="", attachments=(), owner=owner, seen_by=(owner,),
            people=(people[0],),
        )  # fmt: skip

    try:
        results = {"upsert_contact_new": await _timed(rounds, contact)}
        results["find_people_1"] = await _timed(rounds, lambda i: crm.find_people([people[i].email]))
        results["upsert_journal_new"] = await _timed(rounds, lambda i: crm.upsert_journal(journal(i)))
        results["upsert_journal_again"] = await _timed(rounds, lambda i: crm.upsert_journal(journal(i)))
        results["contact_changes_snapshot"] = await _timed(rounds, lambda i: crm.contact_changes(owner, None))
        return results
    finally:
        await crm.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    started = time.perf_counter()
    with bottlecrm() as server:
        start_s = time.perf_counter() - started
        ops = asyncio.run(measure(server.base_url, server.token, args.rounds))
        stopping = time.perf_counter()
    stop_s = time.perf_counter() - stopping
    print(
        json.dumps({"bottlecrm": {"start_s": round(start_s, 2), "stop_s": round(stop_s, 2), **ops}}, indent=2)
    )


if __name__ == "__main__":
    main()
