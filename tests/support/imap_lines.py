"""A raw IMAP line client logged in as the first test user, and small test messages
(for tests that check the exact untagged responses of each command)."""

from __future__ import annotations

import re
import socket

from clustermail.mail.store import MailboxDatabase
from tests.support.imap_server import PASSWORD, USERS, ServerThread

ALICE = USERS[0]


def msg(n: int) -> bytes:
    return (
        f"From: s{n}@example.test\r\nTo: {ALICE}\r\nSubject: m{n}\r\n"
        f"Message-ID: <{n}@example.test>\r\n\r\nbody {n}\r\n"
    ).encode()


_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")


class Client:
    """A raw line client: the exact untagged responses of each command."""

    def __init__(self, server: ServerThread) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.n = 0
        assert self.file.readline().startswith(b"* OK")
        self.cmd(f'LOGIN "{ALICE}" "{PASSWORD}"')

    def cmd(self, text: str) -> list[bytes]:
        self.n += 1
        tag = b"t%d" % self.n
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        out: list[bytes] = []
        while True:
            line = self.file.readline()
            assert line, "connection closed"
            while (m := _LITERAL.search(line)) is not None:  # long strings go as literals
                line += self.file.read(int(m.group(1))) + self.file.readline()
            if line.startswith(tag + b" "):
                assert line.startswith(tag + b" OK"), line
                return out
            out.append(line.rstrip(b"\r\n"))

    def close(self) -> None:
        self.cmd("LOGOUT")
        self.file.close()
        self.sock.close()


def fetches(lines: list[bytes]) -> dict[int, bytes]:
    """Sequence number -> flag list of the ``* n FETCH (FLAGS (...))`` lines."""
    out = {}
    for line in lines:
        m = re.match(rb"\* (\d+) FETCH \(FLAGS \((.*)\)\)$", line)
        if m:
            out[int(m.group(1))] = m.group(2)
    return out


def two_sessions(server: ServerThread, db: MailboxDatabase, messages: int) -> tuple[Client, Client]:
    """``messages`` messages in ALICE's INBOX (none \\Recent, so FLAGS compare plainly)
    and two sessions with it selected."""
    for n in range(messages):
        db.deliver_sync(msg(n), [ALICE])
    db.claim_recent_sync(ALICE, "INBOX")
    a, b = Client(server), Client(server)
    a.cmd("SELECT INBOX")
    b.cmd("SELECT INBOX")
    return a, b
