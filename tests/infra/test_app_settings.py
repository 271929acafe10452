"""The Function App's app settings in Bicep are exactly the settings the code reads
(`shared.config.SETTINGS`, read at test time so drift fails here), plus an explicit allow-list of the
Functions platform's own settings, minus the settings of Graph auth modes production does not use."""

from __future__ import annotations

import importlib
import json
from typing import Any

from shared.config import SETTING_NAMES, Settings
from tests.infra.bicep_source import INFRA, ROOT, only, parse, resources_of_type, unquote

FUNCTION_APP = INFRA / "app" / "function-app.bicep"

# Settings the Functions platform reads, not our code. Anything else in the Bicep must be in SETTINGS.
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__credential": "the host's identity-based storage connection: use a managed identity",
    "AzureWebJobsStorage__blobServiceUri": "the host keeps keys, locks and timer state in blobs",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Entra-authenticated telemetry (local auth is off)",
}

# Settings the code reads that production leaves unset, with the reason. Production authenticates to
# Graph with workload identity federation (GRAPH_AUTH_MODE=workload-identity); the settings that
# only other auth modes read are absent, as is the connection-string form of storage.
NOT_SET_IN_AZURE = {
    "GRAPH_CLIENT_CERTIFICATE_PATH": "GRAPH_AUTH_MODE=certificate only",
    "GRAPH_CLIENT_SECRET": "GRAPH_AUTH_MODE=secret only",
    "GRAPH_STATIC_TOKEN": "GRAPH_AUTH_MODE=static-token only (loopback Graph emulator)",
    "DATAVERSE_STATIC_TOKEN": "DATAVERSE_AUTH_MODE=static-token only (loopback Dataverse stand-in)",
    "AzureWebJobsStorage": "a connection string (Azurite); Azure uses AzureWebJobsStorage__*",
    "ADMIN_KEY": "admins sign in with Entra ID in Azure (authsettingsV2); the admin key is for local runs",
    "WEBSITE_AUTH_ENABLED": "App Service sets it itself when authsettingsV2 turns authentication on",
}
PRODUCTION_AUTH_MODE = "workload-identity"


def _bicep_settings() -> dict[str, Any]:
    config = only(
        {
            name: r
            for name, r in resources_of_type(FUNCTION_APP, "Microsoft.Web/sites/config").items()
            if r.get("name") == "appsettings"  # a conditional resource nests its config one level down
        }
    )
    return {unquote(key): value for key, value in config["properties"].items()}


def test_bicep_sets_every_setting_the_code_reads() -> None:
    missing = SETTING_NAMES - set(NOT_SET_IN_AZURE) - set(_bicep_settings())
    assert not missing, (
        f"shared/config.py reads these but infra/app/function-app.bicep does not set them: {missing}"
    )


def test_bicep_sets_nothing_the_code_or_platform_does_not_read() -> None:
    extra = set(_bicep_settings()) - SETTING_NAMES - set(PLATFORM_SETTINGS)
    assert not extra, f"set in Bicep but read by neither shared/config.py nor the platform: {extra}"


def test_the_exception_lists_are_not_stale() -> None:
    settings = _bicep_settings()
    assert set(NOT_SET_IN_AZURE) <= SETTING_NAMES, set(NOT_SET_IN_AZURE) - SETTING_NAMES
    assert not set(NOT_SET_IN_AZURE) & set(settings), "listed as unset but the Bicep sets it"
    assert set(PLATFORM_SETTINGS) <= set(settings), set(PLATFORM_SETTINGS) - set(settings)
    assert not set(PLATFORM_SETTINGS) & SETTING_NAMES, "a platform setting the code reads belongs in SETTINGS"


def test_production_auth_mode_is_workload_identity() -> None:
    assert _bicep_settings()["GRAPH_AUTH_MODE"] == PRODUCTION_AUTH_MODE


def test_secrets_are_key_vault_references() -> None:
    settings = _bicep_settings()
    for name in ("CRM_API_TOKEN", "WEBHOOK_KEY", "LOG_HASH_KEY"):
        value = settings[name]
        assert isinstance(value, str), name
        assert value.startswith("@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName="), name


# Sample values standing in for the Bicep expressions (parameters, outputs) the parser cannot evaluate.
# Only values whose format the code checks need one here; anything else gets "x".
SAMPLES = {
    "GRAPH_BASE_URL": "https://graph.microsoft.com/v1.0",
    "CRM_CONNECTOR": "reference",
    "CRM_AUTH_SCHEME": "bearer",
    "CRM_BASE_URL": "https://crm.example.com/api",
    "DATAVERSE_URL": "https://contoso.crm.dynamics.com",
    "DATAVERSE_AUTH_MODE": "managed-identity",
    "JOURNAL_BODY_MAX_CHARS": "20000",
    "WEBHOOK_BASE_URL": "https://func-crmsync.azurewebsites.net/api",
    "AzureWebJobsStorage__tableServiceUri": "https://st.table.core.windows.net/",
    "AzureWebJobsStorage__queueServiceUri": "https://st.queue.core.windows.net/",
    "CONTACTS_SYNC": "false",
    "CALENDAR_SYNC": "true",
    "CALENDAR_WRITE_BACK": "false",
    "TASKS_SYNC": "false",
}


def test_the_settings_bicep_sets_pass_the_codes_validation() -> None:
    """Settings.from_env() accepts an environment with exactly the Bicep's names: nothing the chosen
    auth mode or the storage wiring needs is missing."""
    names = parse(FUNCTION_APP)
    references = set(names.get("parameters", {})) | set(names.get("variables", {}))
    env: dict[str, str] = {}
    for name, value in _bicep_settings().items():
        literal = isinstance(value, str) and "${" not in value and value not in references
        env[name] = value if literal else SAMPLES.get(name, "x")
    settings = Settings.from_env(env)
    assert settings.graph_auth_mode.value == PRODUCTION_AUTH_MODE
    assert settings.storage_connection_string == ""
    assert settings.table_service_uri and settings.queue_service_uri


def test_app_service_authentication_guards_everything_but_the_two_paths_graph_calls() -> None:
    """Entra sign-in in front of the admin API and status page; Graph's webhook paths excluded (Graph
    cannot sign in: they take the webhook function key). The paths are the webhook functions' routes
    under host.json's route prefix, so renaming a route without the Bicep fails here. (A FunctionApp
    indexes once, so function_app is imported anew.)"""
    [auth] = [
        r["config"]
        for r in resources_of_type(FUNCTION_APP, "Microsoft.Web/sites/config").values()
        if r.get("config", {}).get("name") == "authsettingsV2"
    ]
    http = json.loads((ROOT / "host.json").read_text())["extensions"].get("http", {})
    prefix = http.get("routePrefix", "api")  # the host's default
    routes = {
        binding["route"]
        for function in importlib.reload(importlib.import_module("function_app")).app.get_functions()
        if function.get_function_name() in ("graph_notifications", "graph_lifecycle")
        for binding in function.get_bindings_dict()["bindings"]
        if binding.get("type") == "httpTrigger"
    }
    properties = auth["properties"]
    assert properties["platform"]["enabled"] is True
    assert properties["globalValidation"]["requireAuthentication"] is True
    assert sorted(properties["globalValidation"]["excludedPaths"]) == sorted(f"/{prefix}/{r}" for r in routes)
    assert properties["identityProviders"]["azureActiveDirectory"]["enabled"] is True
    assert properties["login"]["tokenStore"]["enabled"] is False  # no tokens kept on the app's side
