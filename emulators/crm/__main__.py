"""python -m emulators.crm --port PORT [--db FILE] [--token T] [--host 127.0.0.1]"""

from __future__ import annotations

import argparse
import os
import secrets
import sys

import uvicorn

from emulators.crm.app import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emulators.crm", description="The reference CRM server.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--db", default=":memory:", help="SQLite file (default: in memory)")
    parser.add_argument(
        "--token", default=os.environ.get("CRM_TOKEN", ""), help="expected token (or $CRM_TOKEN)"
    )
    args = parser.parse_args(argv)
    token = args.token
    if not token:
        token = secrets.token_urlsafe(24)
        print(f"reference CRM token (generated): {token}", file=sys.stderr)
    uvicorn.run(
        create_app(token, args.db), host=args.host, port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
