"""bench/failover.py's --mail timing: a greeting counts only from a listener that came
after the old one was gone, and the banner is moved behind the mail services."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bench.failover import mail_toml, wait_greeting
from clustermail.cluster.config import parse_config
from tests.e2e.harness import cluster_toml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def greeter(port: int, text: bytes) -> Iterator[None]:
    """A listener on 127.0.0.1:port that greets every connection with ``text``."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(text)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_the_old_listener_greeting_is_not_taken_for_the_new_one() -> None:
    port = free_port()
    with greeter(port, b"220 old\r\n"), pytest.raises(TimeoutError, match="stop answering"):
        asyncio.run(wait_greeting("127.0.0.1", port, timeout=0.5))


def test_a_greeting_after_a_refusal_is_the_new_owners() -> None:
    port = free_port()

    async def scenario() -> float:
        waiting = asyncio.create_task(wait_greeting("127.0.0.1", port, timeout=10))
        await asyncio.sleep(0.1)  # nothing listens: refused
        with greeter(port, b"220 new\r\n"):
            return await waiting

    assert asyncio.run(scenario()) > 0


def test_mail_toml_starts_the_banner_after_smtp() -> None:
    config = parse_config(mail_toml(cluster_toml("127.0.0", 20000, mail=True)))
    assert len(config.virtual_servers) == 3
    for vs in config.virtual_servers:
        banner = next(r for r in vs.resources if r.name == "banner")
        assert set(banner.depends_on) == {"ip", "disk", "smtp"}
    with pytest.raises(ValueError):
        mail_toml("[cluster]\n")
