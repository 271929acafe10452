"""Azurite (the real Table/Queue/Blob storage emulator, from node_modules) on free loopback ports.

with azurite() as stack:
    stack.connection_string   # for azure-data-tables / azure-storage-queue / AzureWebJobsStorage
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from emulators.process import ROOT, free_port, running

# The well-known development account every Azurite instance accepts (public, not a secret).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class AzuriteStack:
    blob_port: int
    queue_port: int
    table_port: int

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/{ACCOUNT};"
        )


def azurite_binary() -> Path:
    path = ROOT / "node_modules" / ".bin" / "azurite"
    if not path.exists():
        raise FileNotFoundError("Azurite is not installed: run `make install` (npm ci) first")
    return path


@contextlib.contextmanager
def azurite(log: Path | None = None) -> Iterator[AzuriteStack]:
    stack = AzuriteStack(free_port(), free_port(), free_port())
    args = [
        str(azurite_binary()),
        "--inMemoryPersistence",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--loose",
        "--blobHost", "127.0.0.1", "--blobPort", str(stack.blob_port),
        "--queueHost", "127.0.0.1", "--queuePort", str(stack.queue_port),
        "--tableHost", "127.0.0.1", "--tablePort", str(stack.table_port),
    ]  # fmt: skip
    with running(args, ports=(stack.blob_port, stack.queue_port, stack.table_port), log=log):
        yield stack
