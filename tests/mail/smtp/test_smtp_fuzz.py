"""Fuzzing SMTP command handling over real sockets: every malformed line gets a protocol
error (a reply code, never a traceback), the session stays usable or closes cleanly, and
the server keeps serving."""

from __future__ import annotations

import asyncio
import re
import socket
from typing import BinaryIO

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.mail_fakes import DOMAIN, Running

REPLY = re.compile(rb"^\d{3}[ -]")
COMMANDS = [b"EHLO x", b"HELO x", b"MAIL FROM:<a@b.test>", b"RCPT TO:<alice@" + DOMAIN.encode()
            + b">", b"RCPT TO:<x@y.test>", b"DATA", b"RSET", b"NOOP", b"VRFY a", b"AUTH PLAIN",
            b"AUTH LOGIN", b"STARTTLS", b"HELP", b"MAIL FROM:<> SIZE=99999999999",
            b"MAIL FROM:<a@b.test> BODY=8BITMIME SMTPUTF8", b"RCPT TO:<\xc3\xa4@" +
            DOMAIN.encode() + b">", b"BDAT 10", b"A" * 2000, b"\x00\xff"]

lines = st.lists(
    st.sampled_from(COMMANDS) | st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")),
    min_size=1, max_size=15,
)


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


def exchange(address: str, port: int, commands: list[bytes]) -> bytes:
    with socket.create_connection((address, port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        assert f.readline().startswith(b"220 ")
        for cmd in commands:
            try:
                s.sendall(cmd + b"\r\n")
                reply = read_reply(f)
                if reply is not None and reply.startswith(b"354"):
                    s.sendall(b"Subject: fuzz\r\n\r\nbody\r\n.\r\n")
                    reply = read_reply(f)
                elif reply is not None and reply.startswith(b"220"):
                    return b"closed"  # STARTTLS accepted: a TLS handshake is due, not text
                elif reply is not None and reply.startswith(b"334"):
                    s.sendall(b"*\r\n")  # cancel the AUTH exchange
                    reply = read_reply(f)
            except OSError:
                return b"closed"
            if reply is None:
                return b"closed"  # the server closed the session: allowed
        try:
            s.sendall(b"QUIT\r\n")
            return f.readline()
        except OSError:
            return b"closed"  # it had said goodbye (too many unknown commands)


async def test_fuzzed_sessions(smtp: Running) -> None:
    @settings(max_examples=80, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(lines)
    def run(commands: list[bytes]) -> None:
        last = exchange(smtp.address, smtp.ports.inbound, commands)
        assert last in (b"closed", b"") or last.startswith(b"221 ")
        # the server still accepts new sessions
        with socket.create_connection((smtp.address, smtp.ports.inbound), timeout=10) as s:
            assert s.makefile("rb").readline().startswith(b"220 ")

    await asyncio.to_thread(run)
