"""What every command handler of one IMAP connection works with: the connection and its
output buffer, the session state, the logged-in user's database and the selected
mailbox's :class:`MailboxView`, and the helpers the handlers share.

The session loop (:mod:`clustermail.mail.imap.session`) builds on it; handlers
(:mod:`clustermail.mail.imap.handlers`) take it as their first argument.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Protocol, TypeVar

from clustermail.mail.imap import idle_timeout, user_connections
from clustermail.mail.imap import response as r
from clustermail.mail.imap.change_hub import ChangeHub
from clustermail.mail.imap.command_table import CommandSpec, SessionState
from clustermail.mail.imap.framing import (
    CommandFrame,
    CommandFramer,
    FrameEvent,
    FramingError,
    FramingLimits,
)
from clustermail.mail.imap.idle_timeout import KEEPALIVE as IDLE_KEEPALIVE
from clustermail.mail.imap.mailbox_view import MailboxView
from clustermail.mail.imap.outcome import SessionClosed, bad, no
from clustermail.mail.imap.sequence import SequenceSet
from clustermail.mail.imap.user_connections import UserConnections
from clustermail.mail.net.listener import AuthThrottle
from clustermail.mail.store import (
    FolderChanges,
    FolderNotFoundError,
    MailboxDatabase,
    MailboxNotFoundError,
)
from clustermail.mail.store import flags as store_flags

_FLUSH_AT = 256 * 1024  # write out long FETCH/SEARCH answers in pieces of about this size

P = ParamSpec("P")
T = TypeVar("T")

#: Seconds from connect to a successful login (Dovecot's login processes also give a
#: client a fixed time to log in, counted from the connect, not reset by input).
LOGIN_TIMEOUT = 60.0
#: Seconds a write may wait for the client to read before the connection is aborted.
WRITE_TIMEOUT = 60.0
#: BAD answers in a row after which the connection is closed (Dovecot's imap-login closes
#: after 10 invalid commands: "Too many invalid IMAP commands.").
MAX_BAD_COMMANDS = 10
#: From this many BAD answers in a row on, each one (and the goodbye after too many, or
#: after a fatal error) waits ``error_sleep_time`` without reading from the client: the
#: tarpit of Postfix's smtpd_soft_error_limit and smtpd_error_sleep_time. A client that
#: sends garbage then costs the server a second per command instead of its wire speed.
SOFT_BAD_COMMANDS = 3
ERROR_SLEEP_TIME = 1.0
#: While an overlong line is dropped, the client's input is read at most this fast (bytes
#: per second): no client needs a command line past the limit, so one that sends them
#: gets a slow server instead of all of its CPU.
DISCARD_RATE = 256 * 1024
_READ_SIZE = 65536
#: A deadline timer firing this close before the deadline counts as on time (the loop may
#: run timers up to its clock resolution early).
_TIMER_SLACK = 0.001


class WriteTimeout(SessionClosed):
    """The client stopped reading: the connection was aborted (nothing more can be sent)."""


class Authenticator(Protocol):
    """Checks a user's password; the principal it returns is handed to the locator."""

    async def authenticate(self, username: str, password: str) -> object | None: ...


#: principal → (mounted database, the store's mailbox id); may be async.
MailboxLocator = Callable[
    [Any], "tuple[MailboxDatabase, str] | Awaitable[tuple[MailboxDatabase, str]]"
]


@dataclass(frozen=True, slots=True)
class SessionConfig:
    #: After login: seconds without a complete command (RFC 3501 §5.4), IDLE included.
    idle_timeout: float = idle_timeout.DEFAULT
    #: Seconds between the ``* OK Still here`` an idling session gets (Dovecot's
    #: imap_idle_notify_interval, 2 minutes).
    idle_keepalive: float = IDLE_KEEPALIVE
    #: Before login: seconds from connect; commands do not extend it.
    login_timeout: float = LOGIN_TIMEOUT
    write_timeout: float = WRITE_TIMEOUT
    #: Logged-in connections of one user from one address (Dovecot's
    #: mail_max_userip_connections).
    max_userip_connections: int = user_connections.DEFAULT_LIMIT
    #: Consecutive BAD answers before ``* BYE Too many invalid IMAP commands.``
    max_bad_commands: int = MAX_BAD_COMMANDS
    #: Seconds each BAD answer past SOFT_BAD_COMMANDS in a row waits (0: no tarpit).
    error_sleep_time: float = ERROR_SLEEP_TIME
    #: Bytes per second the rest of an overlong line is read at.
    discard_rate: int = DISCARD_RATE
    limits: FramingLimits = field(default_factory=FramingLimits)
    server_name: str = "clustermail"

    def __post_init__(self) -> None:
        for name in (
            "idle_timeout",
            "idle_keepalive",
            "login_timeout",
            "write_timeout",
            "max_userip_connections",
            "max_bad_commands",
            "discard_rate",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"SessionConfig.{name} must be positive")
        if not self.error_sleep_time >= 0:
            raise ValueError("SessionConfig.error_sleep_time must not be negative")


