"""Slow and non-reading POP3 clients against the real server: a client must log in within
the login timeout whatever it sends meanwhile; the idle timeout counts complete lines,
not bytes; a client that stops reading a big RETR loses the connection and its slot."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.security.mail_servers import ALICE, AsyncClient, Servers, start_servers
from tests.support.mail_fakes import PASSWORD

TIMEOUT = 1.0


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    s = await start_servers(tmp_path, idle_timeout=TIMEOUT, pop3_login_timeout=TIMEOUT)
    yield s
    await s.stop()


@pytest.fixture
async def deadline_servers(tmp_path: Path) -> AsyncIterator[Servers]:
    """A short login deadline; the idle timeout long, so it cannot be what ends a
    session on a loaded machine."""
    s = await start_servers(tmp_path, idle_timeout=30, pop3_login_timeout=TIMEOUT)
    yield s
    await s.stop()


async def test_a_client_must_log_in_in_time(deadline_servers: Servers) -> None:
    c = await AsyncClient.open(deadline_servers.pop3_ports.plain)
    assert (await c.line()).startswith(b"+OK")
    started = time.monotonic()
    lines: list[bytes] = []
    try:
        while time.monotonic() - started < 6 * TIMEOUT:
            await c.send(b"NOOP\r\n")  # a complete command every 0.3 s
            line = await c.line()
            lines.append(line)
            if not line.startswith(b"-ERR NOOP is not allowed") and \
                    not line.startswith(b"-ERR unknown"):
                break
            await asyncio.sleep(0.3)
    finally:
        await c.close()
    assert lines[-1] == b"-ERR [SYS/TEMP] no login in time; closing\r\n", lines
    assert time.monotonic() - started < 5 * TIMEOUT


async def test_no_deadline_after_login(deadline_servers: Servers) -> None:
    c = await AsyncClient.open(deadline_servers.pop3_ports.plain)
    try:
        await c.line()
        await c.send(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
        await c.line()
        assert (await c.line()).startswith(b"+OK")
        for _ in range(5):  # 2.5 s in all, past the login deadline
            await asyncio.sleep(0.5)
            await c.send(b"NOOP\r\n")
            assert (await c.line()).startswith(b"+OK")
    finally:
        await c.close()


async def test_a_byte_trickle_does_not_reset_the_idle_timer(servers: Servers) -> None:
    c = await AsyncClient.open(servers.pop3_ports.plain)
    try:
        await c.line()
        await c.send(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
        await c.line()
        assert (await c.line()).startswith(b"+OK")
        started = time.monotonic()
        goodbye = b""
        for byte in b"NOOPNOOPNOOPNOOP":  # a byte every 0.2 s, never a line end
            await c.send(bytes([byte]))
            try:
                goodbye = await c.line(timeout=0.2)
                break
            except TimeoutError:
                continue
    finally:
        await c.close()
    assert goodbye == b"-ERR autologout: idle for too long\r\n"
    assert time.monotonic() - started < 5 * TIMEOUT


async def test_a_client_that_stops_reading_loses_its_slot(servers: Servers) -> None:
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 4000  # 4 MB
    servers.deliver(ALICE, big)
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    try:
        await loop.sock_connect(s, ("127.0.0.1", servers.pop3_ports.plain))
        await loop.sock_sendall(s, f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
        seen = b""
        while seen.count(b"\r\n") < 3:  # greeting, USER, PASS
            seen += await loop.sock_recv(s, 1024)
        assert b"maildrop has 1" in seen, seen
        # three times 4 MB asked for, and never read
        await loop.sock_sendall(s, b"RETR 1\r\nRETR 1\r\nRETR 1\r\n")
        started = time.monotonic()
        async with asyncio.timeout(15):
            while servers.pop3.listener.admission.active:
                await asyncio.sleep(0.05)
        assert time.monotonic() - started < 10
    finally:
        s.close()
