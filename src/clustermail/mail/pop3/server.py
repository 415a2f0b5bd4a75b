"""The POP3 service of one virtual server: the asyncio shell around :mod:`.protocol`.

It reads lines (idle timeout counting complete lines, a pre-login deadline, line limit),
runs the state machine, and performs its actions: STLS (refused with input pending), login
against the directory (throttled: :mod:`clustermail.mail.net.login_guard`), the maildrop
lock (one session per mailbox; ``-ERR [IN-USE]``), reads of the INBOX, and at QUIT the
deletions (flag \\Deleted, then expunge those UIDs). Once logged in, a command that needs
no await is answered in the read callback (:meth:`Pop3Service._answer_now`).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from dataclasses import dataclass

from clustermail.logutil import log_event
from clustermail.mail import metrics
from clustermail.mail.backends import MailboxRef, MailStoreService
from clustermail.mail.net.listener import (
    WRITE_HIGH_WATER,
    AuthThrottle,
    Connection,
    Endpoint,
    LineTooLong,
    Listener,
    ListenerLimits,
    is_loopback,
)
from clustermail.mail.net.login_guard import cache_of, guarded_login
from clustermail.mail.pop3.protocol import (
    MAX_ARG_DIGITS,
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
    State,
    Update,
    err,
)
from clustermail.mail.queue.delivery import database_of
from clustermail.mail.store import MailboxDatabase, MessageNotFoundError, StoreError

INBOX = "INBOX"
INLINE_READ = 256 * 1024  # messages up to this size are read on the event loop
BUSY = b"-ERR [SYS/TEMP] too many connections; try again later\r\n"
#: A client must have logged in this long after connecting, or it is disconnected
#: (Dovecot's login processes: a fixed limit from the connection's start).
LOGIN_TIMEOUT = 60.0
LOGIN_TIMEOUT_REPLY = b"-ERR [SYS/TEMP] no login in time; closing\r\n"
IDLE_REPLY = b"-ERR autologout: idle for too long\r\n"
#: Seconds a connection closed for an overlong line waits before the close.
JUNK_CLOSE_DELAY = 1.0


#: Command names counted by name in the metrics (anything else counts as OTHER).
POP3_VERBS = frozenset({"USER", "PASS", "APOP", "AUTH", "STAT", "LIST", "RETR", "DELE", "NOOP",
                        "RSET", "QUIT", "TOP", "UIDL", "CAPA", "STLS"})
#: Commands answered in the read callback once logged in (see Pop3Service._answer_now):
#: in TRANSACTION their only actions are replies and inline reads of a message.
ANSWER_NOW = frozenset({"STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "NOOP", "RSET"})


def _verb(line: bytes) -> str:
    return line.split(b" ", 1)[0].strip().decode("ascii", "replace")[:8].upper()


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
        login_timeout: float = LOGIN_TIMEOUT,
    ) -> None:
        self.vs = vs
        self.login_timeout = login_timeout
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
        conn.timeout_reply = IDLE_REPLY
        conn.set_deadline(self.login_timeout, LOGIN_TIMEOUT_REPLY)
        try:
            await conn.send(client.session.greeting().data)
            while True:
                try:
                    line = await conn.readline(MAX_LINE)
                except LineTooLong:
                    # As Dovecot: answer and hang up, without reading the rest of it.
                    await conn.send(err(f"line too long (at most {MAX_LINE} bytes); "
                                        "closing").data)
                    # A tarpit before the close (reading nothing): a client sending junk
                    # reconnects once a second at most, not at wire speed.
                    await asyncio.sleep(JUNK_CLOSE_DELAY)
                    return
                started = time.monotonic()
                verb = _verb(line)
                if not await self._run(client, client.session.handle(line)):
                    return
                metrics.command("pop3", verb if verb in POP3_VERBS else "OTHER",
                                time.monotonic() - started)
                # Fairness: pipelined lines are read from the buffer without a pause; yield
                # after each so one client cannot hold the event loop. With nothing
                # buffered the next read waits anyway (a yield then costs a loop turn).
                if conn.pending_input():
                    await asyncio.sleep(0)
        finally:
            conn.set_line_hook(None)
            if client.mailbox is not None:
                self.locks.release(client.mailbox)

    def _answer_now(self, client: _Client, line: bytes) -> bool:
        """A TRANSACTION command answered in the read callback, while the session waits
        for its next line (the line hook of :class:`Connection`): the same state machine
        and replies as :meth:`_serve`, without the task wake-up and second loop turn per
        command that an asyncio stream costs (the POP3 RETR profile in
        docs/performance-mail.md). Anything else — a busy session, a long line, a full
        send buffer, a message too large to read on the loop — returns False and goes
        the usual way."""
        conn, session = client.conn, client.session
        transport = conn.writer.transport
        if (len(line) > MAX_LINE or not session.waits_in_transaction()
                or transport.is_closing()
                or transport.get_write_buffer_size() > WRITE_HIGH_WATER):
            return False
        started = time.monotonic()
        try:
            retrieve = session.retrieve_now(line, INLINE_READ)
            if retrieve is not None:  # RETR n, the command this path is for, in short
                verb = "RETR"
                data = session.message_reply(retrieve, self._read_inline(client, retrieve))
            else:
                verb = _verb(line)
                if verb not in ANSWER_NOW or self._too_large(session, verb, line):
                    return False
                data = self._replies(client, verb, line)
        except Exception as exc:
            # As Listener does for a handler that raised (a fenced or dismounted store):
            # logged, and this connection ends; the waiting handler sees the close.
            log_event("pop3_error", message=f"session failed: {type(exc).__name__}: {exc}",
                      client=conn.client)
            transport.abort()
            return True
        transport.write(data)
        conn.touch()
        metrics.command("pop3", verb, time.monotonic() - started)
        return True

    def _replies(self, client: _Client, verb: str, line: bytes) -> bytes:
        """The state machine's answer to ``line``, reading a message inline if need be."""
        session = client.session
        out: list[bytes] = []
        for action in session.handle(line):
            if isinstance(action, Retrieve):
                action, = session.message(action, self._read_inline(client, action))
            if not isinstance(action, Reply):
                raise RuntimeError(f"{verb}: unexpected action {action!r}")
            out.append(action.data)
        return b"".join(out)

    @staticmethod
    def _too_large(session: Pop3Session, verb: str, line: bytes) -> bool:
        """RETR/TOP of a message read off the loop (INLINE_READ)."""
        if verb not in ("RETR", "TOP") or session.maildrop is None:
            return False
        args = line.split()
        if len(args) < 2 or not args[1].isdigit() or len(args[1]) > MAX_ARG_DIGITS:
            return False  # the state machine answers -ERR
        n, sizes = int(args[1]), session.maildrop.sizes
        return 1 <= n <= len(sizes) and sizes[n - 1] > INLINE_READ

    def _read_inline(self, client: _Client, r: Retrieve) -> bytes | None:
        db, mailbox = client.db, client.mailbox
        assert db is not None and mailbox is not None
        try:
            return db.fetch_raw(mailbox, INBOX, r.uid)
        except MessageNotFoundError:
            return None

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
                if conn.pending_input():
                    out.append(session.stls_refused().data)
                    continue
                out.append(session.stls_ready().data)
                await conn.send(b"".join(out))
                out.clear()
                assert self.tls_context is not None
                await conn.start_tls(self.tls_context)
                session.tls_started()
            elif isinstance(action, Authenticate):
                pending[:0] = await self._login(client, action)
                if session.state is State.TRANSACTION:
                    conn.set_deadline(None)
                    conn.set_line_hook(functools.partial(self._answer_now, client))
            elif isinstance(action, Retrieve):
                pending[:0] = session.message(action, await self._fetch(client, action))
            elif isinstance(action, Update):
                pending[:0] = session.updated(await self._update(client, action))
        if out:
            await conn.send(b"".join(out))
        return True

    async def _login(self, client: _Client, auth: Authenticate) -> list[Action]:
        session, address = client.session, client.conn.client
        directory = self.mail_store.directory

        async def check() -> MailboxRef | None:
            entry = await directory.authenticate(auth.username, auth.password)
            return entry if entry is not None and entry.enabled else None

        login = await guarded_login(
            self.throttle, address, auth.username, check,
            cached=cache_of(directory, auth.username, auth.password),
        )
        if login.outcome == "locked":
            return session.login_failed("too many failed logins; try again later",
                                        "LOGIN-DELAY")
        if login.outcome == "busy":
            return session.login_failed("authentication service busy; try again later",
                                        "SYS/TEMP")
        if login.outcome == "error":
            log_event("pop3_error", message="directory: password check failed", vs=self.vs)
            return session.login_failed("temporary authentication failure", "SYS/TEMP")
        entry = login.principal
        if entry is None:
            return session.login_failed("authentication failed")
        if entry.server != self.vs:
            return session.login_failed(
                f"your mailbox is on virtual server {entry.server}, not this one", "SYS/PERM"
            )
        mailbox = entry.mailbox_id
        if not self.locks.acquire(mailbox):
            return session.login_failed("maildrop is locked by another session", "IN-USE")
        try:
            db = await database_of(self.mail_store, entry)
            uidvalidity = db.status(mailbox, INBOX).uidvalidity
            listing = db.list_messages(mailbox, INBOX)
        except StoreError as exc:
            self.locks.release(mailbox)
            log_event("pop3_error", message=f"maildrop of {entry.address}: {exc}", vs=self.vs)
            return session.login_failed("cannot open the maildrop now", "SYS/TEMP")
        client.mailbox, client.db = mailbox, db
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
