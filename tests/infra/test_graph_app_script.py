"""scripts/graph-app.sh, run for real against a stand-in `az` (tests/infra/fake_az.py): the Graph app
registration is only ever the one recorded in GRAPH_CLIENT_ID, never one found by its display name,
which any tenant member can give an app of their own; a new registration gets a unique name."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.infra.bicep_source import ROOT

SCRIPT = ROOT / "scripts" / "graph-app.sh"
FAKE_AZ = Path(__file__).with_name("fake_az.py")
SQUATTED = {
    "appId": "someone-elses-app",
    "displayName": "Outlook CRM sync (prod)",  # the name the script used to look for
    "permissions": [],
    "federatedCredentials": [],
}


class Tenant:
    def __init__(self, tmp_path: Path) -> None:
        self.state_path = tmp_path / "az-state.json"
        self.bin = tmp_path / "bin"
        self.bin.mkdir(parents=True)
        (self.bin / "az").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_AZ}" "$@"\n')
        (self.bin / "az").chmod(0o755)
        self.state_path.write_text(
            json.dumps({"apps": {SQUATTED["appId"]: SQUATTED}, "sps": {}, "fail": {}, "calls": []})
        )

    @property
    def state(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.state_path.read_text())
        return loaded

    def run(self, command: str, **env: str) -> subprocess.CompletedProcess[str]:
        base = {
            "PATH": f"{self.bin}{os.pathsep}/usr/bin:/bin",  # no azd: the script takes the values below
            "FAKE_AZ_STATE": str(self.state_path),
            "AZURE_ENV_NAME": "prod",
            "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID": "mi-principal",
            "AZURE_TENANT_ID": "tenant-1",
            "CONTACTS_SYNC": "true",
        }
        return subprocess.run(
            ["bash", str(SCRIPT), command], env=base | env, capture_output=True, text=True, timeout=60
        )

    def looked_up_by_name(self) -> bool:
        return any(call[:3] == ["ad", "app", "list"] for call in self.state["calls"])


def test_create_without_a_recorded_id_makes_a_new_uniquely_named_app_and_ignores_the_squatter(
    tmp_path: Path,
) -> None:
    tenant = Tenant(tmp_path)
    result = tenant.run("create")
    assert result.returncode == 0, result.stderr
    apps = tenant.state["apps"]
    assert apps["someone-elses-app"] == SQUATTED, "the same-named app of someone else is left alone"
    [ours] = [a for id_, a in apps.items() if id_ != "someone-elses-app"]
    assert re.fullmatch(r"Outlook CRM sync \(prod\) [0-9a-f]{8}", ours["displayName"])
    assert ours["permissions"] == ["role-Mail.Read=Role", "role-Contacts.ReadWrite=Role"]
    assert [c["subject"] for c in ours["federatedCredentials"]] == ["mi-principal"]
    assert f"GRAPH_CLIENT_ID={ours['appId']}" in result.stdout
    assert not tenant.looked_up_by_name()
    # a second registration gets another name: the name identifies nothing
    again = Tenant(tmp_path / "again")
    again.run("create")
    [theirs] = [a for id_, a in again.state["apps"].items() if id_ != "someone-elses-app"]
    assert theirs["displayName"] != ours["displayName"]


def test_create_with_a_recorded_id_uses_that_app_and_creates_nothing(tmp_path: Path) -> None:
    tenant = Tenant(tmp_path)
    first = tenant.run("create")
    recorded = re.search(r"GRAPH_CLIENT_ID=(\S+)", first.stdout)
    assert recorded
    result = tenant.run("create", GRAPH_CLIENT_ID=recorded.group(1), CALENDAR_SYNC="true")
    assert result.returncode == 0, result.stderr
    apps = tenant.state["apps"]
    assert len(apps) == 2, "no new registration"
    assert "role-Calendars.Read=Role" in apps[recorded.group(1)]["permissions"]
    assert len(apps[recorded.group(1)]["federatedCredentials"]) == 1, "the credential is not added twice"
    assert not tenant.looked_up_by_name()


def test_a_recorded_id_that_does_not_resolve_stops_the_script(tmp_path: Path) -> None:
    tenant = Tenant(tmp_path)
    result = tenant.run("create", GRAPH_CLIENT_ID="deleted-app")
    assert result.returncode != 0
    assert len(tenant.state["apps"]) == 1, "not replaced by a new one, not looked up by name"
    assert not tenant.looked_up_by_name()


def test_show_and_grants_need_the_recorded_id(tmp_path: Path) -> None:
    tenant = Tenant(tmp_path)
    for command in ("show", "grant-tenant-wide", "revoke-tenant-wide"):
        result = tenant.run(command)
        assert result.returncode != 0
        assert "no GRAPH_CLIENT_ID recorded" in result.stderr
    assert not tenant.looked_up_by_name()
