"""`free_port`: ports a server can bind that no outgoing connection can take first."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from emulators.process import free_port


def test_free_ports_are_below_the_ephemeral_range_and_never_handed_out_twice() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(200)]
    assert all(10_000 <= port < low for port in ports)
    assert len(set(ports)) == len(ports)
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", ports[-1]))  # free for the server it was chosen for
