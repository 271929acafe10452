"""Kill a contacts sync at each checkpoint, re-run it, and compare both sides with a clean run's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from emulators.azurite import AzuriteStack
from emulators.crm.launcher import ReferenceCrm
from emulators.graph.launcher import GraphEmulator
from shared.crm.reference import ReferenceCrmConnector
from shared.graph.client import GraphCaller, build_graph_client
from shared.graph.contacts import GraphContacts
from shared.model import Job
from shared.state.memory import InMemoryJobQueue
from shared.state.tables import TableStateStore
from shared.sync.contacts import ContactsStream
from shared.sync.engine import Engine
from tests.integration.crash import CrashAt, SimulatedCrash
from tests.integration.stack import settings_for, unique_prefix

pytestmark = pytest.mark.integration
ANN = "ann@contoso.com"
CRM_PEOPLE = 6
OUTLOOK_ONLY = 3

# (which sync, what crashes, which method, which call, after the real call?)
CHECKPOINTS = [
    (1, "graph", "read_page", 1, True),  # after the delta was read, before anything was written
    (1, "crm", "upsert_contact", 2, True),  # the CRM created a contact, the answer was lost
    (1, "graph", "create", 1, True),  # Outlook created a contact, the link was never written
    (1, "graph", "create", 4, False),  # before an Outlook create
    (1, "state", "put_links", 5, True),  # after a link write
    (1, "state", "save_cursor", 2, False),  # every effect applied, the cursor not saved
    (2, "graph", "update", 1, True),  # an Outlook update applied, the link not updated
    (2, "crm", "upsert_contact", 1, True),  # a CRM update applied, the link not updated
    (2, "graph", "delete", 1, True),  # removed from Outlook, the link not forgotten
    (2, "state", "delete_link", 1, False),
]


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


_HTTP = httpx.Client(headers={"Authorization": "Bearer outlook"}, timeout=30)  # one TLS setup, not one a call


def _outlook(graph: GraphEmulator, method: str, path: str, body: Any = None) -> Any:
    response = _HTTP.request(method, f"{graph.base_url}{path}", json=body)
    response.raise_for_status()
    return response.json() if response.content else None


def _folder(graph: GraphEmulator) -> str:
    folders = _outlook(graph, "GET", f"/users/{ANN}/contactFolders?$top=100")["value"]
    return str(next(f["id"] for f in folders if f["displayName"] == "CRM Contacts"))


def _outlook_contacts(graph: GraphEmulator) -> list[dict[str, Any]]:
    return list(
        _outlook(graph, "GET", f"/users/{ANN}/contactFolders/{_folder(graph)}/contacts?$top=500")["value"]
    )


def _seed(graph: GraphEmulator, crm: ReferenceCrm) -> None:
    graph.control.reset(empty=True)
    crm.reset()
    graph.control.add_user(ANN)
    folder = _outlook(graph, "POST", f"/users/{ANN}/contactFolders", {"displayName": "CRM Contacts"})["id"]
    for n in range(CRM_PEOPLE):
        crm.add_person(
            f"p{n}@fabrikam.example", name=f"Person {n}", owner=ANN, givenName="Person", surname=str(n)
        )
    for n in range(OUTLOOK_ONLY):
        _outlook(
            graph,
            "POST",
            f"/users/{ANN}/contactFolders/{folder}/contacts",
            {"displayName": f"Outlook {n}", "emailAddresses": [{"address": f"o{n}@northwind.example"}]},
        )
    # one contact on both sides already (the first sync links it)
    _outlook(
        graph,
        "POST",
        f"/users/{ANN}/contactFolders/{folder}/contacts",
        {
            "displayName": "Person 0",
            "givenName": "Person",
            "surname": "0",
            "jobTitle": "Buyer",
            "emailAddresses": [{"address": "P0@fabrikam.example"}],
        },
    )


def _mutate(graph: GraphEmulator, crm: ReferenceCrm) -> None:
    """Changes on both sides between the first and the second sync."""
    outlook = {c["emailAddresses"][0]["address"].lower(): c for c in _outlook_contacts(graph)}
    people = {p["emails"][0]: p["id"] for p in crm.contacts(ANN)}
    _outlook(
        graph,
        "PATCH",
        f"/users/{ANN}/contacts/{outlook['p1@fabrikam.example']['id']}",
        {"department": "Sales"},
    )
    _outlook(graph, "DELETE", f"/users/{ANN}/contacts/{outlook['o0@northwind.example']['id']}")
    crm.update_person(people["p2@fabrikam.example"], jobTitle="Manager")
    crm.update_person(people["p1@fabrikam.example"], mobilePhone="+1 555 0101")
    crm.delete_person(people["p3@fabrikam.example"])
    crm.add_person("late@fabrikam.example", name="Late Comer", owner=ANN)


def _state(graph: GraphEmulator, crm: ReferenceCrm) -> dict[str, Any]:
    keep = ("displayName", "givenName", "surname", "jobTitle", "department", "mobilePhone", "companyName")
    outlook = sorted(
        (tuple(a["address"].lower() for a in c["emailAddresses"]), *(c.get(k) or "" for k in keep))
        for c in _outlook_contacts(graph)
    )
    fields = ("displayName", "givenName", "surname", "jobTitle", "department", "mobilePhone", "company")
    people = sorted(
        (tuple(e.lower() for e in p["emails"]), *(p.get(k) or "" for k in fields)) for p in crm.contacts(ANN)
    )
    return {"outlook": outlook, "crm": people}


async def _scenario(
    azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm, crash: tuple | None
) -> dict[str, Any]:
    _seed(graph, crm_server)
    settings = settings_for(azurite_stack, graph, crm_server)
    clock = Clock()
    state = TableStateStore.from_connection_string(
        settings.storage_connection_string, clock=clock, table_prefix=unique_prefix()
    )
    await state.ensure_tables()
    await state.put_config(ANN, {"Enabled": True, "Mail": False, "Contacts": True})
    crm = ReferenceCrmConnector(crm_server.base_url, crm_server.token)
    outlook = GraphContacts(build_graph_client(settings), GraphCaller())

    def engine(parts: dict[str, Any]) -> Engine:
        stream = ContactsStream(parts["state"], parts["crm"], parts["graph"])
        return Engine(parts["state"], InMemoryJobQueue(), {"contacts": stream}, clock=clock)

    clean = {"state": state, "crm": crm, "graph": outlook}
    try:
        for phase in (1, 2):
            if phase == 2:
                _mutate(graph, crm_server)
            if crash is not None and crash[0] == phase:
                _, target, method, nth, after = crash
                parts = dict(clean)
                parts[target] = CrashAt(parts[target], method, nth, after=after)
                with pytest.raises(SimulatedCrash):
                    await engine(parts).run_job(Job(ANN, "contacts"))
                clock.now += timedelta(minutes=10)  # the dead worker's lease expires
            outcome = await engine(clean).run_job(Job(ANN, "contacts"))
            assert outcome.status == "done", outcome
        return _state(graph, crm_server)
    finally:
        await crm.aclose()
        await state.aclose()


@pytest.fixture(scope="module")
async def clean_run(
    azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm
) -> dict[str, Any]:
    return await _scenario(azurite_stack, graph, crm_server, None)


def test_the_clean_run_is_what_the_user_expects(clean_run: dict[str, Any]) -> None:
    outlook = [c[0] for c in clean_run["outlook"]]
    expected = {("late@fabrikam.example",), ("o1@northwind.example",), ("o2@northwind.example",)}
    expected |= {(f"p{n}@fabrikam.example",) for n in (0, 1, 2, 4, 5)}
    assert set(outlook) == expected and len(outlook) == len(expected)
    crm = [c[0] for c in clean_run["crm"]]  # o0 was deleted in Outlook: unlinked, kept in the CRM
    assert set(crm) == expected | {("o0@northwind.example",)} and len(crm) == len(expected) + 1
    by_address = {c[0][0]: c for c in clean_run["outlook"]}
    assert by_address["p1@fabrikam.example"][5:7] == ("Sales", "+1 555 0101")  # merged from both sides
    assert by_address["p0@fabrikam.example"][4] == "Buyer"


@pytest.mark.parametrize(
    "crash",
    CHECKPOINTS,
    ids=[f"sync{c[0]}.{c[1]}.{c[2]}#{c[3]}{'-after' if c[4] else ''}" for c in CHECKPOINTS],
)
async def test_killed_at_a_checkpoint_and_rerun_equals_a_clean_run(
    crash: tuple, clean_run: dict[str, Any], azurite_stack: AzuriteStack, graph: GraphEmulator,
    crm_server: ReferenceCrm,
) -> None:  # fmt: skip
    assert await _scenario(azurite_stack, graph, crm_server, crash) == clean_run
