"""What the hostile-client IMAP tests share: the real IMAP server on a real mailbox
database (as tests/mail/imap runs it), and a raw socket client that says exactly the
bytes an attacker would."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clustermail.mail.imap.session import SessionConfig
from clustermail.mail.net.listener import ListenerLimits
from clustermail.mail.store import MailboxDatabase
from tests.support.imap_server import PASSWORD, USERS, ServerThread

ALICE, BOB = USERS


@contextmanager
def mailbox_database(path: Path) -> Iterator[MailboxDatabase]:
    (path / "SG1").mkdir(parents=True, exist_ok=True)
    db = MailboxDatabase(path / "SG1" / "DB1.sqlite")
    db.mount(1)
    try:
        for user in USERS:
            db.create_mailbox_sync(user)
        yield db
    finally:
        db.dismount()


@contextmanager
def imap_server(
    db: MailboxDatabase,
    config: SessionConfig | None = None,
    limits: ListenerLimits | None = None,
) -> Iterator[ServerThread]:
    srv = ServerThread(db, USERS, config=config, limits=limits)
    try:
        yield srv
    finally:
        srv.stop()


class Raw:
    """A line-oriented raw IMAP client with a bounded wait on every read."""

    def __init__(self, srv: ServerThread, *, timeout: float = 5.0, rcvbuf: int | None = None):
        self.sock = socket.socket()
        if rcvbuf is not None:  # before connect, so the window is small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((srv.host, srv.port))
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def until_tagged(self, tag: bytes) -> list[bytes]:
        """Every line up to and including the tagged answer of ``tag`` (or EOF)."""
        lines: list[bytes] = []
        while True:
            line = self.line()
            lines.append(line)
            if not line or line.startswith(tag + b" "):
                return lines

    def login(self, user: str = ALICE) -> None:
        self.send(f"L LOGIN {user} {PASSWORD}\r\n".encode())
        assert self.until_tagged(b"L")[-1].startswith(b"L OK")

    def rest(self) -> list[bytes]:
        """Lines until the server closes the connection."""
        lines: list[bytes] = []
        try:
            while line := self.line():
                lines.append(line)
        except ConnectionResetError:
            pass
        return lines

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def rss_bytes() -> int:
    """Resident memory of this process (the server runs in it, on its own thread)."""
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def wait_until(check: object, timeout: float, what: str) -> float:
    """Polls ``check()`` (a state of another thread, no event to wait on) until it is
    true; the seconds it took. Fails after ``timeout``."""
    assert callable(check)
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"{what} within {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - start
