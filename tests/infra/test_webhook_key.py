"""scripts/ensure-webhook-key.sh, run for real against a stand-in `az` (tests/infra/fake_az.py) and a
stand-in `sleep` that records its waits: the webhook key becomes a function key of the two Graph
functions only, a leftover host key is deleted, the key API's early 404/400 answers are retried with
backoff, a failing key listing is never read as "no key", and the Key Vault references are refreshed
before the restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep_source import ROOT

SCRIPT = ROOT / "scripts" / "ensure-webhook-key.sh"
FAKE_AZ = Path(__file__).with_name("fake_az.py")
WEBHOOK_FUNCTIONS = ["graph_notifications", "graph_lifecycle"]
OTHER_FUNCTIONS = ["list_users", "force_sync", "approve_held", "check_user", "explain_message", "status"]


class Azure:
    def __init__(self, tmp_path: Path) -> None:
        self.state_path = tmp_path / "az-state.json"
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.sleeps = tmp_path / "sleeps"
        (self.bin / "az").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_AZ}" "$@"\n')
        (self.bin / "sleep").write_text(f'#!/bin/sh\necho "$1" >> "{self.sleeps}"\n')
        for tool in ("az", "sleep"):
            (self.bin / tool).chmod(0o755)
        self.save(
            {
                "secrets": {},
                "functions": WEBHOOK_FUNCTIONS + OTHER_FUNCTIONS,
                "function_keys": {},
                "host_keys": {"default": "the-default-host-key"},
                "fail": {},
                "calls": [],
                "refreshed": [],
                "restarts": 0,
            }
        )

    def save(self, state: dict[str, Any]) -> None:
        self.state_path.write_text(json.dumps(state))

    @property
    def state(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.state_path.read_text())
        return loaded

    def update(self, **changes: Any) -> None:
        self.save(self.state | changes)

    def run(self) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "FAKE_AZ_STATE": str(self.state_path),
            "AZURE_KEY_VAULT_NAME": "kv-test",
            "AZURE_FUNCTION_NAME": "func-test",
            "AZURE_RESOURCE_GROUP": "rg-test",
        }
        return subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)

    def waits(self) -> list[int]:
        return [int(line) for line in self.sleeps.read_text().split()] if self.sleeps.exists() else []


@pytest.fixture
def azure(tmp_path: Path) -> Azure:
    return Azure(tmp_path)


def test_first_deployment_sets_a_function_key_of_the_two_graph_functions_only(azure: Azure) -> None:
    azure.update(
        host_keys={"default": "the-default-host-key", "graph-webhook": "left-by-an-earlier-version"},
        fail={"functionapp function keys set": ["404", "404"], "functionapp function keys list": ["400"]},
    )
    result = azure.run()
    assert result.returncode == 0, result.stderr
    state = azure.state
    key = state["secrets"]["webhook-key"]
    assert len(key) == 64
    webhook_keys = {f: keys.get("graph-webhook") for f, keys in state["function_keys"].items()}
    assert webhook_keys == dict.fromkeys(WEBHOOK_FUNCTIONS, key)
    assert state["host_keys"] == {"default": "the-default-host-key"}, "the host key is gone, nothing else"
    assert azure.waits() == [5, 5, 10], "each failing call waits 5 s, then twice as long"
    assert state["restarts"] == 1
    assert state["refreshed"] == [
        "/subscriptions/s/resourceGroups/rg-test/providers/Microsoft.Web/sites/func-test"
        "/config/configreferences/appsettings/refresh?api-version=2022-03-01"
    ]
    calls = [" ".join(c[:3]) for c in state["calls"]]
    assert calls.index("rest --method post") < calls.index("functionapp restart -g"), "refresh, then restart"
    assert not any(c[:3] == ["functionapp", "keys", "set"] for c in state["calls"]), "never a host key"


def test_a_second_run_changes_nothing(azure: Azure) -> None:
    assert azure.run().returncode == 0
    before = azure.state
    result = azure.run()
    assert result.returncode == 0, result.stderr
    after = azure.state
    assert "webhook key: in place" in result.stdout
    assert after["secrets"] == before["secrets"] and after["function_keys"] == before["function_keys"]
    assert after["restarts"] == 1
    new_calls = after["calls"][len(before["calls"]) :]
    assert not any("set" in call or "restart" in call for call in new_calls), new_calls


def test_a_key_listing_that_keeps_failing_stops_the_script_and_sets_nothing(azure: Azure) -> None:
    azure.update(secrets={"webhook-key": "k" * 64}, fail={"functionapp function keys list": ["403"] * 20})
    result = azure.run()
    assert result.returncode != 0
    assert "AuthorizationFailed" in result.stderr
    assert "reading the keys of graph_notifications failed 7 times" in result.stderr
    assert azure.waits() == [5, 10, 20, 40, 80, 160]
    state = azure.state
    assert state["function_keys"] == {} and state["restarts"] == 0
    assert not any("set" in call for call in state["calls"]), "an error is never read as a missing key"


def test_a_key_vault_error_other_than_not_found_never_replaces_the_key(azure: Azure) -> None:
    azure.update(fail={"keyvault secret show": ["403"]})
    result = azure.run()
    assert result.returncode != 0
    assert "cannot read Key Vault" in result.stderr
    assert azure.state["secrets"] == {}
