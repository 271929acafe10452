from __future__ import annotations

import pytest

from shared.config import SETTING_NAMES, DataverseAuthMode, GraphAuthMode, Settings
from shared.errors import ConfigError
from shared.users import Granted

LOCAL = {
    "GRAPH_BASE_URL": "http://127.0.0.1:8765/v1.0",
    "GRAPH_AUTH_MODE": "static-token",
    "GRAPH_STATIC_TOKEN": "local-token",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "CRM_BASE_URL": "http://127.0.0.1:9000",
}


def test_local_settings_are_accepted() -> None:
    settings = Settings.from_env(LOCAL | {"ORG_DOMAINS": " Contoso.com, fabrikam.com "})
    assert settings.graph_auth_mode is GraphAuthMode.STATIC_TOKEN
    assert settings.org_domains == ("contoso.com", "fabrikam.com")
    assert settings.journal_body_max_chars == 20000
    assert "local-token" not in repr(settings)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {"GRAPH_AUTH_MODE": "bogus", "CRM_CONNECTOR": "nope", "JOURNAL_BODY_MAX_CHARS": "x"}
        )
    text = str(caught.value)
    for name in ("GRAPH_AUTH_MODE", "CRM_CONNECTOR", "JOURNAL_BODY_MAX_CHARS", "CRM_BASE_URL", "storage"):
        assert name in text
    assert len(caught.value.problems) >= 5


def test_static_token_only_on_loopback() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        Settings.from_env(LOCAL | {"GRAPH_BASE_URL": "https://graph.microsoft.com/v1.0"})


def test_plain_http_graph_is_refused_off_loopback() -> None:
    with pytest.raises(ConfigError, match="http only on a loopback"):
        Settings.from_env(LOCAL | {"GRAPH_BASE_URL": "http://graph.example.com/v1.0"})


def test_workload_identity_needs_tenant_app_and_identity() -> None:
    env = {k: v for k, v in LOCAL.items() if k != "GRAPH_STATIC_TOKEN"}
    env |= {"GRAPH_BASE_URL": "https://graph.microsoft.com/v1.0", "GRAPH_AUTH_MODE": "workload-identity"}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert {p.split()[0] for p in caught.value.problems} == {
        "GRAPH_TENANT_ID",
        "GRAPH_CLIENT_ID",
        "AZURE_CLIENT_ID",
    }
    ok = Settings.from_env(env | {"GRAPH_TENANT_ID": "t", "GRAPH_CLIENT_ID": "c", "AZURE_CLIENT_ID": "m"})
    assert ok.graph_client_id == "c"


def test_identity_based_storage_is_enough() -> None:
    env = {k: v for k, v in LOCAL.items() if k != "AzureWebJobsStorage"}
    env |= {
        "AzureWebJobsStorage__tableServiceUri": "https://acct.table.core.windows.net",
        "AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net",
    }
    assert Settings.from_env(env).table_service_uri.startswith("https://acct.table")


def test_setting_names_are_unique() -> None:
    from shared.config import SETTINGS

    assert len(SETTING_NAMES) == len(SETTINGS)


def test_the_deployment_flags_say_which_streams_graph_permits() -> None:
    assert Settings.from_env(LOCAL).granted == Granted(), "unset (a local run): every permission"
    flags = {"CONTACTS_SYNC": "false", "CALENDAR_SYNC": "False", "CALENDAR_WRITE_BACK": "false"}
    assert Settings.from_env(LOCAL | flags).granted == Granted(False, False, False)
    # write-back holds Calendars.ReadWrite, which reads the calendar too
    write_back = flags | {"CALENDAR_WRITE_BACK": "true"}
    assert Settings.from_env(LOCAL | write_back).granted == Granted(False, True, True)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(LOCAL | {"CONTACTS_SYNC": "yes please"})
    assert "CONTACTS_SYNC must be true or false" in str(caught.value)


DATAVERSE = {
    **{k: v for k, v in LOCAL.items() if k != "CRM_BASE_URL"},
    "CRM_CONNECTOR": "dataverse",
    "DATAVERSE_URL": "https://contoso.crm4.dynamics.com/",
    "AZURE_CLIENT_ID": "identity",
}


def test_the_dataverse_connector_needs_its_environment_url_not_a_crm_base_url() -> None:
    settings = Settings.from_env(DATAVERSE)
    assert (settings.dataverse_url, settings.dataverse_auth_mode) == (
        "https://contoso.crm4.dynamics.com",
        DataverseAuthMode.MANAGED_IDENTITY,
    )
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**DATAVERSE, "DATAVERSE_URL": "http://contoso.crm4.dynamics.com/api/data/v9.2"})
    assert [p.split()[0] for p in caught.value.problems] == ["DATAVERSE_URL"]


def test_dataverse_identity_modes_need_their_settings_and_a_static_token_only_on_loopback() -> None:
    env = {**DATAVERSE, "DATAVERSE_AUTH_MODE": "workload-identity"}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert {p.split()[0] for p in caught.value.problems} == {"GRAPH_TENANT_ID", "DATAVERSE_CLIENT_ID"}
    static = {**DATAVERSE, "DATAVERSE_AUTH_MODE": "static-token", "DATAVERSE_STATIC_TOKEN": "t"}
    with pytest.raises(ConfigError, match="loopback"):
        Settings.from_env(static)
    local = Settings.from_env({**static, "DATAVERSE_URL": "https://127.0.0.1:8443"})
    assert local.dataverse_static_token == "t"
