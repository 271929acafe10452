"""python -m emulators.dataverse --port PORT [--host 127.0.0.1] [--db FILE] [--cert PEM [--key PEM]]
[--page-cap N]

Without --cert it makes a local test CA (trustme) and a certificate for 127.0.0.1 and localhost, and
prints where the CA certificate is, for a client to trust (e.g. SSL_CERT_FILE or REQUESTS_CA_BUNDLE).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import uvicorn

from emulators.dataverse.app import StandIn, create_app


def make_certificates(directory: Path) -> tuple[Path, Path]:
    """A test CA and a server certificate signed by it; returns (server key+chain PEM, CA PEM)."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost", "::1")
    chain, authority = directory / "server.pem", directory / "ca.pem"
    server.private_key_and_cert_chain_pem.write_to_path(str(chain))
    ca.cert_pem.write_to_path(str(authority))
    return chain, authority


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emulators.dataverse", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--db", default=":memory:", help="SQLite file (default: in memory)")
    parser.add_argument("--cert", help="PEM with the server certificate chain (and its key, unless --key)")
    parser.add_argument("--key", help="PEM with the server key")
    parser.add_argument("--page-cap", type=int, default=5000, help="largest page (Dataverse: 5000)")
    args = parser.parse_args(argv)
    cert, key = args.cert, args.key
    if not cert:
        directory = Path(tempfile.mkdtemp(prefix="dataverse-tls-"))
        chain, authority = make_certificates(directory)
        cert = str(chain)
        print(f"Dataverse stand-in: trust the test CA {authority}", file=sys.stderr, flush=True)
    app = create_app(StandIn(args.db, page_cap=args.page_cap))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        ssl_certfile=cert,
        ssl_keyfile=key,
    )


if __name__ == "__main__":
    main()