class SessionContext:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        authenticator: Authenticator,
        locate: MailboxLocator,
        hub: ChangeHub,
        throttle: AuthThrottle,
        config: SessionConfig,
        tls: ssl.SSLContext | None,
        plaintext_allowed: bool,
        workers: Executor | None = None,
        user_connections: UserConnections | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.authenticator = authenticator
        self.locate = locate
        self.hub = hub
        self.throttle = throttle
        self.config = config
        self.tls = tls
        self._plaintext_listener = plaintext_allowed
        self._workers = workers
        self._user_connections = user_connections or UserConnections()
        self._counted: tuple[str, str] | None = None  # (user, address) while logged in
        peer = writer.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        self.framer = CommandFramer(config.limits)
        self.state = SessionState.NOT_AUTHENTICATED
        self.user: str | None = None
        self.db: MailboxDatabase | None = None
        self.mailbox: str | None = None
        self.view: MailboxView | None = None
        #: The running command read the view from the store and awaited nothing since:
        #: the look for news after it can be skipped (news is seen by the next command).
        self.view_current = False
        #: The table entry of the command being run (None between commands).
        self.running: CommandSpec[Any] | None = None
        self._unwatch: Callable[[], None] | None = None
        self._out: list[bytes] = []
        self._out_size = 0
        self.dirty = False
        #: Set by the hub when the selected mailbox changed (wakes IDLE).
        self.changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        #: When reading the next command times out: fixed from the connect until login,
        #: then restarted by each complete command (a byte trickle does not restart it).
        self.deadline = loop.time() + config.login_timeout
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when _deadline_timer fires
        self._reading: asyncio.Task[Any] | None = None  # the task in a read from the client
        self._read_timed_out = False

    # ------------------------------------------------------------------ connection

    @property
    def secure(self) -> bool:
        return self.writer.get_extra_info("ssl_object") is not None

    @property
    def plaintext_ok(self) -> bool:
        return self.secure or self._plaintext_listener

    def capabilities(self) -> list[str]:
        if self.state is SessionState.NOT_AUTHENTICATED:
            # LITERAL- (RFC 7888 §5): an anonymous client's {n+} is at most 4096 bytes.
            caps = ["IMAP4rev1", "SASL-IR", "LITERAL-", "ID", "ENABLE", "IDLE"]
            if self.tls is not None and not self.secure:
                caps.append("STARTTLS")
            caps.append("AUTH=PLAIN" if self.plaintext_ok else "LOGINDISABLED")
            return caps
        return [
            "IMAP4rev1",
            "SASL-IR",
            "LITERAL+",
            "ID",
            "ENABLE",
            "IDLE",
            "NAMESPACE",
            "UIDPLUS",
            "MOVE",
            "UNSELECT",
            "CHILDREN",
            "SPECIAL-USE",
            f"APPENDLIMIT={self.append_limit()}",
            "QUOTA",
        ]

    def append_limit(self) -> int:
        """The largest message APPEND takes (announced as APPENDLIMIT)."""
        limit = self.config.limits.max_literal
        if self.db is not None:
            limit = min(limit, self.db.settings.max_message_bytes)
        return limit

    # ------------------------------------------------------------------ output

    def send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)

    def send_all(self, lines: list[bytes]) -> None:
        """:meth:`send` of each line, in one step (a sync's untagged answers)."""
        self._out += lines
        self._out_size += sum(map(len, lines))

    async def flush(self) -> None:
        """Sends what is buffered. A client that does not read it within the write
        timeout has its connection aborted (:class:`WriteTimeout`): a full send buffer
        must not hold the session, its memory and its connection slot forever."""
        if self._out:
            self.writer.write(b"".join(self._out))
            self._out.clear()
            self._out_size = 0
        transport = self.writer.transport
        if not transport.get_write_buffer_size():
            # All sent: the transport cannot have paused writing, so drain() does not wait;
            # it raises a connection error, which an open transport has not seen. No timer.
            if transport.is_closing():
                await self.writer.drain()
            return
        try:
            async with asyncio.timeout(self.config.write_timeout):  # no task: drain()
                await self.writer.drain()  # returns at once unless the buffer is full
        except TimeoutError:
            self.writer.transport.abort()
            raise WriteTimeout from None

    async def maybe_flush(self) -> None:
        """Writes out what is buffered once it is large (long FETCH/SEARCH answers)."""
        if self._out_size >= _FLUSH_AT:
            await self.flush()

    # ------------------------------------------------------------------ input

    def restart_timer(self) -> None:
        """A complete command was read: the next one has the idle timeout from now (after
        login; before it, the login deadline stays)."""
        if self.state is not SessionState.NOT_AUTHENTICATED:
            self.deadline = asyncio.get_running_loop().time() + self.config.idle_timeout

    async def next_event(self) -> FrameEvent | None:
        """The next framing event; TimeoutError past :attr:`deadline`, None at EOF."""
        loop = asyncio.get_running_loop()
        while True:
            event = self.framer.next_event()
            if event is not None:
                return event
            if self.deadline - loop.time() <= 0:
                raise TimeoutError
            data = await self._read_until_deadline(loop)
            if not data:
                return None
            self.framer.feed(data)
            if self.framer.discarding:  # the rest of an overlong line: at DISCARD_RATE
                await asyncio.sleep(len(data) / self.config.discard_rate)

    async def _read_until_deadline(self, loop: asyncio.AbstractEventLoop) -> bytes:
        """One read from the client, cancelled (TimeoutError) once :attr:`deadline` passes.
        One timer serves many reads: it is armed for the deadline and, when it fires before
        a later deadline, moved on (restart_timer only sets the attribute). A timer per read
        (``asyncio.timeout``) cost a heap entry and a cancellation per command."""
        timer = self._deadline_timer
        if timer is None or self._timer_at > self.deadline:
            if timer is not None:
                timer.cancel()
            self._timer_at = self.deadline
            self._deadline_timer = loop.call_at(self.deadline, self._deadline_passed, loop)
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self._reading = task
        try:
            return await self.reader.read(_READ_SIZE)
        except asyncio.CancelledError:
            if self._read_timed_out:
                self._read_timed_out = False
                if task.uncancel() <= cancelling:  # ours alone (as asyncio.timeout decides)
                    raise TimeoutError from None
            raise
        finally:
            self._reading = None

    def _deadline_passed(self, loop: asyncio.AbstractEventLoop) -> None:
        self._deadline_timer = None
        task = self._reading
        if task is None:
            return  # a command runs: the next read arms the timer again
        if loop.time() < self.deadline - _TIMER_SLACK:  # the deadline moved on meanwhile
            self._timer_at = self.deadline
            self._deadline_timer = loop.call_at(self.deadline, self._deadline_passed, loop)
            return
        self._read_timed_out = True
        task.cancel()

    def stop_timer(self) -> None:
        """The connection is over: drop the read deadline's timer."""
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None

    async def offload(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Runs ``fn`` in the server's worker threads: work that grows with message sizes
        (body SEARCH, large FETCH) must not stall the event loop every session shares."""
        if self._workers is None:
            return fn(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._workers, lambda: fn(*args, **kwargs))

    async def read_line(self) -> bytes:
        """One client line in line mode (AUTHENTICATE exchanges); literals are not parsed."""
        self.framer.line_mode = True
        try:
            event = await self.next_event()
        finally:
            self.framer.line_mode = False
        if event is None:
            raise SessionClosed
        if isinstance(event, FramingError):
            self.send(r.render_parse_error(event.error))
            raise SessionClosed
        assert isinstance(event, CommandFrame)  # no literals in line mode
        return event.raw

    # ------------------------------------------------------------------ selected mailbox

    def login(self, user: str, db: MailboxDatabase, mailbox: str) -> None:
        connections = self._user_connections
        if not connections.acquire(user, self.peer):
            no(
                f"Maximum number of connections from user+IP exceeded "
                f"(mail_max_userip_connections={connections.limit}).",
                r.LIMIT,
            )
        self._counted = (user, self.peer)
        self.db, self.mailbox, self.user = db, mailbox, user
        self.state = SessionState.AUTHENTICATED
        self.framer.authenticated = True

    def select(self, db: MailboxDatabase, mailbox: str, view: MailboxView) -> None:
        self.view = view
        self.state = SessionState.SELECTED
        self._unwatch = self.hub.watch(db, mailbox, self.on_change)

    def logged_out(self) -> None:
        """The connection is over: it no longer counts for its user and address."""
        if self._counted is not None:
            self._user_connections.release(*self._counted)
            self._counted = None

    def unselect(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        self.view = None
        self.view_current = False
        self.dirty = False
        if self.state is SessionState.SELECTED:
            self.state = SessionState.AUTHENTICATED

    def on_change(self) -> None:
        """Called by the hub (on the loop) when the selected mailbox's mailbox changed."""
        self.dirty = True
        self.changed.set()

    async def sync(self, *, allow_expunge: bool) -> None:
        """Bring the view up to date with the store and send what changed."""
        view, db, mailbox = self.view, self.db, self.mailbox
        if view is None or db is None or mailbox is None:
            return
        self.dirty = False
        # Nothing committed since the view was last brought up to date: nothing to read
        # (the count is raised before a commit's callers are answered, see change_count).
        # Expunges held back earlier may still be due.
        count = db.change_count
        if count == view.change_count and not (allow_expunge and view.pending_expunge):
            return
        # Only flag changes since the last look (other sessions' STOREs): from memory.
        recent = db.flag_changes_since(view.uidvalidity, view.modseq, view.change_count)
        try:
            if recent is not None:
                changes = FolderChanges(view.uidvalidity, recent[0], view.uidnext, recent[1], [])
            else:
                changes = db.changes_since(mailbox, view.folder, view.modseq)
        except (FolderNotFoundError, MailboxNotFoundError):
            self.send(r.untagged_status("BYE", "Selected mailbox was deleted, have to disconnect."))
            raise SessionClosed from None
        if changes.uidvalidity != view.uidvalidity:
            self.send(r.untagged_status("BYE", "Mailbox UIDVALIDITY changed, have to disconnect."))
            raise SessionClosed
        top = view.max_uid()
        new = [ch for ch in changes.changed if ch.uid > top]
        listing = None
        claimed: list[int] = []
        if new:
            listing = db.folder_snapshot(mailbox, view.folder).listing()
            if not view.read_only and any(ch.flags & store_flags.RECENT for ch in new):
                claimed = await db.claim_recent(mailbox, view.folder)
        self.send_all(view.sync(changes, listing, claimed, allow_expunge=allow_expunge))
        view.change_count = count

    def expunge_now(self, view: MailboxView, uids: Iterable[int]) -> None:
        """Reports messages the running command expunged: at once if the command table
        says it breaks sequence numbers, else at the next moment EXPUNGE is allowed."""
        if self.running is not None and self.running.breaks_seqs:
            for line in view.expunge_now(uids):
                self.send(line)
        else:
            view.defer_expunge(uids)

    # ------------------------------------------------------------------ for handlers

    def require(self) -> tuple[MailboxDatabase, str]:
        """The logged-in user's database and mailbox (the table allows no command that
        needs them before login)."""
        assert self.db is not None and self.mailbox is not None
        return self.db, self.mailbox

    def selected(self) -> tuple[MailboxDatabase, str, MailboxView]:
        db, mailbox = self.require()
        assert self.view is not None
        return db, mailbox, self.view

    def resolve(self, seqset: SequenceSet, uid: bool) -> list[int]:
        """Sequence numbers named by a set of message numbers or UIDs."""
        view = self.view
        assert view is not None
        if uid:
            return list(view.seqs_for_uids(seqset.intervals(view.max_uid())))
        n = view.exists
        if len(seqset.ranges) == 1:  # one message number, the common case, in short
            only = seqset.ranges[0]
            if only.start is not None and only.start == only.end and 1 <= only.start <= n:
                return [only.start]
        for rng in seqset.ranges:
            for bound in (rng.start, rng.end):
                if (bound is None and n == 0) or (bound is not None and bound > n):
                    bad("Invalid messageset")
        return list(seqset.iter_numbers(n))
