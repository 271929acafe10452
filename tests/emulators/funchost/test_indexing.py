"""How the local host reads a FunctionApp, its routes and its configuration (pure)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import azure.functions as func
import pytest

from emulators.funchost.config import HostConfig, HostConfigError, Keys, load_local_settings
from emulators.funchost.indexing import BindingError, index, resolve
from emulators.funchost.invoke import encode_message
from emulators.funchost.routes import RouteError, RouteTemplate
from tests.emulators.funchost import sample_app

SETTINGS = {
    "WORK_QUEUE": "Work-Items",
    "TICK_QUEUE": "ticks",
    "TICK_SCHEDULE": "0 */5 * * * *",
    "SLOW_SCHEDULE": "0 0 * * * *",
}


def fresh_sample_app() -> func.FunctionApp:
    """A FunctionApp indexes once (`get_functions` refuses a second call), so each test imports anew."""
    return importlib.reload(sample_app).app


def test_the_sample_app_is_indexed_with_its_bindings() -> None:
    specs = {s.name: s for s in index(fresh_sample_app(), SETTINGS)}
    assert not [s.error for s in specs.values() if s.error]
    assert specs["hello"].kind == "http" and specs["hello"].auth_level == "anonymous"
    assert specs["hello"].methods == {"GET"}
    assert specs["echo"].auth_level == "function"  # the app's default level
    assert specs["rotate"].auth_level == "admin"
    assert specs["item"].route is not None and specs["item"].route.template == "items/{id:int}/{*rest}"
    assert specs["tick"].schedule is not None and specs["tick"].schedule.expression == "0 */5 * * * *"
    assert specs["tick"].return_binding == "queue"
    assert specs["startup_tick"].run_on_startup
    assert specs["work"].kind == "queue" and specs["work"].queue_name == "work-items"
    assert specs["work"].connection == "AzureWebJobsStorage"
    assert [(o.name, o.queue_name) for o in specs["enqueue"].queue_outputs] == [("out", "work-items")]


def test_an_unresolved_setting_disables_only_that_function() -> None:
    specs = {
        s.name: s
        for s in index(fresh_sample_app(), {k: v for k, v in SETTINGS.items() if k != "TICK_SCHEDULE"})
    }
    assert "%TICK_SCHEDULE%" in specs["tick"].error
    assert not specs["hello"].error


def test_unsupported_bindings_and_unbound_parameters_are_reported() -> None:
    app = func.FunctionApp()

    @app.route(route="r")
    @app.table_input(arg_name="rows", table_name="t", connection="AzureWebJobsStorage")
    def reads_table(req: func.HttpRequest, rows: str) -> str:
        return rows

    @app.route(route="s")
    def needs_more(req: func.HttpRequest, other: str) -> str:
        return other

    @app.timer_trigger(arg_name="t", schedule="0 0 0 30 2 * nonsense")
    def bad_schedule(t: func.TimerRequest) -> None:
        pass

    @app.timer_trigger(arg_name="t", schedule="0 0 0 30 2 *")
    def never_fires(t: func.TimerRequest) -> None:
        pass

    errors = {s.name: s.error for s in index(app, {})}
    assert "does not fire" in errors["never_fires"]
    assert "table binding" in errors["reads_table"]
    assert "'other' has no binding" in errors["needs_more"]
    assert "schedule" in errors["bad_schedule"]


def test_binding_expressions_resolve_from_settings() -> None:
    assert resolve("%A%-%B%", {"A": "x", "B": "y"}) == "x-y"
    with pytest.raises(BindingError):
        resolve("%MISSING%", {})


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("hello/{name}", "/hello/bob", {"name": "bob"}),
        ("hello/{name}", "/HELLO/bob/", {"name": "bob"}),
        ("hello/{name}", "/hello", None),
        ("hello/{name}", "/hello/bob/x", None),
        ("items/{id:int}", "/items/42", {"id": "42"}),
        ("items/{id:int}", "/items/x", None),
        ("items/{id?}", "/items", {}),
        ("files/{*path}", "/files/a/b/c", {"path": "a/b/c"}),
        ("files/{*path}", "/files", {}),
        ("", "/", {}),
        (
            "users/{upn}/{action:regex(^(sync|resync)$)}",
            "/users/a@b.c/resync",
            {"upn": "a@b.c", "action": "resync"},
        ),
        ("users/{upn}/{action:regex(^(sync|resync)$)}", "/users/a@b.c/delete", None),
        ("n/{n:int:min(1)}", "/n/0", None),
        ("n/{n:int:range(1,9)}", "/n/9", {"n": "9"}),
        ("c/{code:length(2)}", "/c/abc", None),
        (
            "g/{id:guid}",
            "/g/0b5c9c5e-3b8a-4b8e-9a61-1f0b3f1c2d4e",
            {"id": "0b5c9c5e-3b8a-4b8e-9a61-1f0b3f1c2d4e"},
        ),
    ],
)
def test_route_templates(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert RouteTemplate.parse(template).match(path) == expected


@pytest.mark.parametrize("template", ["a/{", "a/{x:regex(()}", "a/x{y}", "a/{x=1}"])
def test_unsupported_route_templates_are_errors(template: str) -> None:
    with pytest.raises(RouteError):
        RouteTemplate.parse(template)


def test_literal_routes_rank_before_parameters() -> None:
    ranks = [RouteTemplate.parse(t).rank for t in ("users/{id}", "users/me", "users/{*rest}")]
    assert sorted(ranks) == [ranks[1], ranks[0], ranks[2]]


def test_local_settings_do_not_override_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {"A": "file", "B": "file"}}))
    environ = {"A": "env"}
    assert load_local_settings(path, environ) == ["B"]
    assert environ == {"A": "env", "B": "file"}
    path.write_text(json.dumps({"IsEncrypted": True, "Values": {}}))
    with pytest.raises(HostConfigError):
        load_local_settings(path, {})


def test_host_json_with_app_setting_overrides(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text(
        json.dumps(
            {"version": "2.0", "extensions": {"queues": {"batchSize": 8, "visibilityTimeout": "00:00:30"}}}
        )
    )
    config = HostConfig.load(
        tmp_path,
        {
            "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:02",
            "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "2",
            "AzureFunctionsJobHost__extensions__http__routePrefix": "",
        },
    )
    assert config.queues.batch_size == 8
    assert config.queues.new_batch_threshold == 4  # half the batch by default
    assert config.queues.visibility_timeout == 2
    assert config.queues.max_dequeue_count == 2
    assert config.queues.max_polling_interval == 60  # the extension's default
    assert config.route_prefix == ""


def test_the_repository_host_json_loads() -> None:
    root = Path(__file__).resolve().parents[3]
    queues = json.loads((root / "host.json").read_text())["extensions"]["queues"]
    config = HostConfig.load(root, {})
    assert config.queues.batch_size == queues["batchSize"]
    assert config.queues.max_dequeue_count == queues["maxDequeueCount"]
    assert config.function_timeout is not None


def test_missing_keys_are_random_and_not_empty() -> None:
    keys = Keys.from_env({"FUNCTIONS_KEY_echo": "e"})
    assert keys.master and keys.host and keys.master != keys.host
    assert keys.functions == {"echo": "e"}


def test_queue_outputs_are_base64_encoded_like_the_host() -> None:
    assert encode_message("hé", "base64") == "aMOp"
    assert encode_message(b"\x00", "base64") == "AA=="
    assert encode_message(func.QueueMessage(body="x"), "none") == "x"
    with pytest.raises(TypeError):
        encode_message({"a": 1}, "base64")
