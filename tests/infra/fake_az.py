"""A stand-in for the Azure CLI (`az`), for running scripts/ensure-webhook-key.sh and
scripts/graph-app.sh without Azure.

It keeps the Key Vault secrets, the Function App's host and function keys and the tenant's app
registrations in a JSON state file (FAKE_AZ_STATE), records every call (argv) there, and answers
the commands the scripts use the way az does: JSON or tsv on stdout, an error text on stderr and
exit status 1 on failure. `fail` in the state lists, per command, the errors the next calls answer
(e.g. two 404s right after a deployment).
Only the options the script passes are understood; anything else is an error, so a changed script
fails here rather than passing by accident.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

SWITCHES = {"--only-show-errors"}  # options without a value
ERRORS = {
    "404": "(NotFound) Error retrieving function keys. Status: 404 (Not Found)",
    "400": "(BadRequest) Encountered an error (ServiceUnavailable) from host runtime. Status: 400",
    "403": "(AuthorizationFailed) The client does not have authorization to perform action",
}


def _options(args: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    names = {"-g": "--resource-group", "-n": "--name", "-o": "--output"}
    i = 0
    while i < len(args):
        name = names.get(args[i], args[i])
        if not name.startswith("--"):
            raise SystemExit(f"fake az: unexpected argument {args[i]!r}")
        if name in SWITCHES:
            options[name] = "true"
            i += 1
            continue
        options[name] = args[i + 1]
        i += 2
    return options


def _query(value: Any, query: str | None) -> Any:
    if query is None:
        return value
    if query.startswith("appRoles[?value=="):  # graph-app.sh: the id of a Graph app role by its name
        name = query.split("'")[1]
        return next((r["id"] for r in value["appRoles"] if r["value"] == name), None)
    if query.startswith("[?name=="):  # graph-app.sh: a federated credential by name
        name = query.split("'")[1]
        return "\n".join(c["name"] for c in value if c["name"] == name) or None
    for part in query.split("."):
        name = part.strip('"')
        value = value.get(name) if isinstance(value, dict) else None
    return value


def _print(value: Any, options: dict[str, str]) -> None:
    value = _query(value, options.get("--query"))
    if options.get("--output") == "none":
        return
    if options.get("--output") == "tsv":
        print("" if value is None else value)
    else:
        print(json.dumps(value))


def main(argv: list[str]) -> int:
    path = Path(os.environ["FAKE_AZ_STATE"])
    state: dict[str, Any] = json.loads(path.read_text())
    words = [a for a in argv if not a.startswith("-")][:4]
    command = next((c for c in (" ".join(words[:n]) for n in (4, 3, 2, 1)) if c in HANDLERS), " ".join(words))
    state["calls"].append(argv)
    try:
        if command not in HANDLERS:
            raise SystemExit(f"fake az: unknown command {argv}")
        options = _options(argv[len(command.split()) :])
        pending = state["fail"].get(command, [])
        if pending:
            code = pending.pop(0)
            print(f"ERROR: {ERRORS[code]}", file=sys.stderr)
            return 1
        return HANDLERS[command](state, options)
    finally:
        path.write_text(json.dumps(state))


def _secret_show(state: dict[str, Any], options: dict[str, str]) -> int:
    value = state["secrets"].get(options["--name"])
    if value is None:
        print("ERROR: (SecretNotFound) A secret with (name/id) webhook-key was not found", file=sys.stderr)
        return 1
    _print({"value": value}, options)
    return 0


def _secret_set(state: dict[str, Any], options: dict[str, str]) -> int:
    state["secrets"][options["--name"]] = Path(options["--file"]).read_text()
    return 0


def _function_keys_list(state: dict[str, Any], options: dict[str, str]) -> int:
    _print(state["function_keys"].get(options["--function-name"], {}), options)
    return 0


def _function_keys_set(state: dict[str, Any], options: dict[str, str]) -> int:
    function = options["--function-name"]
    if function not in state["functions"]:
        print(f"ERROR: function {function} not found", file=sys.stderr)
        return 1
    state["function_keys"].setdefault(function, {})[options["--key-name"]] = options["--key-value"]
    _print({"name": options["--key-name"]}, options)
    return 0


def _host_keys_list(state: dict[str, Any], options: dict[str, str]) -> int:
    _print({"functionKeys": state["host_keys"], "masterKey": "master"}, options)
    return 0


def _host_keys_set(state: dict[str, Any], options: dict[str, str]) -> int:
    state["host_keys"][options["--key-name"]] = options["--key-value"]
    return 0


def _host_keys_delete(state: dict[str, Any], options: dict[str, str]) -> int:
    assert options["--key-type"] == "functionKeys"
    del state["host_keys"][options["--key-name"]]
    return 0


def _show(state: dict[str, Any], options: dict[str, str]) -> int:
    group, name = options["--resource-group"], options["--name"]
    _print({"id": f"/subscriptions/s/resourceGroups/{group}/providers/Microsoft.Web/sites/{name}"}, options)
    return 0


def _rest(state: dict[str, Any], options: dict[str, str]) -> int:
    state["refreshed"].append(options["--url"])
    return 0


def _restart(state: dict[str, Any], options: dict[str, str]) -> int:
    state["restarts"] += 1
    return 0


GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


def _account_show(state: dict[str, Any], options: dict[str, str]) -> int:
    _print({"tenantId": "tenant-1"}, options)
    return 0


def _app_show(state: dict[str, Any], options: dict[str, str]) -> int:
    app = state["apps"].get(options["--id"])
    if app is None:
        print(f"ERROR: Resource '{options['--id']}' does not exist", file=sys.stderr)
        return 1
    _print(app, options)
    return 0


def _app_list(state: dict[str, Any], options: dict[str, str]) -> int:
    name = options.get("--display-name")
    found = [a for a in state["apps"].values() if name is None or a["displayName"] == name]
    print(json.dumps(found[0]["appId"] if found else None) if options.get("--query") else json.dumps(found))
    return 0


def _app_create(state: dict[str, Any], options: dict[str, str]) -> int:
    app_id = f"app-{len(state['apps']) + 1}"
    state["apps"][app_id] = {
        "appId": app_id,
        "displayName": options["--display-name"],
        "permissions": [],
        "federatedCredentials": [],
    }
    _print(state["apps"][app_id], options)
    return 0


def _sp_show(state: dict[str, Any], options: dict[str, str]) -> int:
    if options["--id"] == GRAPH_APP_ID:
        roles = ["Mail.Read", "Contacts.ReadWrite", "Calendars.Read", "Calendars.ReadWrite"]
        _print({"id": "graph-sp", "appRoles": [{"id": f"role-{r}", "value": r} for r in roles]}, options)
        return 0
    if options["--id"] not in state["sps"]:
        print("ERROR: Resource does not exist", file=sys.stderr)
        return 1
    _print({"id": state["sps"][options["--id"]]}, options)
    return 0


def _sp_create(state: dict[str, Any], options: dict[str, str]) -> int:
    state["sps"][options["--id"]] = f"sp-{options['--id']}"
    _print({"id": state["sps"][options["--id"]]}, options)
    return 0


def _permission_add(state: dict[str, Any], options: dict[str, str]) -> int:
    state["apps"][options["--id"]]["permissions"].append(options["--api-permissions"])
    return 0


def _credential_list(state: dict[str, Any], options: dict[str, str]) -> int:
    _print(state["apps"][options["--id"]]["federatedCredentials"], options)
    return 0


def _credential_create(state: dict[str, Any], options: dict[str, str]) -> int:
    spec = json.loads(Path(options["--parameters"].removeprefix("@")).read_text())
    state["apps"][options["--id"]]["federatedCredentials"].append(spec)
    return 0


HANDLERS = {
    "account show": _account_show,
    "ad app show": _app_show,
    "ad app list": _app_list,
    "ad app create": _app_create,
    "ad sp show": _sp_show,
    "ad sp create": _sp_create,
    "ad app permission add": _permission_add,
    "ad app federated-credential list": _credential_list,
    "ad app federated-credential create": _credential_create,
    "keyvault secret show": _secret_show,
    "keyvault secret set": _secret_set,
    "functionapp function keys list": _function_keys_list,
    "functionapp function keys set": _function_keys_set,
    "functionapp keys list": _host_keys_list,
    "functionapp keys set": _host_keys_set,
    "functionapp keys delete": _host_keys_delete,
    "functionapp show": _show,
    "functionapp restart": _restart,
    "rest": _rest,
}

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
