"""Ports for the servers tests start.

A port found free by binding port 0 is released before the server binds it, and in that
gap any other test's ``bind(0)`` or outgoing connection may be given it by the kernel (a
full run failed that way). So ports come from below the kernel's ephemeral range, where
the kernel never hands one out, and each xdist worker takes its own slice of them; a
process starts at a random place in its slice (a test's child processes allocate too),
and a port is checked free on its address before it is handed out.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

FIRST = 20000
#: Linux's default ephemeral range starts here; /proc says what this machine uses.
EPHEMERAL_LOW = 32768


def _slice() -> range:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = EPHEMERAL_LOW
    top = max(min(low, EPHEMERAL_LOW), FIRST + 1000)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    span = (top - FIRST) // count
    start = FIRST + (index % count) * span
    return range(start, start + span)


def _cycle() -> Iterator[int]:
    ports = _slice()
    offset = random.randrange(len(ports))
    while True:
        for i in range(len(ports)):
            yield ports[(offset + i) % len(ports)]


_ports = _cycle()
_lock = threading.Lock()  # a generator runs in one thread at a time


def _free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def free_port(address: str = "127.0.0.1") -> int:
    """A port free on ``address`` that no other test of this run is handed."""
    for _ in range(2000):
        with _lock:
            port = next(_ports)
        if _free(address, port):
            return port
    raise RuntimeError(f"no free port on {address} in this worker's slice")


def free_ports(count: int, address: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports on ``address``."""
    return [free_port(address) for _ in range(count)]
