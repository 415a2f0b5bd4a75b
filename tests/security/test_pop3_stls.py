"""POP3 STLS and command injection (CVE-2011-0411) against the real server: STLS with
input already waiting is refused (the input was sent in the clear and stays plaintext);
STLS alone upgrades, and nothing sent in the clear is read as a command under TLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.security.mail_servers import (
    ALICE,
    AsyncClient,
    Servers,
    insecure_tls,
    start_servers,
)
from tests.support.mail_fakes import PASSWORD


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    s = await start_servers(tmp_path)
    yield s
    await s.stop()


async def test_stls_with_pipelined_input_is_refused(servers: Servers) -> None:
    c = await AsyncClient.open(servers.pop3_ports.plain)
    try:
        await c.line()
        # One packet: STLS and a command an attacker appended in the clear.
        await c.send(f"STLS\r\nUSER {ALICE}\r\n".encode())
        refusal = await c.line()
        user = await c.line()  # the appended command, answered in plaintext as sent
        await c.send(b"CAPA\r\n")
        caps = b""
        while not caps.endswith(b".\r\n"):
            caps += await c.line()
    finally:
        await c.close()
    assert refusal.startswith(b"-ERR input after STLS"), refusal
    assert user.startswith(b"+OK"), user  # plaintext logins are allowed on loopback here
    assert b"STLS" in caps  # still plaintext: STLS is still offered


async def test_stls_alone_upgrades_and_plaintext_sent_after_it_is_never_run(
    servers: Servers,
) -> None:
    """The client sends STLS, then — before the handshake, like an attacker in the
    middle would — a plaintext command. It is not run under TLS: either it is discarded
    at the switch, or it breaks the handshake."""
    reader, writer = await asyncio.open_connection("127.0.0.1", servers.pop3_ports.plain)
    try:
        await reader.readline()
        writer.write(b"STLS\r\n")
        assert (await reader.readline()).startswith(b"+OK Begin TLS")
        writer.write(b"DELE 1\r\n")  # injected after the answer, before the handshake
        await writer.drain()
        await asyncio.sleep(0.05)
        try:
            await writer.start_tls(insecure_tls())
        except (ssl.SSLError, ConnectionError):
            return  # the server read it as TLS and gave up: nothing ran
        writer.write(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
        user = await reader.readline()
        answer = await reader.readline()
        assert user.startswith(b"+OK") and answer.startswith(b"+OK maildrop"), (user, answer)
        writer.write(b"QUIT\r\n")
        assert (await reader.readline()).startswith(b"+OK")
    finally:
        writer.close()


async def test_implicit_and_upgraded_sessions_log_in(servers: Servers) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", servers.pop3_ports.tls, ssl=insecure_tls())
    try:
        assert (await reader.readline()).startswith(b"+OK")
        writer.write(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
        await reader.readline()
        assert (await reader.readline()).startswith(b"+OK maildrop")
    finally:
        writer.close()
