"""Every Bicep file parses with a real Bicep parser, modules are pinned, and the resources carry the
hardening the issue asks for (checkov covers more in test_checkov.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from lark.exceptions import LarkError

from tests.infra.bicep_source import (
    EXTENSION_LINE,
    INFRA,
    ROOT,
    bicep_files,
    only,
    parse,
    resources_of_type,
    string_literals,
    tree_sitter_errors,
    unquote,
)

STATE_TABLES = {
    "SyncUsers",
    "SyncCursors",
    "SyncLeases",
    "SyncLinks",
    "SyncKeys",
    "SyncSubscriptions",
    "SyncIssues",
    "SyncDecisions",
}
QUEUES = {"sync-jobs", "sync-jobs-poison"}


def test_the_infra_folder_has_the_expected_files() -> None:
    names = {p.relative_to(INFRA).as_posix() for p in bicep_files()}
    assert {"main.bicep", "app/function-app.bicep", "app/storage.bicep", "app/rbac.bicep"} <= names


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_bicep_file_parses(path: Path) -> None:
    parsed = parse(path)
    assert parsed.get("resources") or parsed.get("modules"), f"{path.name} declares nothing"


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_bicep_file_parses_with_tree_sitter_too(path: Path) -> None:
    errors = tree_sitter_errors(path.read_bytes())
    unexpected = [(line, text) for line, text in errors if not EXTENSION_LINE.fullmatch(text.strip())]
    assert unexpected == []


BROKEN = "resource sa 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: 'x'\n  sku: {\n}\n"


def test_both_parsers_reject_broken_bicep(tmp_path: Path) -> None:
    broken = tmp_path / "broken.bicep"
    broken.write_text(BROKEN)
    with pytest.raises((LarkError, ValueError)):
        parse(broken)
    assert tree_sitter_errors(BROKEN.encode())


def _module_references() -> list[tuple[Path, str]]:
    refs: list[tuple[Path, str]] = []
    for path in bicep_files():
        for module in parse(path).get("modules", {}).values():
            detail = module["detail"]
            refs.append((path, detail.get("full") or detail["path"]))
    return refs


def test_registry_modules_are_avm_pinned_to_exact_versions() -> None:
    registry = [ref for _, ref in _module_references() if ref.startswith("public:")]
    assert registry, "expected Azure Verified Modules"
    for ref in registry:
        assert re.fullmatch(r"public:avm/(res|ptn|utl)/[a-z0-9/-]+:\d+\.\d+\.\d+", ref), ref


def test_local_modules_exist() -> None:
    local = [(path, ref) for path, ref in _module_references() if not ref.startswith("public:")]
    assert local
    for path, ref in local:
        assert (path.parent / ref).is_file(), f"{path.name} uses missing module {ref}"


def test_parameters_file_maps_only_declared_params_and_every_required_one() -> None:
    declared = parse(INFRA / "main.bicep")["parameters"]
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(mapped) <= set(declared), set(mapped) - set(declared)
    required = {name for name, p in declared.items() if "default" not in p}
    assert required <= set(mapped), required - set(mapped)


def test_python_version_is_declared_once_and_matches_the_project() -> None:
    main = parse(INFRA / "main.bicep")
    version = main["parameters"]["runtimeVersion"]["default"]
    assert version == "3.11"
    assert 'requires-python = ">=3.11,<3.12"' in (ROOT / "pyproject.toml").read_text()
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert f'python-version: "{version}"' in ci
    # the function module takes it as a parameter, never a literal
    site = only(resources_of_type(INFRA / "app" / "function-app.bicep", "Microsoft.Web/sites"))
    runtime = site["properties"]["functionAppConfig"]["runtime"]
    assert runtime == {"name": "python", "version": "runtimeVersion"}


def test_storage_is_entra_only_tls12_no_public_blobs_with_state_tables_and_queues() -> None:
    path = INFRA / "app" / "storage.bicep"
    props = only(resources_of_type(path, "Microsoft.Storage/storageAccounts"))["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    variables = parse(path)["variables"]
    assert set(variables["tableNames"]["value"]) == STATE_TABLES
    assert set(variables["queueNames"]["value"]) == QUEUES
    loops = {
        r["type"]: r["config"]["loop_type"]["detail"]["array_name"]
        for r in parse(path)["resources"].values()
        if r["type"].endswith(("/tables", "/queues"))
    }
    assert loops == {
        "Microsoft.Storage/storageAccounts/tableServices/tables": "tableNames",
        "Microsoft.Storage/storageAccounts/queueServices/queues": "queueNames",
    }
    assert resources_of_type(path, "Microsoft.Storage/storageAccounts/blobServices/containers")


def test_key_vault_uses_rbac_and_purge_protection() -> None:
    props = only(resources_of_type(INFRA / "app" / "key-vault.bicep", "Microsoft.KeyVault/vaults"))[
        "properties"
    ]
    assert props["enableRbacAuthorization"] is True
    assert props["enablePurgeProtection"] is True
    assert "accessPolicies" not in props


def test_monitoring_has_local_auth_off() -> None:
    workspace = only(
        resources_of_type(INFRA / "app" / "log-analytics.bicep", "Microsoft.OperationalInsights/workspaces")
    )
    assert workspace["properties"]["features"]["disableLocalAuth"] is True
    modules = parse(INFRA / "main.bicep")["modules"]
    insights = [m for m in modules.values() if m["detail"].get("path") == "avm/res/insights/component"]
    assert len(insights) == 1
    assert insights[0]["config"]["params"]["disableLocalAuth"] is True


def test_function_app_uses_the_managed_identity_everywhere_and_stays_warm() -> None:
    path = INFRA / "app" / "function-app.bicep"
    site = only(resources_of_type(path, "Microsoft.Web/sites"))
    assert site["identity"]["type"] == "UserAssigned"
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert props["keyVaultReferenceIdentity"] == "identityId"
    # Flex Consumption rejects siteConfig.ftpsState (ARM error 51021): FTP is off through the policy below
    assert "ftpsState" not in props["siteConfig"]
    config = props["functionAppConfig"]
    assert config["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    always_ready = config["scaleAndConcurrency"]["alwaysReady"]
    assert [a["name"] for a in always_ready] == ["http"]
    # the always-ready count is a parameter that cannot go below one
    main = parse(INFRA / "main.bicep")["parameters"]["alwaysReadyHttpInstances"]
    assert {"type": "min_value", "argument": 1} in main["decorators"]
    assert main["default"] >= 1
    policies = resources_of_type(path, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {p["name"]: p["properties"]["allow"] for p in policies.values()} == {"ftp": False, "scm": False}


def test_function_app_carries_the_azd_service_tag_of_azure_yaml() -> None:
    main = parse(INFRA / "main.bicep")
    service = main["variables"]["serviceName"]["value"]
    assert re.search(rf"^  {re.escape(service)}:\n    project: \.\n", (ROOT / "azure.yaml").read_text(), re.M)
    tags = main["modules"]["functionApp"]["config"]["params"]["tags"]
    assert "azd-service-name" in _object_keys(tags)


def _object_keys(value: object) -> set[str]:
    """Keys of every object literal inside a pycep expression (e.g. union(tags, {...}))."""
    keys: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            keys.add(unquote(key))
            keys |= _object_keys(inner)
    elif isinstance(value, list):
        for inner in value:
            keys |= _object_keys(inner)
    return keys


def test_every_role_assignment_lives_in_rbac_bicep_with_a_comment_naming_the_role() -> None:
    kind = "Microsoft.Authorization/roleAssignments"
    elsewhere = [p.name for p in bicep_files() if p.name != "rbac.bicep" and resources_of_type(p, kind)]
    assert elsewhere == []
    path = INFRA / "app" / "rbac.bicep"
    assignments = resources_of_type(path, kind)
    assert len(assignments) >= 5
    text = path.read_text()
    for name in assignments:
        declaration = re.search(rf"((?://[^\n]*\n)+)resource {name} '", text)
        assert declaration, f"{name} has no comment above it"
        comment = declaration.group(1)
        assert re.search(r"// (Storage|Monitoring|Key Vault) [A-Za-z ]+:", comment), f"{name}: {comment!r}"


# The no-hardcoded-env-urls rule's default host list (bicepconfig.json raises the rule to error and
# keeps the list). The rule reads every string, @description decorators included, so one such host
# name anywhere fails `bicep build` and with it `azd provision`.
CLOUD_SPECIFIC_HOSTS = (
    "gallery.azure.com",
    "management.core.windows.net",
    "management.azure.com",
    "database.windows.net",
    "core.windows.net",
    "login.microsoftonline.com",
    "graph.windows.net",
    "trafficmanager.net",
    "datalake.azure.net",
    "azuredatalakestore.net",
    "azuredatalakeanalytics.net",
    "vault.azure.net",
    "api.loganalytics.io",
    "asazure.windows.net",
    "region.asazure.windows.net",
    "batch.core.windows.net",
)


def _cloud_hosts_in_strings(source: bytes) -> list[tuple[int, str]]:
    return [
        (line, text)
        for line, text in string_literals(source)
        if any(h in text.lower() for h in CLOUD_SPECIFIC_HOSTS)
    ]


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: p.relative_to(INFRA).as_posix())
def test_no_string_names_a_cloud_specific_host(path: Path) -> None:
    assert _cloud_hosts_in_strings(path.read_bytes()) == []


def test_the_host_check_sees_decorators_outputs_and_interpolations() -> None:
    source = (
        b"@description('The vault URI (https://<name>.vault.azure.net/).')\n"
        b"output uri string = 'x'\n"
        b"var a = 'https://${name}.blob.core.windows.net/'\n"
        b"var b = 'https://graph.microsoft.com/v1.0'\n"
    )
    assert [line for line, _ in _cloud_hosts_in_strings(source)] == [1, 3]
    assert len(string_literals(source)) == 4


def test_the_maximum_instance_count_accepts_what_flex_consumption_accepts() -> None:
    decorators = parse(INFRA / "main.bicep")["parameters"]["maximumInstanceCount"]["decorators"]
    assert {"type": "min_value", "argument": 1} in decorators  # the platform's lowest is 1 now, not 40
    assert {"type": "max_value", "argument": 1000} in decorators


def test_outputs_of_a_conditional_module_are_read_with_the_non_null_assertion() -> None:
    text = (INFRA / "main.bicep").read_text()
    conditional = re.findall(r"^module (\w+) '[^']+' = if ", text, re.M)
    assert conditional == ["graphApp"]
    for name in conditional:
        assert f"{name}!.outputs." in text
        assert not re.search(rf"\b{name}\.outputs\.", text), f"{name}.outputs without !"


def test_the_permission_list_names_files_that_exist() -> None:
    comment = json.loads((INFRA / "graph-permissions.json").read_text())["$comment"]
    named = re.findall(r"(?:infra|scripts|tests)/[\w./-]+[\w-]", comment)
    assert "infra/app/graph-app.bicep" in named
    for name in named:
        assert (ROOT / name).exists(), name


def test_the_key_vault_name_takes_a_salt_only_when_one_is_set() -> None:
    main = parse(INFRA / "main.bicep")
    salt = main["parameters"]["keyVaultNameSalt"]
    assert salt["default"] == ""
    token = main["variables"]["keyVaultToken"]["value"]["operator"]["operands"]
    assert token["condition"] == {
        "function": {"type": "empty", "parameters": {"item_to_test": "keyVaultNameSalt"}}
    }
    assert token["true_value"] == "resourceToken", "no salt: the vault keeps its name"
    assert "keyVaultToken" in str(main["variables"]["keyVaultName"]["value"])
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert mapped["keyVaultNameSalt"] == {"value": "${KEY_VAULT_NAME_SALT}"}
    assert "KEY_VAULT_NAME_SALT" in (ROOT / "docs" / "deploy.md").read_text()


def test_the_graph_app_unique_name_cannot_be_guessed_before_it_exists() -> None:
    """A uniqueName made only of the subscription and environment could be registered first by any
    tenant member, and the deployment would then adopt that app. It must end in a secret suffix."""
    path = INFRA / "app" / "graph-app.bicep"
    suffix = parse(path)["parameters"]["uniqueNameSuffix"]
    assert {"type": "secure"} in suffix["decorators"]
    assert {"type": "min_length", "argument": 16} in suffix["decorators"]
    assert suffix["default"] is None  # required: no default
    app = only(resources_of_type(path, "Microsoft.Graph/applications"))
    assert app["uniqueName"] == "${uniqueNamePrefix}-${uniqueNameSuffix}"
    main = parse(INFRA / "main.bicep")
    assert {"type": "secure"} in main["parameters"]["graphAppNameSuffix"]["decorators"]
    assert (
        main["modules"]["graphApp"]["config"]["config"]["params"]["uniqueNameSuffix"] == "graphAppNameSuffix"
    )
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert mapped["graphAppNameSuffix"] == {"value": "${GRAPH_APP_NAME_SUFFIX}"}
