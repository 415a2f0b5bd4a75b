"""An in-process IMAP server on its own event-loop thread, over a real SQLite database.

Tests talk to it with blocking clients (imaplib, imapclient, subprocesses) from the
test thread, as real clients would.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from clustermail.mail.imap.server import ImapServer
from clustermail.mail.imap.session import SessionConfig
from clustermail.mail.net.listener import AuthThrottle, ListenerLimits
from clustermail.mail.store import MailboxDatabase

T = TypeVar("T")
PASSWORD = "secret"
USERS = ["alice@example.test", "bob@example.test"]


class MemoryAuthenticator:
    """Test stand-in for the recipient directory: user → password."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    async def authenticate(self, username: str, password: str) -> str | None:
        return username if self.users.get(username) == password else None


class ServerThread:
    def __init__(
        self,
        db: MailboxDatabase,
        users: list[str],
        *,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
        allow_plaintext_on_loopback: bool = True,
        config: SessionConfig | None = None,
        throttle: AuthThrottle | None = None,
        limits: ListenerLimits | None = None,
        locate: Callable[[Any], tuple[MailboxDatabase, str]] | None = None,
    ) -> None:
        self.db = db
        self.host = host
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = ImapServer(
            MemoryAuthenticator({u: PASSWORD for u in users}),
            locate or (lambda user: (self.db, user)),
            tls=tls,
            allow_plaintext_on_loopback=allow_plaintext_on_loopback,
            config=config,
            throttle=throttle or AuthThrottle(base_delay=0.01, max_delay=0.05),
            limits=limits,
        )
        self.port = self.listen(0)
        self.tls_port: int | None = self.listen(0, implicit_tls=True) if tls else None

    def call(self, coro: Awaitable[T], timeout: float = 30) -> T:
        async def wrap() -> T:
            return await coro

        fut: Future[T] = asyncio.run_coroutine_threadsafe(wrap(), self.loop)
        return fut.result(timeout)

    def listen(self, port: int, *, implicit_tls: bool = False) -> int:
        srv = self.call(self.server.listen(self.host, port, implicit_tls=implicit_tls))
        return int(srv.sockets[0].getsockname()[1])

    def stop(self) -> None:
        try:
            self.call(self.server.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def self_signed(tmp: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a fresh self-signed certificate (and the cert file for clients)."""
    import subprocess

    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx, cert
