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


@pytest.mark.parametrize(
    "url",
    [
        "http://crm.example.com/api",  # the CRM token would travel in clear text
        "ftp://crm.example.com/api",
        "crm.example.com/api",
        "http://127.0.0.1.example.com",  # a name that only starts like a loopback address
        "http://10.0.0.5:8080",
    ],
)
def test_a_crm_url_must_be_https_off_loopback(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(LOCAL | {"CRM_BASE_URL": url})
    assert [p for p in caught.value.problems if p.startswith("CRM_BASE_URL")], caught.value.problems


@pytest.mark.parametrize(
    "url",
    ["https://crm.example.com/api", "http://127.0.0.1:9000", "http://localhost:5020", "http://[::1]:80"],
)
def test_a_crm_url_over_https_or_on_loopback_is_accepted(url: str) -> None:
    assert Settings.from_env(LOCAL | {"CRM_BASE_URL": url}).crm_base_url == url


def test_the_webhook_url_follows_the_same_rule() -> None:
    with pytest.raises(ConfigError, match="WEBHOOK_BASE_URL may use http only on a loopback"):
        Settings.from_env(LOCAL | {"WEBHOOK_BASE_URL": "http://func.example.com/api"})
    assert Settings.from_env(LOCAL | {"WEBHOOK_BASE_URL": "https://func.example.com/api"}).webhook_base_url


def test_the_admin_key_is_never_the_webhook_key_and_long_enough() -> None:
    key = "k" * 40
    with pytest.raises(ConfigError, match="ADMIN_KEY must not be the webhook key"):
        Settings.from_env(LOCAL | {"ADMIN_KEY": key, "WEBHOOK_KEY": key})
    with pytest.raises(ConfigError, match="ADMIN_KEY must be at least 32"):
        Settings.from_env(LOCAL | {"ADMIN_KEY": "short"})
    assert Settings.from_env(LOCAL | {"ADMIN_KEY": key, "WEBHOOK_KEY": "w" * 40}).admin_key == key


def test_easy_auth_is_on_only_when_app_service_says_so() -> None:
    assert Settings.from_env(LOCAL).easy_auth is False
    assert Settings.from_env(LOCAL | {"WEBSITE_AUTH_ENABLED": "True"}).easy_auth is True
    assert Settings.from_env(LOCAL | {"WEBSITE_AUTH_ENABLED": "False"}).easy_auth is False


def test_an_unresolved_key_vault_reference_is_no_log_hash_key() -> None:
    reference = "@Microsoft.KeyVault(VaultName=kv;SecretName=log-hash-key)"
    assert Settings.from_env(LOCAL | {"LOG_HASH_KEY": reference}).log_hash_key == ""
    assert Settings.from_env(LOCAL | {"LOG_HASH_KEY": "s" * 40}).log_hash_key == "s" * 40


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
