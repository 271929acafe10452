"""Azurite (the real Table/Queue/Blob storage emulator, from node_modules) on free loopback ports.

with azurite() as stack:
    stack.connection_string   # for azure-data-tables / azure-storage-queue / AzureWebJobsStorage

with restartable_azurite() as storage:   # data on disk (a temporary folder): survives a restart
    storage.stop()                        # a storage outage: every client's connection is refused
    storage.start()                       # back on the same ports, with every table row and message
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from emulators.process import ROOT, free_port, running, stop, wait_until_ready

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


# Azure keeps an idle HTTP connection open for minutes; Azurite's 5 s default closes pooled connections
# under a client that paused for a moment (a loaded machine), which the real service would not.
KEEP_ALIVE = (
    "--blobKeepAliveTimeout",
    "120",
    "--queueKeepAliveTimeout",
    "120",
    "--tableKeepAliveTimeout",
    "120",
)


def _args(stack: AzuriteStack, *storage: str) -> list[str]:
    return [
        str(azurite_binary()),
        *storage,
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--loose",
        *KEEP_ALIVE,
        "--blobHost", "127.0.0.1", "--blobPort", str(stack.blob_port),
        "--queueHost", "127.0.0.1", "--queuePort", str(stack.queue_port),
        "--tableHost", "127.0.0.1", "--tablePort", str(stack.table_port),
    ]  # fmt: skip


def _ports(stack: AzuriteStack) -> tuple[int, int, int]:
    return stack.blob_port, stack.queue_port, stack.table_port


@contextlib.contextmanager
def azurite(log: Path | None = None) -> Iterator[AzuriteStack]:
    stack = AzuriteStack(free_port(), free_port(), free_port())
    with running(_args(stack, "--inMemoryPersistence"), ports=_ports(stack), log=log):
        yield stack


class RestartableAzurite:
    """Azurite keeping its data in `folder` (`--location`), stopped and started again on the same ports:
    a storage account unavailable for a while (connections refused), then back with all its tables,
    queues and messages. `stop()` is graceful (SIGTERM): Azurite writes its databases out first."""

    def __init__(self, folder: Path, log: Path | None = None) -> None:
        self.stack = AzuriteStack(free_port(), free_port(), free_port())
        self.folder = folder
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return self.stack.connection_string

    @property
    def pid(self) -> int:
        """The process (and process group) id of the running Azurite."""
        assert self.process is not None, "Azurite is not running"
        return self.process.pid

    def start(self, timeout: float = 60.0) -> None:
        assert self.process is None or self.process.poll() is not None, "Azurite is already running"
        with open(self.log, "ab") if self.log else contextlib.nullcontext(subprocess.DEVNULL) as out:
            self.process = subprocess.Popen(
                _args(self.stack, "--location", str(self.folder)),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until_ready(self.process, ports=_ports(self.stack), timeout=timeout)
        except BaseException:
            stop(self.process)
            raise

    def stop(self) -> None:
        """Stop Azurite: SIGTERM, then SIGKILL if it has not ended within 15 s."""
        if self.process is not None:
            stop(self.process, grace=15.0)

    @property
    def running(self) -> bool:
        """Whether Azurite runs (False too once something else, e.g. a test's worker, stopped it)."""
        return self.process is not None and self.process.poll() is None


@contextlib.contextmanager
def restartable_azurite(log: Path | None = None) -> Iterator[RestartableAzurite]:
    with tempfile.TemporaryDirectory(prefix="azurite-") as folder:
        storage = RestartableAzurite(Path(folder), log)
        storage.start()
        try:
            yield storage
        finally:
            storage.stop()
