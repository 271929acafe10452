"""Start a local stand-in (Azurite, the Graph emulator, the reference CRM ...) as a child process on
free loopback ports, wait until it answers, and stop it (and only it) afterwards."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


_HANDED_OUT: set[int] = set()  # ports this process already gave a server: never twice


def free_port() -> int:
    """A loopback port free now, for a server about to bind it.

    Chosen below the kernel's ephemeral range: a port from `bind(0)` is an ephemeral one, and between
    this call and the server's bind any outgoing connection (tests make thousands) may take it as its
    local port; the server then fails to bind while another process answers on that port. Below the
    range only servers bind, and this process never hands out the same port twice."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randint(10_000, low - 1)
        if port in _HANDED_OUT:
            continue
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux; 32768 where it cannot be read)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        if low > 11_000:
            return low
    return 32_768


def _port_open(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until_ready(
    proc: subprocess.Popen[bytes], *, ports: Sequence[int] = (), url: str = "", timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before it was ready")
        if all(_port_open(p) for p in ports):
            if not url:
                return
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0).status_code < 500:
                    return
        time.sleep(0.05)
    raise TimeoutError(f"{proc.args!r} not ready after {timeout} s")


@contextlib.contextmanager
def running(
    args: Sequence[str],
    *,
    ports: Sequence[int] = (),
    ready_url: str = "",
    env: dict[str, str] | None = None,
    log: Path | None = None,
    timeout: float = 60.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `args` until the block ends. Output goes to `log` (or is discarded)."""

    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        list(args),
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until_ready(proc, ports=ports, url=ready_url, timeout=timeout)
        yield proc
    finally:
        stop(proc)
        if log:
            out.close()  # type: ignore[union-attr]


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def python_module(module: str, *args: str) -> list[str]:
    """The command line that runs `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]
