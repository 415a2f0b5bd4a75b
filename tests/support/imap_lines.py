"""A raw IMAP line client logged in as the first test user, and small test messages
(for tests that check the exact untagged responses of each command)."""

from __future__ import annotations

import re
import socket

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
