"""`crmsync` and the contacts brake: a mass delete is held, status says review, approve lets it through."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from emulators.azurite import AzuriteStack
from emulators.crm.launcher import ReferenceCrm
from emulators.graph.launcher import GraphEmulator
from shared.cli import main
from tests.integration.stack import local_env

pytestmark = pytest.mark.integration
UPN = "contacts-cli@contoso.com"  # its own user: the CLI uses the unprefixed tables other tests share


@pytest.fixture
def crmsync(
    azurite_stack: AzuriteStack, graph: GraphEmulator, crm_server: ReferenceCrm
) -> Iterator[CliRunner]:
    graph.control.reset(empty=True)
    crm_server.reset()
    env = local_env(azurite_stack, graph, crm_server)
    runner = CliRunner(env=env)
    yield runner
    runner.invoke(main, ["users", "disable", UPN])


def run(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(main, list(args), catch_exceptions=False)


def test_a_held_mass_delete_is_approved_from_the_command_line(
    crmsync: CliRunner, graph: GraphEmulator, crm_server: ReferenceCrm
) -> None:
    graph.control.add_user(UPN)
    people = [crm_server.add_person(f"p{n}@fabrikam.example", name=f"P {n}", owner=UPN) for n in range(3)]
    assert (
        run(
            crmsync, "users", "add", UPN, "Mail=false", "Contacts=true", "ContactsChangeThreshold=1"
        ).exit_code
        == 0
    )
    assert run(crmsync, "resync", UPN).exit_code == 0  # a fresh start, whatever an earlier session left
    assert "nothing" in run(crmsync, "approve", UPN).output

    crm_server.delete_person(people[0])
    crm_server.delete_person(people[1])
    held = run(crmsync, "sync", UPN)
    assert held.exit_code == 1 and "contacts: review" in held.output
    assert f"{UPN}: review" in run(crmsync, "status", UPN).output

    approved = run(crmsync, "approve", UPN)
    assert approved.exit_code == 0 and "approved 2" in approved.output
    done = run(crmsync, "sync", UPN)
    assert done.exit_code == 0 and "contacts: done" in done.output
    assert f"{UPN}: ok" in run(crmsync, "status", UPN).output
