"""bench/failover.py's --mail timing: a greeting counts only from a listener that came
after the old one was gone, and the banner starts after the mail services."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bench.failover import layout, wait_greeting
from clustermail.cluster.config import parse_config
from tests.support.ports import free_port


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
    answers = iter(["220 old", "220 old", None, None, "220 new", "220 newer"])
    probed: list[str | None] = []

    def probe(address: str, port: int, timeout: float) -> str | None:
        probed.append(line := next(answers))
        return line

    asyncio.run(wait_greeting("127.0.0.1", 1, timeout=10, probe=probe))
    assert probed[-1] == "220 new"


@pytest.mark.parametrize(("mail", "after"), [(True, {"smtp"}), (False, set())])
def test_mail_cells_start_the_banner_after_smtp(mail: bool, after: set[str]) -> None:
    config = parse_config(layout("127.0.0", 20000, "fast", mail))
    assert len(config.virtual_servers) == 3
    for vs in config.virtual_servers:
        banner = next(r for r in vs.resources if r.name == "banner")
        assert set(banner.depends_on) == {"ip", "disk"} | after
        assert any(r.type == "smtp" for r in vs.resources) == mail
