"""Slow and non-reading SMTP clients against the real server: a client that never reads
loses its connection (and gives its slot back) once the send buffer stalls; a byte
trickle does not keep a session alive; the ports that require AUTH disconnect a client
that has not logged in in time, whatever it sends meanwhile."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clustermail.mail.smtp.policy import SmtpLimits
from tests.security.mail_servers import ALICE, AsyncClient, Servers, plain, start_servers
from tests.support.mail_fakes import PASSWORD

TIMEOUT = 1.0


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    s = await start_servers(tmp_path, idle_timeout=TIMEOUT,
                            limits=SmtpLimits(timeout=TIMEOUT, login_timeout=TIMEOUT))
    yield s
    await s.stop()


@pytest.fixture
async def deadline_servers(tmp_path: Path) -> AsyncIterator[Servers]:
    """A short login deadline; the idle timeout long, so it cannot be what ends a
    session on a loaded machine."""
    s = await start_servers(tmp_path, limits=SmtpLimits(timeout=30, login_timeout=TIMEOUT))
    yield s
    await s.stop()


async def wait_for_no_connections(s: Servers, within: float) -> float:
    """Seconds until the SMTP listener holds no connection (fails after ``within``)."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        while s.smtp.listener.admission.active:
            await asyncio.sleep(0.05)
    return time.monotonic() - started


