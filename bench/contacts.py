"""Contacts stream timings on the local stack (msgraph-sdk → Graph emulator, Azurite, reference CRM).
Prints JSON.

    .venv/bin/python -m bench.contacts [--contacts 300]

- first_sync: the CRM holds N contacts of the user, the owned folder does not exist yet: the run
  creates the folder and N Outlook contacts.
- echo_rerun: the next run reads back the N contacts the first one created (Outlook's delta reports
  our own writes) and the CRM feed, recognises them by changeKey and writes nothing.
- quiet_rerun: nothing changed at all: one empty delta page and an empty CRM feed.
- edits: N/10 contacts edited on each side: the run merges and writes them across.

Wall-clock seconds on this machine over loopback; Graph's and a CRM's real latencies are not in them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import httpx

from emulators.azurite import azurite
from emulators.crm.launcher import reference_crm
from emulators.graph.launcher import graph_emulator
from shared.crm.reference import ReferenceCrmConnector
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.contacts import GraphContacts
from shared.model import Job
from shared.state.memory import InMemoryJobQueue
from shared.state.tables import TableStateStore
from shared.sync.contacts import ContactsStream
from shared.sync.engine import Engine
from tests.integration.stack import settings_for, unique_prefix

ANN = "ann@contoso.com"


async def run(n: int) -> dict[str, Any]:
    with azurite() as az, graph_emulator() as graph, reference_crm() as crm_server:
        graph.control.add_user(ANN)
        ids = crm_server.add_people(
            [
                {
                    "kind": "contact",
                    "owner": ANN,
                    "displayName": f"Person {i}",
                    "emails": [f"p{i}@fabrikam.example"],
                }
                for i in range(n)
            ]
        )
        settings = settings_for(az, graph, crm_server)
        state = TableStateStore.from_connection_string(
            settings.storage_connection_string, table_prefix=unique_prefix()
        )
        await state.ensure_tables()
        await state.put_config(
            ANN, {"Enabled": True, "Mail": False, "Contacts": True, "ContactsChangeThreshold": n}
        )
        crm = ReferenceCrmConnector(crm_server.base_url, crm_server.token)
        stream = ContactsStream(state, crm, GraphContacts(build_graph_client(settings), GraphCaller()))
        engine = Engine(state, InMemoryJobQueue(), {"contacts": stream})
        figures: dict[str, Any] = {"contacts": n}

        async def timed(name: str) -> None:
            start = time.perf_counter()
            outcome = await engine.run_job(Job(ANN, "contacts"))
            assert outcome.status == "done", outcome
            figures[name] = {"seconds": round(time.perf_counter() - start, 3), "stats": dict(outcome.stats)}

        try:
            await timed("first_sync")
            await timed("echo_rerun")
            await timed("quiet_rerun")
            folder = (await state.get_cursor(ANN, "contacts")).contacts.folder_id
            with httpx.Client(headers={"Authorization": "Bearer outlook"}, timeout=30) as http:
                url = f"{graph.base_url}/users/{ANN}/contactFolders/{folder}/contacts?$top=1000"
                contacts = http.get(url).json()["value"]
                for contact in contacts[: n // 10]:
                    http.patch(
                        f"{graph.base_url}/users/{ANN}/contacts/{contact['id']}", json={"jobTitle": "Edited"}
                    )
            for person in ids[-(n // 10) :]:
                crm_server.update_person(person, department="Edited")
            await timed("edits")
        finally:
            await crm.aclose()
            await state.aclose()
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=300)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.contacts)), indent=2))


if __name__ == "__main__":
    main()
