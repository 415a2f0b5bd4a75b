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
from dataclasses import dataclass, field
from typing import Any, Protocol

from clustermail.mail.imap import idle_timeout
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
from clustermail.mail.imap.mailbox_view import MailboxView
from clustermail.mail.imap.outcome import SessionClosed, bad
from clustermail.mail.imap.sequence import SequenceSet
from clustermail.mail.net.listener import AuthThrottle
from clustermail.mail.store import FolderNotFoundError, MailboxDatabase, MailboxNotFoundError
from clustermail.mail.store import flags as store_flags

_FLUSH_AT = 256 * 1024  # write out long FETCH/SEARCH answers in pieces of about this size


class Authenticator(Protocol):
    """Checks a user's password; the principal it returns is handed to the locator."""

    async def authenticate(self, username: str, password: str) -> object | None: ...


#: principal → (mounted database, the store's mailbox id); may be async.
MailboxLocator = Callable[
    [Any], "tuple[MailboxDatabase, str] | Awaitable[tuple[MailboxDatabase, str]]"
]


@dataclass(frozen=True, slots=True)
class SessionConfig:
    idle_timeout: float = idle_timeout.DEFAULT  # RFC 3501 §5.4, IDLE included
    limits: FramingLimits = field(default_factory=FramingLimits)
    server_name: str = "clustermail"


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
        peer = writer.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        self.framer = CommandFramer(config.limits)
        self.state = SessionState.NOT_AUTHENTICATED
        self.user: str | None = None
        self.db: MailboxDatabase | None = None
        self.mailbox: str | None = None
        self.view: MailboxView | None = None
        #: The table entry of the command being run (None between commands).
        self.running: CommandSpec[Any] | None = None
        self._unwatch: Callable[[], None] | None = None
        self._out: list[bytes] = []
        self._out_size = 0
        self.dirty = False
        #: Set by the hub when the selected mailbox changed (wakes IDLE).
        self.changed = asyncio.Event()

    # ------------------------------------------------------------------ connection

    @property
    def secure(self) -> bool:
        return self.writer.get_extra_info("ssl_object") is not None

    @property
    def plaintext_ok(self) -> bool:
        return self.secure or self._plaintext_listener

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "SASL-IR", "LITERAL+", "ID", "ENABLE", "IDLE"]
        if self.state is SessionState.NOT_AUTHENTICATED:
            if self.tls is not None and not self.secure:
                caps.append("STARTTLS")
            caps.append("AUTH=PLAIN" if self.plaintext_ok else "LOGINDISABLED")
            return caps
        return [
            *caps,
            "NAMESPACE",
            "UIDPLUS",
            "MOVE",
            "UNSELECT",
            "CHILDREN",
            "SPECIAL-USE",
            f"APPENDLIMIT={self._append_limit()}",
            "QUOTA",
        ]

    def _append_limit(self) -> int:
        limit = self.config.limits.max_literal
        if self.db is not None:
            limit = min(limit, self.db.settings.max_message_bytes)
        return limit

    # ------------------------------------------------------------------ output

    def send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)

    async def flush(self) -> None:
        if self._out:
            self.writer.write(b"".join(self._out))
            self._out.clear()
            self._out_size = 0
        await self.writer.drain()

    async def maybe_flush(self) -> None:
        """Writes out what is buffered once it is large (long FETCH/SEARCH answers)."""
        if self._out_size >= _FLUSH_AT:
            await self.flush()

    # ------------------------------------------------------------------ input

    async def next_event(self, timeout: float) -> FrameEvent | None:
        while True:
            event = self.framer.next_event()
            if event is not None:
                return event
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                return None
            self.framer.feed(data)

    async def read_line(self) -> bytes:
        """One client line in line mode (AUTHENTICATE exchanges); literals are not parsed."""
        self.framer.line_mode = True
        try:
            event = await self.next_event(self.config.idle_timeout)
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
        self.db, self.mailbox, self.user = db, mailbox, user
        self.state = SessionState.AUTHENTICATED

    def select(self, db: MailboxDatabase, mailbox: str, view: MailboxView) -> None:
        self.view = view
        self.state = SessionState.SELECTED
        self._unwatch = self.hub.watch(db, mailbox, self.on_change)

    def unselect(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        self.view = None
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
        try:
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
            listing = db.list_messages(mailbox, view.folder)
            if not view.read_only and any(ch.flags & store_flags.RECENT for ch in new):
                claimed = await db.claim_recent(mailbox, view.folder)
        for line in view.sync(changes, listing, claimed, allow_expunge=allow_expunge):
            self.send(line)

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
        for rng in seqset.ranges:
            for bound in (rng.start, rng.end):
                if (bound is None and n == 0) or (bound is not None and bound > n):
                    bad("Invalid messageset")
        return list(seqset.iter_numbers(n))
