"""`make demo`: the whole sync on this machine, against the local stack, with a generated tenant.

Starts Azurite, the Graph emulator (a generated tenant of a few users with two weeks of mail), the
reference CRM (or BottleCRM, or the Dataverse stand-in for Dynamics 365: `--crm`) and the Function
App in the local Functions host; enables the users; lets the app subscribe and sync them; prints
what landed in the CRM; then delivers a new mail and shows it arrive through Graph's notification,
the queue and the worker, with the delay. Stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from emulators.dataverse.launcher import DataverseStandIn
from emulators.graph.sample import generate
from emulators.localapp import TENANT_DOMAIN, LocalApp, local_app
from shared.state.tables import TableStateStore


def _say(text: str = "") -> None:
    print(text, flush=True)


def _tenant(users: int, days: int) -> dict[str, Any]:
    start = (datetime.now(UTC) - timedelta(days=days + 2)).date()  # threads end before today
    return generate(users=users, days=days, per_day=4, seed=7, domain=TENANT_DOMAIN, start=start)


def _externals(tenant: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(owner upn, address, name) of outside correspondents, each once."""
    seen: dict[str, tuple[str, str, str]] = {}
    for user in tenant["users"]:
        for message in user["messages"]:
            for field in ("from", "to", "cc"):
                value = message.get(field) or []
                for recipient in value if isinstance(value, list) else [value]:
                    address = recipient.get("emailAddress", recipient)
                    email = str(address.get("address", "")).lower()
                    if email and not email.endswith("@" + TENANT_DOMAIN) and email not in seen:
                        seen[email] = (user["userPrincipalName"], email, str(address.get("name", "")))
    return list(seen.values())


async def _until(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.2)
    return False


async def run(app: LocalApp, tenant: dict[str, Any]) -> None:
    upns = [u["userPrincipalName"] for u in tenant["users"]]
    if isinstance(app.crm, DataverseStandIn):  # owners are Dynamics 365 users (systemusers)
        for upn in upns:
            app.crm.add_user(upn)
    people = _externals(tenant)
    for owner, email, name in people[::2]:  # half of the outside correspondents are CRM people
        app.crm.add_person(email, name=name, owner=owner)
    _say(f"CRM: {len(people[::2])} people known (of {len(people)} outside correspondents)")

    state = TableStateStore.from_connection_string(app.settings["AzureWebJobsStorage"])
    await state.ensure_tables()
    try:
        for upn in upns:  # what `crmsync users add UPN` does
            await state.put_config(upn, {"Enabled": True, "MailFolders": "inbox,sentitems", "DaysBack": 14})
        _say(f"Enabled {len(upns)} users in SyncUsers: {', '.join(upns)}")

        started = time.monotonic()
        await app.host.fire_async("subscription_upkeep")
        count = len(await state.list_subscriptions())
        _say(f"Graph subscriptions created: {count} (each validated against the webhook)")
        await app.host.fire_async("sync_sweep")

        async def all_caught_up() -> bool:
            for upn in upns:
                cursors = await state.list_cursors(upn)
                if len(cursors) < 2 or any(c.link_kind != "delta" for c in cursors.values()):
                    return False
            return True

        if not await _until(all_caught_up, 180):
            raise SystemExit("the first sync did not finish within 3 minutes")
        _say(f"First sync of {len(upns)} mailboxes done in {time.monotonic() - started:.1f} s\n")
        _show(app)

        upn = upns[0]
        owner, email, name = next(p for p in people[::2] if p[0] == upn)
        key = f"<demo-{int(time.time())}@{email.split('@')[1]}>"
        _say(f"\nA new mail from {name} <{email}> arrives in {upn}'s Inbox ...")
        delivered = time.monotonic()
        app.graph.control.deliver(
            upn,
            {"from": {"address": email, "name": name}, "to": [{"address": upn}], "internetMessageId": key,
             "subject": "Can we meet on Friday?", "bodyHtml": "<p>Shall we go over the proposal?</p>"},
        )  # fmt: skip

        async def arrived() -> bool:
            return any(j["key"] == key for j in app.crm.journals())

        if not await _until(arrived, 30):
            raise SystemExit("the new mail did not reach the CRM within 30 s")
        _say(f"... and is a CRM journal {time.monotonic() - delivered:.2f} s later "
             "(Graph notification → webhook → queue → worker → CRM)")  # fmt: skip
        journal = next(j for j in app.crm.journals() if j["key"] == key)
        _say(
            json.dumps(
                {k: journal[k] for k in ("subject", "direction", "owner", "seenBy")}, ensure_ascii=False
            )
        )
        _say(f"linked to: {', '.join(p['name'] or p['email'] for p in journal['people'])}")
    finally:
        await state.aclose()


def _show(app: LocalApp) -> None:
    journals = app.crm.journals()
    linked = sum(1 for j in journals if j["people"])
    _say(f"What landed in the CRM: {len(journals)} journals, {linked} linked to CRM people")
    _say(f"{'received (UTC)':17} {'subject':34} {'from':32} linked people")
    for j in sorted(journals, key=lambda j: j.get("receivedAt") or "", reverse=True)[:12]:
        sender = (j.get("sender") or {}).get("address", "")
        names = ", ".join(p["name"] or p["email"] for p in j["people"]) or "-"
        _say(f"{str(j.get('receivedAt', ''))[:16]:17} {j['subject'][:33]:34} {sender[:31]:32} {names}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--crm", default="reference", choices=["reference", "bottlecrm", "dataverse"])
    parser.add_argument("--users", type=int, default=3)
    args = parser.parse_args()
    tenant = _tenant(args.users, 14)
    with tempfile.TemporaryDirectory(prefix="crmsync-demo-") as tmp:
        seed = Path(tmp) / "tenant.json"
        seed.write_text(json.dumps(tenant))
        _say(
            f"Starting the local stack: Azurite, Graph emulator, {args.crm} CRM, Function App (local host) …"
        )
        with local_app(logs=Path(tmp), crm_kind=args.crm, seed=seed) as app:
            _say(f"Graph emulator {app.graph.base_url} · CRM {app.crm.base_url} · app {app.host.base_url}")
            asyncio.run(run(app, tenant))
        _say("\nStopped everything the demo started.")


if __name__ == "__main__":
    main()
