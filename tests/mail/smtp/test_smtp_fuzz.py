"""Fuzzing SMTP command handling over real sockets: every malformed line gets a protocol
error (a reply code, never a traceback), the session stays usable or closes cleanly, no
exchange hangs (every read is bounded), and the server keeps serving.

Inputs: hypothesis draws sessions of up to 15 lines from known commands (with hostile
variants: control characters in addresses, overlong lines, spoofed From: headers, AUTH
garbage) and random bytes; the number of sessions and lines tried is in docs/security.md
("Fuzzing")."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustermail.mail.smtp.policy import SmtpLimits
from tests.support.mail_fakes import DOMAIN, FakeDirectory, Running, start_smtp

SESSIONS = 300  # hypothesis examples; each is one session of up to 15 lines
REPLY = re.compile(rb"^\d{3}[ -]")
ALICE = b"alice@" + DOMAIN.encode()
COMMANDS = [b"EHLO x", b"HELO x", b"MAIL FROM:<a@b.test>", b"RCPT TO:<" + ALICE + b">",
            b"RCPT TO:<x@y.test>", b"DATA", b"RSET", b"NOOP", b"VRFY a", b"AUTH PLAIN",
            b"AUTH LOGIN", b"STARTTLS", b"HELP", b"MAIL FROM:<> SIZE=99999999999",
            b"MAIL FROM:<a@b.test> BODY=8BITMIME SMTPUTF8", b"RCPT TO:<\xc3\xa4@" +
            DOMAIN.encode() + b">", b"BDAT 10", b"A" * 2000, b"\x00\xff",
            # hostile variants
            b"MAIL FROM:<a\x01b@b.test>", b"RCPT TO:<\"a\x7f\"@" + DOMAIN.encode() + b">",
            b"RCPT TO:<a\rb@" + DOMAIN.encode() + b">", b"RCPT TO:<nobody@" +
            DOMAIN.encode() + b">", b"AUTH PLAIN AGFsaWNlAHdyb25n", b"AUTH PLAIN =",
            b"AUTH PLAIN !!!!", b"AUTH XOAUTH2 abc", b"MAIL FROM:<" + b"a" * 300 + b"@b.test>",
            b"RCPT TO:<" + b"@" * 100 + b">", b"EHLO " + b"x" * 600, b"\t", b" ", b"QUIT x"]
BODIES = [b"Subject: fuzz\r\n\r\nbody\r\n",
          b"From: <bob@" + DOMAIN.encode() + b">\r\n\r\nspoof\r\n",
          b"From: nobody\r\nFrom: x@y.test\r\n\r\ntwo\r\n",
          b"Subject: long\r\n\r\n" + b"x" * 5000 + b"\r\n",
          b"\r\n..\r\n.x\r\n"]

lines = st.lists(
    st.sampled_from(COMMANDS) | st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")),
    min_size=1, max_size=15,
)


@pytest.fixture
async def smtp(tmp_path: Path, directory: FakeDirectory) -> AsyncIterator[Running]:
    # No tarpit sleep (it would only slow the fuzzing), the other error limits as usual.
    running = await start_smtp(tmp_path / "disk", directory,
                               limits=SmtpLimits(error_sleep_time=0.0))
    yield running
    await running.stop()
    running.mail_store.close()


def read_reply(f: BinaryIO) -> bytes | None:
    """The last line of one (multi-line) reply; None if the server closed."""
    while True:
        line = f.readline()
        if not line:
            return None
        assert REPLY.match(line), line
        assert b"Traceback" not in line and b"Error: (" not in line
        if line[3:4] != b"-":
            return line


def exchange(address: str, port: int, commands: list[bytes], body: bytes) -> bytes:
    with socket.create_connection((address, port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        assert f.readline().startswith(b"220 ")
        for cmd in commands:
            try:
                s.sendall(cmd + b"\r\n")
                reply = read_reply(f)
                if reply is not None and reply.startswith(b"354"):
                    s.sendall(body + b".\r\n")
                    reply = read_reply(f)
                elif reply is not None and reply.startswith(b"220"):
                    return b"closed"  # STARTTLS accepted: a TLS handshake is due, not text
                elif reply is not None and reply.startswith(b"334"):
                    s.sendall(b"*\r\n")  # cancel the AUTH exchange
                    reply = read_reply(f)
            except OSError:
                return b"closed"
            if reply is None or reply.startswith(b"421"):
                return b"closed"  # the server closed the session: allowed
        try:
            s.sendall(b"QUIT\r\n")
            return f.readline()
        except OSError:
            return b"closed"  # it had said goodbye (too many unknown commands)


async def test_fuzzed_sessions(smtp: Running) -> None:
    @settings(max_examples=SESSIONS, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(lines, st.sampled_from(BODIES))
    def run(commands: list[bytes], body: bytes) -> None:
        last = exchange(smtp.address, smtp.ports.inbound, commands, body)
        assert last in (b"closed", b"") or last.startswith((b"221 ", b"421 ")), last
        # the server still accepts new sessions
        with socket.create_connection((smtp.address, smtp.ports.inbound), timeout=10) as s:
            assert s.makefile("rb").readline().startswith(b"220 ")

    await asyncio.to_thread(run)
    async with asyncio.timeout(10):  # every session ended gives its slot back
        while smtp.service.listener.admission.active:
            await asyncio.sleep(0.05)
