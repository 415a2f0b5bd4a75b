"""Hypothesis fuzzing of command handling over a live, logged-in, selected session.

Every input must get a tagged OK/NO/BAD (or an untagged BAD when it has no tag),
within a few seconds, and the server must keep serving: a NOOP after each input
is answered, on the same connection or — after LOGOUT — on a new one.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustermail.mail.store import MailboxDatabase
from tests.support.imap_server import PASSWORD, USERS, ServerThread

WORDS = [
    "CAPABILITY", "NOOP", "LOGOUT", "ID", "LOGIN", "AUTHENTICATE", "SELECT", "EXAMINE",
    "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS",
    "APPEND", "ENABLE", "IDLE", "NAMESPACE", "GETQUOTA", "GETQUOTAROOT", "SETQUOTA", "CHECK",
    "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "UID",
    "STARTTLS",
]  # fmt: skip
TOKENS = [
    "1", "2:*", "*", "1,3:5", "0", "4294967296", "INBOX", "Sent", '"a b"', '""', "(", ")",
    "()", "NIL", "FLAGS", "+FLAGS.SILENT", "(\\Seen)", "\\Deleted", "BODY[]", "BODY.PEEK[1.2]",
    "BODY[HEADER.FIELDS (FROM)]", "<0.10>", "ENVELOPE", "BODYSTRUCTURE", "ALL", "FULL",
    "CHARSET", "UTF-8", "OR", "NOT", "SINCE", "1-Jan-2024", "HEADER", "SUBJECT", "TEXT", "UID",
    "(MESSAGES UNSEEN)", "PLAIN", "=", "dGVzdA==", "RETURN", "(CHILDREN)", "%", "&AOk-",
    '"\\"', "{3}", "~{2}", "[", "]", "\x00", "\xff", "é", "\t",
]  # fmt: skip

LITERAL_HEADER = re.compile(r"~?\{\d+\+?\}$")


@st.composite
def command_lines(draw: st.DrawFn) -> bytes:
    parts = [draw(st.sampled_from(WORDS))]
    parts += draw(
        st.lists(
            st.one_of(st.sampled_from(TOKENS), st.sampled_from(WORDS), st.text(max_size=6)),
            max_size=8,
        )
    )
    line = " ".join(parts)
    line = line.replace("\r", " ").replace("\n", " ")
    if LITERAL_HEADER.search(line):
        line += " x"  # a literal header at the end would make the server wait for data
    data = line.encode("utf-8", "surrogateescape")
    if draw(st.booleans()):  # sometimes a well-formed literal in the middle
        payload = draw(st.binary(max_size=20))
        data += b" {%d+}\r\n" % len(payload) + payload
    return data


class Client:
    def __init__(self, server: ServerThread) -> None:
        self.server = server
        self.connect()

    def connect(self) -> None:
        self.sock = socket.create_connection((self.server.host, self.server.port), timeout=5)
        self.file = self.sock.makefile("rb")
        assert self.file.readline().startswith(b"* OK")
        self.exchange(b"L", f"LOGIN {USERS[0]} {PASSWORD}".encode())
        self.exchange(b"S", b"SELECT INBOX")

    def read_line(self) -> bytes:
        line = self.file.readline()
        if not line:
            raise ConnectionError
        m = re.search(rb"\{(\d+)\}\r\n$", line)
        if m:
            line += self.file.read(int(m.group(1))) + self.read_line()
        return line

    def exchange(self, tag: bytes, line: bytes) -> list[bytes]:
        self.sock.sendall(tag + b" " + line + b"\r\n")
        out = []
        while True:
            got = self.read_line()
            out.append(got)
            if got.startswith(tag + b" "):
                return out


@pytest.fixture
def fuzz_client(db: MailboxDatabase, server: ServerThread) -> Iterator[Client]:
    for n in range(3):
        db.deliver_sync(
            f"From: a@example.test\r\nSubject: fuzz {n}\r\n\r\nbody {n}\r\n".encode(), [USERS[0]]
        )
    c = Client(server)
    yield c
    c.sock.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(line=command_lines())
def test_malformed_commands_get_bad_or_no(
    fuzz_client: Client, line: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    c = fuzz_client
    caplog.set_level(logging.ERROR, logger="clustermail.mail.imap")
    try:
        c.sock.sendall(b"f " + line + b"\r\nz NOOP\r\n")
        lines: list[bytes] = []
        while True:
            got = c.read_line()
            lines.append(got)
            if got.startswith(b"z "):
                break
    except (ConnectionError, OSError) as exc:
        upper = line.upper()
        if isinstance(exc, TimeoutError):
            # Only IDLE and AUTHENTICATE take the next line (our NOOP) as their own input.
            assert b"IDLE" in upper or b"AUTHENTICATE" in upper, f"no answer to {line!r}"
        # LOGOUT (or a fatal framing error) may end the connection; the server stays up.
        c.sock.close()
        c.connect()
        assert c.exchange(b"n", b"NOOP")[-1].startswith(b"n OK")
        return
    for got in lines:
        assert got[:2] in (b"* ", b"+ ", b"f ", b"z "), got
        assert b"Traceback" not in got
    tagged = [x for x in lines if x.startswith(b"f ")]
    for t in tagged:
        assert t.split(b" ")[1] in (b"OK", b"NO", b"BAD"), t
    assert lines[-1].startswith(b"z ")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    # untagged garbage (no tag) is answered with an untagged BAD instead
    if b"LOGOUT" not in line.upper():
        c.exchange(b"s", b"SELECT INBOX")  # back to a known state for the next input
