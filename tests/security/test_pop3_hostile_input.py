"""Overlong POP3 lines against the real server: answered, then the connection is closed
without reading the rest (an endless line is not read forever), as Dovecot does."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clustermail.mail.pop3.protocol import MAX_LINE
from tests.security.mail_servers import ALICE, AsyncClient, Servers, start_servers
from tests.support.mail_fakes import PASSWORD


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    s = await start_servers(tmp_path)
    yield s
    await s.stop()


@pytest.mark.parametrize("logged_in", [False, True])
async def test_an_endless_line_is_answered_and_the_connection_closed(
    servers: Servers, logged_in: bool
) -> None:
    c = await AsyncClient.open(servers.pop3_ports.plain)
    try:
        await c.line()
        if logged_in:
            await c.send(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
            await c.line()
            assert (await c.line()).startswith(b"+OK")
        started = time.monotonic()
        got = b""
        with contextlib.suppress(ConnectionError):  # unread bytes: the kernel resets
            await c.send(b"NOOP " + b"x" * 200_000)  # and no line end, ever
            while line := await c.line():
                got += line
    finally:
        await c.close()
    assert got in (b"", f"-ERR line too long (at most {MAX_LINE} bytes); closing\r\n".encode())
    assert time.monotonic() - started < 5


async def test_a_long_line_within_the_read_buffer_is_refused_too(servers: Servers) -> None:
    c = await AsyncClient.open(servers.pop3_ports.plain)
    try:
        await c.line()
        await c.send(b"USER " + b"a" * (MAX_LINE + 10) + b"\r\n")
        assert (await c.line()).startswith(b"-ERR line too long")
        answered = time.monotonic()
        assert await c.line() == b""
        # the close waits a second (a tarpit: no reconnecting at wire speed)
        assert time.monotonic() - answered >= 0.8
    finally:
        await c.close()
