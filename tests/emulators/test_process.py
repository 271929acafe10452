"""`free_port`: ports a server can bind that no outgoing connection can take first."""

from __future__ import annotations

import contextlib
import socket
import sys
from pathlib import Path

import pytest

from emulators.process import free_port, running


def test_free_ports_are_below_the_ephemeral_range_and_never_handed_out_twice() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(200)]
    assert all(10_000 <= port < low for port in ports)
    assert len(set(ports)) == len(ports)
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", ports[-1]))  # free for the server it was chosen for


def test_a_server_whose_port_another_process_answers_on_is_never_taken_for_ready() -> None:
    """Two test stacks that end up on one port reset each other's data mid-test (the likely cause of a model
    failure that only a later "connection refused" gave away): the port must be ours, not just open."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as impostor:
        impostor.bind(("127.0.0.1", free_port()))
        impostor.listen()
        port = impostor.getsockname()[1]
        # the server starts a moment later and cannot bind: the impostor answers on its port meanwhile
        server = f"import socket, time; time.sleep(0.3); socket.create_server(('127.0.0.1', {port}))"
        taken = pytest.raises(RuntimeError, match=f"another process listens on \\[{port}\\]")
        with taken, running([sys.executable, "-c", server], ports=(port,)):
            pass


def test_a_server_that_binds_its_port_is_ready() -> None:
    port = free_port()
    server = f"import socket, time; s = socket.create_server(('127.0.0.1', {port})); time.sleep(30)"
    with running([sys.executable, "-c", server], ports=(port,)) as proc:
        assert proc.poll() is None