def non_reading_client(port: int, stop: threading.Event) -> socket.socket:
    """Connects with a small receive buffer and pipelines EHLOs (each answered with a
    multi-line reply) without ever reading, from a thread, until ``stop``."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.settimeout(0.2)
    chunk = b"EHLO client.test\r\n" * 1000

    def flood() -> None:
        while not stop.is_set():
            try:
                s.sendall(chunk)
            except TimeoutError:
                continue  # the server stopped reading: it is blocked writing to us
            except OSError:
                return  # reset: the server gave up on us

    threading.Thread(target=flood, daemon=True).start()
    return s


async def test_a_client_that_never_reads_loses_its_slot(servers: Servers) -> None:
    stop = threading.Event()
    sock = non_reading_client(servers.smtp_ports.inbound, stop)
    try:
        async with asyncio.timeout(10):  # its replies pile up first
            while servers.smtp.listener.admission.active == 0:
                await asyncio.sleep(0.05)
        # the send buffer stalls; within the timeout (1 s) plus the close grace, the
        # connection is aborted although the client is still there, not reading
        await wait_for_no_connections(servers, within=15)
        assert not stop.is_set()
    finally:
        stop.set()
        sock.close()
    # and the server serves others
    c = await AsyncClient.open(servers.smtp_ports.inbound)
    assert (await c.line()).startswith(b"220 ")
    await c.close()


async def test_a_byte_trickle_does_not_keep_the_session(servers: Servers) -> None:
    c = await AsyncClient.open(servers.smtp_ports.inbound)
    assert (await c.line()).startswith(b"220 ")
    started = time.monotonic()
    try:
        goodbye = b""
        for byte in b"NOOP NOOP NOOP NOOP NOOP":  # one byte every 0.2 s, never a line end
            await c.send(bytes([byte]))
            try:
                goodbye = await c.line(timeout=0.2)
                break
            except TimeoutError:
                continue
    finally:
        await c.close()
    assert goodbye.startswith(b"421 4.4.2"), goodbye
    assert time.monotonic() - started < 5 * TIMEOUT


async def test_submission_must_log_in_in_time(deadline_servers: Servers) -> None:
    """Complete commands keep an inbound session going, but not a submission session
    that never logs in."""
    servers = deadline_servers
    c = await AsyncClient.open(servers.smtp_ports.submission)
    assert (await c.line()).startswith(b"220 ")
    started = time.monotonic()
    replies: list[bytes] = []
    try:
        while time.monotonic() - started < 6 * TIMEOUT:
            await c.send(b"EHLO client.test\r\n")
            reply = await c.reply()
            replies.append(reply)
            if not reply.startswith(b"250"):
                break
            await asyncio.sleep(0.3)
    finally:
        await c.close()
    assert replies[-1].startswith(b"421 4.4.2"), replies
    assert b"no login in time" in replies[-1]
    assert time.monotonic() - started < 5 * TIMEOUT

    # logged in: the deadline is gone, the idle timeout counts commands
    c = await AsyncClient.open(servers.smtp_ports.submission)
    try:
        await c.line()
        await c.send(b"EHLO client.test\r\n")
        await c.reply()
        await c.send(b"AUTH PLAIN " + plain(ALICE, PASSWORD) + b"\r\n")
        assert (await c.reply()).startswith(b"235 ")
        for _ in range(5):  # 2.5 s in all, past the login deadline
            await asyncio.sleep(0.5)
            await c.send(b"EHLO client.test\r\n")
            assert (await c.reply()).startswith(b"250 ")
    finally:
        await c.close()


async def test_inbound_sessions_have_no_login_deadline(deadline_servers: Servers) -> None:
    c = await AsyncClient.open(deadline_servers.smtp_ports.inbound)
    try:
        await c.line()
        for _ in range(5):
            await asyncio.sleep(0.5)
            await c.send(b"EHLO client.test\r\n")
            assert (await c.reply()).startswith(b"250 ")
    finally:
        await c.close()


@pytest.fixture
async def line_servers(tmp_path: Path) -> AsyncIterator[Servers]:
    """A short line deadline; the idle timeout long, so it cannot be what ends a session."""
    s = await start_servers(tmp_path, limits=SmtpLimits(timeout=30, line_timeout=TIMEOUT))
    yield s
    await s.stop()


async def test_a_slow_command_line_ends_the_session(line_servers: Servers) -> None:
    """One command line sent a byte at a time has line_timeout to end, although the idle
    timeout (30 s here, 300 s by default) is far off."""
    c = await AsyncClient.open(line_servers.smtp_ports.inbound)
    assert (await c.line()).startswith(b"220 ")
    started = time.monotonic()
    goodbye = b""
    try:
        for byte in b"EHLO " + b"x" * 100:  # one byte every 0.1 s: 10 s for the line
            await c.send(bytes([byte]))
            try:
                goodbye = await c.line(timeout=0.1)
                break
            except TimeoutError:
                continue
    finally:
        await c.close()
    assert goodbye.startswith(b"421 4.4.2") and b"command line too slow" in goodbye, goodbye
    assert time.monotonic() - started < 5 * TIMEOUT
    await wait_for_no_connections(line_servers, within=5)


async def test_each_line_gets_its_own_deadline(line_servers: Servers) -> None:
    """Lines that each arrive within the deadline keep the session, however long it
    lasts; so does sitting idle between them, and DATA lines are not command lines."""
    c = await AsyncClient.open(line_servers.smtp_ports.inbound)
    try:
        assert (await c.line()).startswith(b"220 ")
        for _ in range(3):  # 3 lines of ~0.6 s each, 1.8 s in all
            for byte in b"NOOP\r":
                await c.send(bytes([byte]))
                await asyncio.sleep(0.12)
            await c.send(b"\n")
            assert (await c.reply()).startswith(b"250 ")
        await asyncio.sleep(1.5 * TIMEOUT)  # idle, no line begun
        await c.send(b"EHLO client.test\r\nMAIL FROM:<x@example.org>\r\n")
        await c.reply()
        assert (await c.reply()).startswith(b"250 ")
        await c.send(f"RCPT TO:<{ALICE}>\r\nDATA\r\n".encode())
        assert (await c.reply()).startswith(b"250 ")
        assert (await c.reply()).startswith(b"354 ")
        await c.send(b"Subject: slow\r\n\r\nbo")
        await asyncio.sleep(1.5 * TIMEOUT)  # a DATA line in progress: the idle timeout's
        await c.send(b"dy\r\n.\r\n")
        assert (await c.reply()).startswith(b"250 ")
    finally:
        await c.close()
