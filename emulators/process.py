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


def _listening_sockets(ports: Sequence[int]) -> dict[int, set[int]] | None:
    """Port -> inodes of the loopback/any-address sockets listening on it (Linux; None elsewhere)."""
    found: dict[int, set[int]] = {port: set() for port in ports}
    try:
        lines = [
            line.split()
            for name in ("/proc/net/tcp", "/proc/net/tcp6")
            if Path(name).exists()
            for line in Path(name).read_text().splitlines()[1:]
        ]
    except OSError:
        return None
    if not lines:
        return None
    for fields in lines:
        port = int(fields[1].rsplit(":", 1)[1], 16)
        if port in found and fields[3] == "0A":  # TCP_LISTEN
            found[port].add(int(fields[9]))
    return found


def _family(pid: int) -> set[int]:
    """`pid` and every process descended from it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    family, todo = set(), [pid]
    while todo:
        member = todo.pop()
        if member not in family:
            family.add(member)
            todo += children.get(member, [])
    return family


def _foreign_ports(proc: subprocess.Popen[bytes], ports: Sequence[int]) -> list[int]:
    """The ports whose listener is not `proc` or a process it started: another server answers there (it
    took the port first, so ours cannot bind it). Empty where this cannot be told (not Linux)."""
    listening = _listening_sockets(ports)
    if listening is None:
        return []
    held: set[int] = set()
    for pid in _family(proc.pid):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        held.add(int(link[8:-1]))
    return [port for port in ports if listening[port] and not listening[port] & held]


def wait_until_ready(
    proc: subprocess.Popen[bytes], *, ports: Sequence[int] = (), url: str = "", timeout: float = 60.0
) -> None:
    """Wait until `proc` listens on all `ports` and `url` answers. A port answered by another process
    does not count: two test stacks that ended up on one port would reset each other's data."""
    deadline = time.monotonic() + timeout
    foreign: list[int] = []
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            taken = f" (another process listens on {foreign})" if foreign else ""
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before it was ready{taken}")
        if all(_port_open(p) for p in ports):
            foreign = _foreign_ports(proc, ports)
            if foreign:
                time.sleep(0.05)
                continue
            if not url:
                return
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0).status_code < 500:
                    return
        time.sleep(0.05)
    taken = f" (another process listens on {foreign})" if foreign else ""
    raise TimeoutError(f"{proc.args!r} not ready after {timeout} s{taken}")


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
