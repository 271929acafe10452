"""python -m emulators.funchost [--app function_app:app] [--port 7071] [--settings local.settings.json]"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

import azure.functions as func
import uvicorn

from emulators.funchost.config import HostConfig, HostConfigError, Keys, apply_settings_file
from emulators.funchost.host import FunctionHost


def load_app(reference: str) -> func.FunctionApp:
    module_name, _, attribute = reference.partition(":")
    app = getattr(importlib.import_module(module_name), attribute or "app")
    if not isinstance(app, func.FunctionApp):
        raise HostConfigError(f"{reference} is a {type(app).__name__}, not an azure.functions.FunctionApp")
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.funchost", description=__doc__)
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    parser.add_argument(
        "--settings",
        type=Path,
        help="local.settings.json-shaped file (default: <script root>/local.settings.json if present)",
    )
    parser.add_argument(
        "--no-settings-file", action="store_true", help="app settings from the environment only"
    )
    parser.add_argument("--script-root", type=Path, default=Path.cwd(), help="folder holding host.json")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("azure.core.pipeline.policies.http_logging_policy", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if not args.no_settings_file:
            apply_settings_file(args.settings, args.script_root)  # before the app is imported
        config = HostConfig.load(args.script_root, os.environ)
        sys.path.insert(0, str(args.script_root.resolve()))
        host = FunctionHost(load_app(args.app), os.environ, config, Keys.from_env(os.environ))
    except HostConfigError as e:
        logging.getLogger("emulators.funchost").error("%s", e)
        return 2
    uvicorn.run(host.asgi(), host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
