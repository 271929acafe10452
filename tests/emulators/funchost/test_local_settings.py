"""`local.settings.example.json`: what `func start` (and this host) read for a local run."""

from __future__ import annotations

import json
from pathlib import Path

from emulators.funchost.config import load_local_settings
from shared.config import SETTING_NAMES, Settings

EXAMPLE = Path(__file__).resolve().parents[3] / "local.settings.example.json"


def test_the_example_names_every_app_setting_and_the_core_tools_ones() -> None:
    values = json.loads(EXAMPLE.read_text())["Values"]
    assert set(values) >= SETTING_NAMES
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values["AzureWebJobsFeatureFlags"] == "EnableWorkerIndexing"
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    unknown = set(values) - SETTING_NAMES - {
        "FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsFeatureFlags", "FUNCTIONS_MASTER_KEY", "FUNCTIONS_HOST_KEY",
        "FUNCTIONS_KEY_graph_notifications", "FUNCTIONS_KEY_graph_lifecycle",  # where WEBHOOK_KEY goes
    }  # fmt: skip
    assert not unknown


def test_the_example_is_a_valid_local_configuration() -> None:
    environ: dict[str, str] = {}
    load_local_settings(EXAMPLE, environ)
    settings = Settings.from_env(environ)
    assert settings.graph_base_url.startswith("http://127.0.0.1")
