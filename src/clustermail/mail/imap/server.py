"""The IMAP server: listeners and sessions, and the change hub they share.

The core takes what it needs as plain arguments, so it runs the same under the
``imap4`` resource and in tests:

* an :class:`~clustermail.mail.imap.context.Authenticator` (the recipient
  directory in production);
* a locator, principal → (mounted :class:`MailboxDatabase`, mailbox id);
* an ``ssl.SSLContext`` for STARTTLS and implicit TLS, or ``None``.

The server also keeps what its sessions share: the change hub, the count of logged-in
connections per user and address (``mail_max_userip_connections``), and two worker
threads for work that grows with message sizes (body SEARCH, large FETCH), so it never
stalls the event loop every session is served from.

Plaintext LOGIN/AUTHENTICATE is allowed on TLS connections, and on plain ones
only when the listener is bound to a loopback address and the configuration
allows it (``allow_plaintext_on_loopback``); elsewhere the server announces
LOGINDISABLED.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from concurrent.futures import ThreadPoolExecutor

from clustermail.mail.imap.change_hub import ChangeHub
from clustermail.mail.imap.context import Authenticator, MailboxLocator, SessionConfig
from clustermail.mail.imap.session import ImapSession
from clustermail.mail.imap.user_connections import UserConnections
from clustermail.mail.net.listener import (
    READ_LIMIT,
    Admission,
    AuthThrottle,
    BufferedStreamProtocol,
    ListenerLimits,
    client_address,
    is_loopback,
    set_nodelay,
)

#: Threads for work that grows with message sizes, shared by every session of a server.
WORKER_THREADS = 2


class ImapServer:
    def __init__(
        self,
        authenticator: Authenticator,
        locate: MailboxLocator,
        *,
        tls: ssl.SSLContext | None = None,
        allow_plaintext_on_loopback: bool = False,
        config: SessionConfig | None = None,
        throttle: AuthThrottle | None = None,
        limits: ListenerLimits | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.locate = locate
        self.tls = tls
        self.allow_plaintext_on_loopback = allow_plaintext_on_loopback
        self.config = config or SessionConfig()
        self.throttle = throttle or AuthThrottle()
        # Connection counts only: idle timeouts are the session's (RFC 3501's 30 minutes).
        self.admission = Admission(limits or ListenerLimits(), "imap4")
        self.sessions: set[ImapSession] = set()
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._hub: ChangeHub | None = None
        # Work that grows with message sizes (body SEARCH, large FETCH) runs here, off the
        # event loop and apart from the default executor (password hashing uses that).
        self._workers: ThreadPoolExecutor | None = None
        self.user_connections = UserConnections(self.config.max_userip_connections)

    @property
    def workers(self) -> ThreadPoolExecutor:
        if self._workers is None:
            self._workers = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="imap-work")
        return self._workers

    @property
    def hub(self) -> ChangeHub:
        if self._hub is None:
            self._hub = ChangeHub(asyncio.get_running_loop())
        return self._hub

    async def listen(self, host: str, port: int, *, implicit_tls: bool = False) -> asyncio.Server:
        """Start a listener; ``port`` 0 picks a free one (see ``sockets``)."""
        if implicit_tls and self.tls is None:
            raise ValueError("an implicit-TLS listener needs a TLS context")
        plaintext = self.allow_plaintext_on_loopback and is_loopback(host)

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(reader, writer, plaintext)

        def factory() -> BufferedStreamProtocol:
            # Unread input the stream holds before it stops reading from the socket (twice
            # this): with the framer's limits, what one client can make the server hold.
            # Read into a reused buffer, not a fresh 256 KiB object per read (listener).
            return BufferedStreamProtocol(asyncio.StreamReader(limit=READ_LIMIT), serve)

        server = await asyncio.get_running_loop().create_server(
            factory, host, port, ssl=self.tls if implicit_tls else None, reuse_address=True)
        self._servers.append(server)
        return server

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, plaintext: bool
    ) -> None:
        client = client_address(writer.transport)
        if not self.admission.admit(client):
            try:
                with contextlib.suppress(OSError, TimeoutError):
                    writer.write(b"* BYE [UNAVAILABLE] Too many connections, try again later.\r\n")
                    writer.close()
                    async with asyncio.timeout(5):
                        await writer.wait_closed()
            finally:
                writer.transport.abort()
            return
        try:
            await self._run_session(reader, writer, plaintext)
        finally:
            self.admission.release(client)

    async def _run_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, plaintext: bool
    ) -> None:
        set_nodelay(writer.transport)
        session = ImapSession(
            reader,
            writer,
            authenticator=self.authenticator,
            locate=self.locate,
            hub=self.hub,
            throttle=self.throttle,
            config=self.config,
            tls=self.tls,
            plaintext_allowed=plaintext,
            workers=self.workers,
            user_connections=self.user_connections,
        )
        self.sessions.add(session)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            if task is not None:
                self._tasks.discard(task)

    @property
    def serving(self) -> bool:
        return bool(self._servers) and all(s.is_serving() for s in self._servers)

    async def close(self) -> None:
        """Stop listening, say BYE to every session and wait for them to end."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for session in list(self.sessions):
            session.close_soon()
        tasks = list(self._tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
        for server in servers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await server.wait_closed()
        if self._hub is not None:
            self._hub.close()
            self._hub = None
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)
            self._workers = None
