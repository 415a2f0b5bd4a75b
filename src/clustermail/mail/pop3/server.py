"""The POP3 service of one virtual server: the asyncio shell around :mod:`.protocol`.

It reads lines (idle timeout, line limit), runs the state machine, and performs its
actions: STLS, login against the directory (throttled per client address), the maildrop
lock (one session per mailbox; ``-ERR [IN-USE]``), reads of the INBOX, and at QUIT the
deletions (flag \\Deleted, then expunge those UIDs).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass

from clustermail.logutil import log_event
from clustermail.mail import metrics
from clustermail.mail.backends import MailStoreService
from clustermail.mail.net.listener import (
    AuthThrottle,
    Connection,
    Endpoint,
    LineTooLong,
    Listener,
    ListenerLimits,
    is_loopback,
)
from clustermail.mail.pop3.protocol import (
    MAX_LINE,
    Action,
    Authenticate,
    Close,
    Maildrop,
    Pop3Session,
    Pop3Settings,
    Reply,
    Retrieve,
    StartTls,
    Update,
    err,
)
from clustermail.mail.queue.delivery import database_of
from clustermail.mail.store import MailboxDatabase, MessageNotFoundError, StoreError

INBOX = "INBOX"
INLINE_READ = 256 * 1024  # messages up to this size are read on the event loop
BUSY = b"-ERR [SYS/TEMP] too many connections; try again later\r\n"


#: Command names counted by name in the metrics (anything else counts as OTHER).
POP3_VERBS = frozenset({"USER", "PASS", "APOP", "AUTH", "STAT", "LIST", "RETR", "DELE", "NOOP",
                        "RSET", "QUIT", "TOP", "UIDL", "CAPA", "STLS"})


@dataclass(frozen=True, slots=True)
class Pop3Ports:
    plain: int = 110
    tls: int = 995


class MaildropLocks:
    """One POP3 session per mailbox at a time (RFC 1939's exclusive-access lock). The
    mailbox lives on one virtual server, served by one process: a set suffices."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    def acquire(self, mailbox: str) -> bool:
        if mailbox in self._held:
            return False
        self._held.add(mailbox)
        return True

    def release(self, mailbox: str) -> None:
        self._held.discard(mailbox)


class Pop3Service:
    def __init__(
        self,
        vs: str,
        hostname: str,
        mail_store: MailStoreService,
        address: str,
        ports: Pop3Ports,
        tls_context: ssl.SSLContext | None,
        limits: ListenerLimits,
        *,
        allow_plaintext_on_loopback: bool = False,
        throttle: AuthThrottle | None = None,
    ) -> None:
        self.vs = vs
        self.hostname = hostname
        self.mail_store = mail_store
        self.tls_context = tls_context
        self.throttle = throttle or AuthThrottle()
        self.locks = MaildropLocks()
        self.plaintext_allowed = allow_plaintext_on_loopback and is_loopback(address)
        endpoints = [Endpoint(ports.plain, False)]
        if tls_context is not None:
            endpoints.append(Endpoint(ports.tls, True))
        self.listener = Listener("pop3", address, endpoints, tls_context, limits,
                                 busy_reply=BUSY)

    async def start(self) -> None:
        await self.listener.start_streams(self._serve)

    async def stop(self) -> None:
        await self.listener.close()

    def is_serving(self) -> bool:
        return self.listener.is_serving()

    @property
    def ports(self) -> list[int]:
        return self.listener.ports

    # ------------------------------------------------------------------ one session

    async def _serve(self, conn: Connection) -> None:
        settings = Pop3Settings(
            hostname=self.hostname,
            tls_available=self.tls_context is not None,
            plaintext_allowed=self.plaintext_allowed,
        )
        client = _Client(conn, Pop3Session(settings, tls=conn.tls))
        try:
            await conn.send(client.session.greeting().data)
            while True:
                try:
                    line = await conn.readline(MAX_LINE)
                except LineTooLong:
                    await conn.send(err("line too long").data)
                    continue
                started = time.monotonic()
                verb = line.split(b" ", 1)[0].strip().decode("ascii", "replace")[:8] or "?"
                if not await self._run(client, client.session.handle(line)):
                    return
                metrics.command("pop3", verb.upper() if verb.upper() in POP3_VERBS else "OTHER",
                                time.monotonic() - started)
        finally:
            if client.mailbox is not None:
                self.locks.release(client.mailbox)

    async def _run(self, client: _Client, actions: list[Action]) -> bool:
        """Performs actions (and the follow-up actions they produce); False: close."""
        conn, session = client.conn, client.session
        pending = list(actions)
        out: list[bytes] = []
        while pending:
            action = pending.pop(0)
            if isinstance(action, Reply):
                out.append(action.data)
            elif isinstance(action, Close):
                await conn.send(b"".join(out))
                return False
            elif isinstance(action, StartTls):
                await conn.send(b"".join(out))
                out.clear()
                assert self.tls_context is not None
                await conn.start_tls(self.tls_context)
                session.tls_started()
            elif isinstance(action, Authenticate):
                pending[:0] = await self._login(client, action)
            elif isinstance(action, Retrieve):
                pending[:0] = session.message(action, await self._fetch(client, action))
            elif isinstance(action, Update):
                pending[:0] = session.updated(await self._update(client, action))
        if out:
            await conn.send(b"".join(out))
        return True

    async def _login(self, client: _Client, auth: Authenticate) -> list[Action]:
        session, address = client.session, client.conn.client
        if self.throttle.locked(address):
            return session.login_failed("too many failed logins; try again later",
                                        "LOGIN-DELAY")
        try:
            entry = await self.mail_store.directory.authenticate(auth.username, auth.password)
        except Exception as exc:
            log_event("pop3_error", message=f"directory: {exc}", vs=self.vs)
            return session.login_failed("temporary authentication failure", "SYS/TEMP")
        if entry is None or not entry.enabled:
            await asyncio.sleep(self.throttle.failure(address))
            return session.login_failed("authentication failed")
        self.throttle.success(address)
        if entry.server != self.vs:
            return session.login_failed(
                f"your mailbox is on virtual server {entry.server}, not this one", "SYS/PERM"
            )
        if not self.locks.acquire(entry.address):
            return session.login_failed("maildrop is locked by another session", "IN-USE")
        try:
            db = await database_of(self.mail_store, entry)
            uidvalidity = db.status(entry.address, INBOX).uidvalidity
            listing = db.list_messages(entry.address, INBOX)
        except StoreError as exc:
            self.locks.release(entry.address)
            log_event("pop3_error", message=f"maildrop of {entry.address}: {exc}", vs=self.vs)
            return session.login_failed("cannot open the maildrop now", "SYS/TEMP")
        client.mailbox, client.db = entry.address, db
        return session.login_succeeded(
            Maildrop(uidvalidity, tuple(listing.uids), tuple(listing.sizes))
        )

    async def _fetch(self, client: _Client, r: Retrieve) -> bytes | None:
        db, mailbox = client.db, client.mailbox
        assert db is not None and mailbox is not None
        try:
            if r.size <= INLINE_READ:
                # A WAL read of a small message takes tens of microseconds: cheaper on the
                # loop than a hop to a worker thread and back.
                return db.fetch_raw(mailbox, INBOX, r.uid)
            return await asyncio.to_thread(db.fetch_raw, mailbox, INBOX, r.uid)
        except MessageNotFoundError:
            return None

    async def _update(self, client: _Client, u: Update) -> str | None:
        db, mailbox = client.db, client.mailbox
        assert db is not None and mailbox is not None
        try:
            await db.set_flags(mailbox, INBOX, u.deleted_uids, ["\\Deleted"], "add")
            await db.expunge(mailbox, INBOX, u.deleted_uids)
        except StoreError as exc:
            return str(exc)
        return None


@dataclass
class _Client:
    conn: Connection
    session: Pop3Session
    mailbox: str | None = None  # locked by this session
    db: MailboxDatabase | None = None
