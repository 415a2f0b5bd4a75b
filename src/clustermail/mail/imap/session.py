"""One IMAP connection: the RFC 3501 state machine over the pure protocol layer and the store.

Bytes go through :class:`CommandFramer` and :func:`parse_command`; each typed
command runs in its handler, which writes untagged data and returns the tagged
result (or raises :class:`Reply`). Store errors are translated once, in
:meth:`ImapSession._run_command`; no exception text or traceback reaches the
client. Commands run one at a time in arrival order (pipelined input waits in
the framer).

Other sessions' changes reach the selected mailbox through the server's
:class:`ChangeHub`, which marks the session dirty; the next command boundary
(or IDLE at once) reads the store's change log and sends EXISTS/EXPUNGE/FETCH.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Protocol

from clustermail.mail.imap import commands as c
from clustermail.mail.imap import response as r
from clustermail.mail.imap.errors import ParseError
from clustermail.mail.imap.fetch import (
    PREFETCH,
    MessageFetcher,
    SearchMessage,
    fetch_parts,
    flag_search,
    needs_structure,
    prefetch_structures,
    sets_seen,
)
from clustermail.mail.imap.framing import (
    CommandFrame,
    CommandFramer,
    ContinuationNeeded,
    FrameEvent,
    FramingError,
    FramingLimits,
)
from clustermail.mail.imap.listing import list_responses, lsub_responses, status_response
from clustermail.mail.imap.mailbox_view import SYSTEM_FLAGS, MailboxView
from clustermail.mail.imap.parser import parse_auth_response, parse_command, parse_idle_done
from clustermail.mail.imap.search import SearchContext, matches
from clustermail.mail.imap.sequence import SequenceSet
from clustermail.mail.net.listener import AuthThrottle
from clustermail.mail.store import (
    FencedError,
    FolderExistsError,
    FolderNotFoundError,
    InvalidFlagError,
    InvalidFolderNameError,
    MailboxDatabase,
    MailboxNotFoundError,
    MessageNotFoundError,
    MessageTooLargeError,
    NotMountedError,
    QuotaExceededError,
    StoreError,
    names,
)
from clustermail.mail.store import flags as store_flags

if TYPE_CHECKING:
    from clustermail.mail.imap.server import ChangeHub

log = logging.getLogger(__name__)

DELIMITER = names.DELIMITER
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
    idle_timeout: float = 30 * 60.0  # RFC 3501 §5.4: at least 30 minutes, IDLE included
    limits: FramingLimits = field(default_factory=FramingLimits)
    server_name: str = "clustermail"


class Reply(Exception):
    """Ends a command with ``tag NO|BAD [code] text``."""

    def __init__(self, status: Literal["NO", "BAD"], text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.status: Literal["NO", "BAD"] = status
        self.text = text
        self.code = code


class _Closed(Exception):
    """The connection is over (EOF, LOGOUT, timeout, fatal error)."""


@dataclass(frozen=True, slots=True)
class Done:
    text: str
    code: str | None = None


def no(text: str, code: str | None = None) -> NoReturn:
    raise Reply("NO", text, code)


def bad(text: str, code: str | None = None) -> NoReturn:
    raise Reply("BAD", text, code)


# Commands during which an EXPUNGE response must not be sent (RFC 3501 §7.4.1).
_NO_EXPUNGE = (c.Fetch, c.Store, c.Search)


class ImapSession:
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
        self.state = c.SessionState.NOT_AUTHENTICATED
        self.user: str | None = None
        self.db: MailboxDatabase | None = None
        self.mailbox: str | None = None
        self.view: MailboxView | None = None
        self._unwatch: Callable[[], None] | None = None
        self._out: list[bytes] = []
        self._out_size = 0
        self.dirty = False
        self._changed = asyncio.Event()
        self._closing = False

    # ------------------------------------------------------------------ connection

    @property
    def secure(self) -> bool:
        return self.writer.get_extra_info("ssl_object") is not None

    @property
    def plaintext_ok(self) -> bool:
        return self.secure or self._plaintext_listener

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "SASL-IR", "LITERAL+", "ID", "ENABLE", "IDLE"]
        if self.state is c.SessionState.NOT_AUTHENTICATED:
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

    async def run(self) -> None:
        try:
            self.send(
                r.untagged_status(
                    "OK",
                    f"{self.config.server_name} IMAP4rev1 ready.",
                    r.code_capability(self.capabilities()),
                )
            )
            await self.flush()
            while not self._closing:
                event = await self._next_event(self.config.idle_timeout)
                if event is None:
                    break
                await self._handle_event(event)
                await self.flush()
        except _Closed:
            pass
        except TimeoutError:
            self.send(r.untagged_status("BYE", "Disconnected for inactivity."))
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except Exception:  # never a traceback to the client; keep the server up
            log.exception("IMAP session with %s failed", self.peer)
            self.send(r.untagged_status("BYE", "Internal error, closing the connection."))
        finally:
            await self.close()

    def close_soon(self, text: str = "Server shutting down.") -> None:
        """Ask the session to end (server shutdown): BYE, then the connection closes."""
        self.send(r.untagged_status("BYE", text))
        self._closing = True
        with contextlib.suppress(Exception):
            self.writer.write(b"".join(self._out))
        self._out.clear()
        self.writer.close()

    async def close(self) -> None:
        self._unselect()
        with contextlib.suppress(Exception):
            if self._out and not self.writer.is_closing():
                self.writer.write(b"".join(self._out))
                self._out.clear()
                await asyncio.wait_for(self.writer.drain(), 5)
        with contextlib.suppress(Exception):
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 5)

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

    async def _maybe_flush(self) -> None:
        if self._out_size >= _FLUSH_AT:
            await self.flush()

    # ------------------------------------------------------------------ input

    async def _next_event(self, timeout: float) -> FrameEvent | None:
        while True:
            event = self.framer.next_event()
            if event is not None:
                return event
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                return None
            self.framer.feed(data)

    async def _read_line(self) -> bytes:
        """One client line in line mode (AUTHENTICATE exchanges); literals are not parsed."""
        self.framer.line_mode = True
        try:
            event = await self._next_event(self.config.idle_timeout)
        finally:
            self.framer.line_mode = False
        if event is None:
            raise _Closed
        if isinstance(event, FramingError):
            self.send(r.render_parse_error(event.error))
            raise _Closed
        assert isinstance(event, CommandFrame)  # no literals in line mode
        return event.raw

    async def _handle_event(self, event: FrameEvent) -> None:
        if isinstance(event, ContinuationNeeded):
            self.send(r.continuation("Ready for literal data."))
            return
        if isinstance(event, FramingError):
            self.send(r.render_parse_error(event.error))
            if event.error.fatal or self.framer.closed:
                self.send(r.untagged_status("BYE", "Too much invalid input."))
                raise _Closed
            return
        try:
            command = parse_command(event.raw)
        except ParseError as exc:
            self.send(r.render_parse_error(exc))
            return
        await self._run_command(command)

    # ------------------------------------------------------------------ dispatch

    async def _run_command(self, cmd: c.AnyCommand) -> None:
        tag = cmd.tag
        if self.state not in cmd.valid_states:
            self.send(r.tagged(tag, "BAD", _state_error(cmd, self.state)))
            return
        handler = getattr(self, "_cmd_" + type(cmd).__name__.lower())
        try:
            done: Done = await handler(cmd)
        except _NoTagged:
            return
        except Reply as reply:
            await self._sync_after(cmd)
            self.send(r.tagged(tag, reply.status, reply.text, reply.code))
            return
        except (NotMountedError, FencedError):
            self.send(r.tagged(tag, "NO", "Mailbox database unavailable.", r.UNAVAILABLE))
            self.send(r.untagged_status("BYE", "Mailbox database went away, reconnect."))
            raise _Closed from None
        except StoreError as exc:
            status, text, code = _store_error(exc, cmd)
            await self._sync_after(cmd)
            self.send(r.tagged(tag, status, text, code))
            return
        await self._sync_after(cmd)
        self.send(r.tagged(tag, "OK", done.text, done.code))

    async def _sync_after(self, cmd: c.AnyCommand) -> None:
        # Always look (an index lookup): the store notifies listeners only after it has
        # answered the writer, so another session's change may be acknowledged to its
        # client before our notification arrives. The dirty flag wakes IDLE.
        if self.view is None:
            return
        expunge_ok = not isinstance(cmd, _NO_EXPUNGE) or bool(getattr(cmd, "uid", False))
        await self.sync(allow_expunge=expunge_ok)

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
            raise _Closed from None
        if changes.uidvalidity != view.uidvalidity:
            self.send(r.untagged_status("BYE", "Mailbox UIDVALIDITY changed, have to disconnect."))
            raise _Closed
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

    def on_change(self) -> None:
        """Called by the hub (on the loop) when the selected mailbox's mailbox changed."""
        self.dirty = True
        self._changed.set()

    # ------------------------------------------------------------------ helpers

    def _require(self) -> tuple[MailboxDatabase, str]:
        assert self.db is not None and self.mailbox is not None
        return self.db, self.mailbox

    def _selected(self) -> tuple[MailboxDatabase, str, MailboxView]:
        db, mailbox = self._require()
        assert self.view is not None
        return db, mailbox, self.view

    def _resolve(self, seqset: SequenceSet, uid: bool) -> list[int]:
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

    def _unselect(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        self.view = None
        self.dirty = False
        if self.state is c.SessionState.SELECTED:
            self.state = c.SessionState.AUTHENTICATED

    # ================================================================== any state

    async def _cmd_capability(self, cmd: c.Capability) -> Done:
        self.send(r.capability_data(self.capabilities()))
        return Done("Capability completed.")

    async def _cmd_noop(self, cmd: c.Noop) -> Done:
        self.dirty = True  # look even if no notification arrived yet
        return Done("NOOP completed.")

    async def _cmd_logout(self, cmd: c.Logout) -> Done:
        self.send(r.untagged_status("BYE", "Logging out."))
        self.send(r.tagged(cmd.tag, "OK", "Logout completed."))
        raise _Closed

    async def _cmd_id(self, cmd: c.Id) -> Done:
        self.send(r.id_data([("name", self.config.server_name)]))
        return Done("ID completed.")

    # ========================================================== not authenticated

    async def _cmd_starttls(self, cmd: c.StartTLS) -> Done:
        if self.tls is None:
            bad("STARTTLS is not available.")
        if self.secure:
            bad("TLS is already active.")
        self.send(r.tagged(cmd.tag, "OK", "Begin TLS negotiation now."))
        await self.flush()
        # Anything the client sent after STARTTLS and before the handshake was
        # sent in the clear and must not be run as a command (RFC 3501 §6.2.1).
        self.framer.discard_buffered()
        buffered = getattr(self.reader, "_buffer", None)
        if isinstance(buffered, bytearray):
            buffered.clear()
        try:
            await asyncio.wait_for(self.writer.start_tls(self.tls), 30)
        except (OSError, ssl.SSLError, TimeoutError):
            raise _Closed from None
        raise _NoTagged

    async def _cmd_login(self, cmd: c.Login) -> Done:
        if not self.plaintext_ok:
            no(
                "Plaintext authentication disallowed on non-secure connections.",
                r.PRIVACYREQUIRED,
            )
        return await self._authenticate(cmd.userid, cmd.password)

    async def _cmd_authenticate(self, cmd: c.Authenticate) -> Done:
        if cmd.mechanism != "PLAIN":
            no("Unsupported authentication mechanism.", r.CANNOT)
        if not self.plaintext_ok:
            no(
                "Plaintext authentication disallowed on non-secure connections.",
                r.PRIVACYREQUIRED,
            )
        data = cmd.initial_response
        if data is None:
            self.send(r.continuation(""))
            await self.flush()
            try:
                data = parse_auth_response(await self._read_line())
            except ParseError as exc:
                bad(exc.message)
            if data is None:
                bad("Authentication aborted by client.")
        parts = data.split(b"\x00")
        if len(parts) != 3:
            bad("Invalid AUTHENTICATE PLAIN data.")
        try:
            authzid, user, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            bad("Invalid AUTHENTICATE PLAIN data.")
        if authzid and authzid != user:
            no("Authorization as another user is not allowed.", r.AUTHORIZATIONFAILED)
        return await self._authenticate(user, password)

    async def _authenticate(self, user: str, password: str) -> Done:
        if self.throttle.locked(self.peer):
            no("Too many failed logins; try again later.", r.UNAVAILABLE)
        principal = None
        try:
            principal = await self.authenticator.authenticate(user, password)
        except Exception:
            log.exception("authenticator failed for %r", user)
            no("Temporary authentication failure.", r.UNAVAILABLE)
        if principal is None:
            await asyncio.sleep(self.throttle.failure(self.peer))
            no("Authentication failed.", r.AUTHENTICATIONFAILED)
        try:
            located = self.locate(principal)
            if inspect.isawaitable(located):
                located = await located
            db, mailbox = located
            if not db.has_mailbox(mailbox):
                raise MailboxNotFoundError(mailbox)
        except Exception:
            log.exception("no mailbox for %r", user)
            no("Your mailbox is not available right now.", r.UNAVAILABLE)
        self.throttle.success(self.peer)
        self.db, self.mailbox, self.user = db, mailbox, user
        self.state = c.SessionState.AUTHENTICATED
        return Done("Logged in.", r.code_capability(self.capabilities()))

    # ================================================================ authenticated

    async def _cmd_select(self, cmd: c.Select) -> Done:
        db, mailbox = self._require()
        if self.view is not None:
            self._unselect()
            self.send(r.untagged_status("OK", "Previous mailbox closed.", r.CLOSED))
        folder = names.normalize(cmd.mailbox)
        status = db.changes_since(mailbox, folder, 2**62)  # cheap: UIDVALIDITY, UIDNEXT, modseq
        listing = db.list_messages(mailbox, folder)
        view = MailboxView(
            folder,
            listing,
            uidvalidity=status.uidvalidity,
            uidnext=status.uidnext,
            modseq=status.highestmodseq,
            read_only=cmd.read_only,
        )
        pending = view.recent_in_store()
        if pending and not cmd.read_only:
            view.recent = set(await db.claim_recent(mailbox, folder))
        else:
            view.recent = set(pending)
        self.view = view
        self.state = c.SessionState.SELECTED
        self._unwatch = self.hub.watch(db, mailbox, self.on_change)
        flags = view.mailbox_flags()
        self.send(r.flags_data(flags))
        permanent = [] if cmd.read_only else [*SYSTEM_FLAGS, *sorted(view.known_keywords)]
        self.send(
            r.untagged_status(
                "OK",
                "Flags permitted." if not cmd.read_only else "No permanent flags permitted.",
                r.code_permanentflags(permanent, new_keywords=not cmd.read_only),
            )
        )
        self.send(r.exists(view.exists))
        self.send(r.recent(len(view.recent)))
        unseen = view.first_unseen()
        if unseen is not None:
            self.send(r.untagged_status("OK", "First unseen.", r.code_unseen(unseen)))
        self.send(r.untagged_status("OK", "UIDs valid", r.code_uidvalidity(view.uidvalidity)))
        self.send(r.untagged_status("OK", "Predicted next UID", r.code_uidnext(view.uidnext)))
        code = r.READ_ONLY if cmd.read_only else r.READ_WRITE
        return Done(f"{cmd.command_name.capitalize()} completed.", code)

    async def _cmd_create(self, cmd: c.Create) -> Done:
        db, mailbox = self._require()
        if cmd.special_use:
            no("Setting special-use attributes is not supported.", r.CANNOT)
        name = cmd.mailbox.rstrip(DELIMITER) or cmd.mailbox
        if names.normalize(name) == names.INBOX:
            no("Mailbox already exists.", r.ALREADYEXISTS)
        await db.create_folder(mailbox, name)
        return Done("Create completed.")

    async def _cmd_delete(self, cmd: c.Delete) -> Done:
        db, mailbox = self._require()
        folder = names.normalize(cmd.mailbox)
        if folder == names.INBOX:
            no("INBOX can't be deleted.", r.CANNOT)
        if self.view is not None and self.view.folder == folder:
            self._unselect()
            self.send(r.untagged_status("BYE", "Selected mailbox was deleted, have to disconnect."))
        await db.delete_folder(mailbox, folder)
        return Done("Delete completed.")

    async def _cmd_rename(self, cmd: c.Rename) -> Done:
        db, mailbox = self._require()
        old = names.normalize(cmd.old)
        new = names.normalize(cmd.new)
        if new == names.INBOX:
            no("Mailbox already exists.", r.ALREADYEXISTS)
        moved = await db.rename_folder(mailbox, old, new)
        if self.view is not None and old != names.INBOX:
            for before, after in moved:
                if self.view.folder == before:
                    self.view.folder = after
        return Done("Rename completed.")

    async def _cmd_subscribe(self, cmd: c.Subscribe) -> Done:
        db, mailbox = self._require()
        await db.subscribe(mailbox, cmd.mailbox, True)
        return Done("Subscribe completed.")

    async def _cmd_unsubscribe(self, cmd: c.Unsubscribe) -> Done:
        db, mailbox = self._require()
        await db.subscribe(mailbox, cmd.mailbox, False)
        return Done("Unsubscribe completed.")

    async def _cmd_list(self, cmd: c.List) -> Done:
        db, mailbox = self._require()
        for line in list_responses(db, mailbox, cmd):
            self.send(line)
        return Done("List completed.")

    async def _cmd_lsub(self, cmd: c.Lsub) -> Done:
        db, mailbox = self._require()
        for line in lsub_responses(db, mailbox, cmd):
            self.send(line)
        return Done("Lsub completed.")

    async def _cmd_status(self, cmd: c.Status) -> Done:
        db, mailbox = self._require()
        folder = names.normalize(cmd.mailbox)
        self.send(status_response(db, mailbox, folder, cmd.items))
        if self.view is not None and self.view.folder == folder:
            # RFC 3501 §6.3.10: STATUS is not for the selected mailbox (the client knows).
            return Done("Status on selected mailbox completed.", r.CLIENTBUG)
        return Done("Status completed.")

    async def _cmd_append(self, cmd: c.Append) -> Done:
        db, mailbox = self._require()
        if not cmd.message:
            no("Can't save a zero byte message.")
        folder = names.normalize(cmd.mailbox)
        when = None if cmd.internal_date is None else int(cmd.internal_date.timestamp())
        flags = list(cmd.flags)
        result = await db.append(mailbox, folder, cmd.message, flag_names=flags, internaldate=when)
        if self.view is not None and self.view.folder == folder:
            self.dirty = True
        return Done("Append completed.", r.code_appenduid(result.uidvalidity, result.uid))

    async def _cmd_enable(self, cmd: c.Enable) -> Done:
        # Nothing we announce can be enabled yet; no ENABLED line, as Dovecot does then.
        return Done("Enabled.")

    async def _cmd_idle(self, cmd: c.Idle) -> Done:
        self.send(r.continuation("idling"))
        await self.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.idle_timeout
        self.framer.line_mode = True
        try:
            while True:
                event = self.framer.next_event()
                if event is not None:
                    break
                self._changed.clear()
                if self.view is not None and self.dirty:
                    await self.sync(allow_expunge=True)
                    await self.flush()
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError
                data = await self._read_or_change(left)
                if data is None:
                    continue
                if not data:
                    raise _Closed
                self.framer.feed(data)
        finally:
            self.framer.line_mode = False
        if not isinstance(event, CommandFrame):
            bad("Expected DONE.")
        try:
            parse_idle_done(event.raw)
        except ParseError:
            bad("Expected DONE.")
        return Done("Idle completed.")

    async def _read_or_change(self, timeout: float) -> bytes | None:
        """Client bytes (b"" at EOF), or None when the mailbox changed first."""
        read = asyncio.ensure_future(self.reader.read(65536))
        change = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({read, change}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            change.cancel()
            if not read.done():
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await read
        if read.cancelled():
            if not self._changed.is_set():
                raise TimeoutError
            return None
        return read.result()

    async def _cmd_namespace(self, cmd: c.Namespace) -> Done:
        self.send(r.namespace_data([("", DELIMITER)], None, None))
        return Done("Namespace completed.")

    async def _cmd_getquotaroot(self, cmd: c.GetQuotaRoot) -> Done:
        db, mailbox = self._require()
        folder = names.normalize(cmd.mailbox)
        db.status(mailbox, folder)  # NONEXISTENT for a folder that is not there
        self.send(r.quotaroot_data(folder, [""]))
        self.send(self._quota_data(db, mailbox))
        return Done("Getquotaroot completed.")

    async def _cmd_getquota(self, cmd: c.GetQuota) -> Done:
        db, mailbox = self._require()
        if cmd.root != "":
            no("No such quota root.", r.NONEXISTENT)
        self.send(self._quota_data(db, mailbox))
        return Done("Getquota completed.")

    def _quota_data(self, db: MailboxDatabase, mailbox: str) -> bytes:
        report = db.quota(mailbox)
        limit = report.limits.prohibit_send_receive
        resources = [] if limit is None else [("STORAGE", report.used_bytes // 1024, limit // 1024)]
        return r.quota_data("", resources)

    async def _cmd_setquota(self, cmd: c.SetQuota) -> Done:
        no("Quotas are set by the administrator.", r.NOPERM)

    # ===================================================================== selected

    async def _cmd_check(self, cmd: c.Check) -> Done:
        self.dirty = True
        return Done("Check completed.")

    async def _cmd_close(self, cmd: c.Close) -> Done:
        db, mailbox, view = self._selected()
        if not view.read_only:
            with contextlib.suppress(FolderNotFoundError):
                await db.expunge(mailbox, view.folder)
        self._unselect()
        return Done("Close completed.")

    async def _cmd_unselect(self, cmd: c.Unselect) -> Done:
        self._unselect()
        return Done("Unselect completed.")

    async def _cmd_expunge(self, cmd: c.Expunge) -> Done:
        db, mailbox, view = self._selected()
        if view.read_only:
            no("Mailbox is read-only.", r.READ_ONLY)
        uids = None
        if cmd.uid_set is not None:
            seqs = self._resolve(cmd.uid_set, True)
            uids = [view.uids[s - 1] for s in seqs]
            if not uids:
                return Done("Expunge completed.")
        gone = await db.expunge(mailbox, view.folder, uids)
        for line in view.expunge_now(gone):
            self.send(line)
        self.dirty = True
        return Done("Expunge completed.")

    async def _cmd_search(self, cmd: c.Search) -> Done:
        db, mailbox, view = self._selected()
        context = SearchContext(max_seq=view.exists, max_uid=view.max_uid())
        found: list[int] = []
        hits = flag_search(cmd.key, view, context)
        if hits is not None:  # flags, numbers and UIDs only: no message is read
            numbers = view.uids if cmd.uid else range(1, view.exists + 1)
            self.send(r.search_data(itertools.compress(numbers, hits)))
            return Done("Search completed.")
        for seq in range(1, view.exists + 1):
            uid = view.uids[seq - 1]
            msg = SearchMessage(
                view, seq, MessageFetcher(db, mailbox, view.folder, uid, view.uidvalidity)
            )
            try:
                if matches(cmd.key, msg, context):
                    found.append(uid if cmd.uid else seq)
            except MessageNotFoundError:
                continue
        self.send(r.search_data(found))
        return Done("Search completed.")

    async def _cmd_fetch(self, cmd: c.Fetch) -> Done:
        db, mailbox, view = self._selected()
        if cmd.changed_since is not None:
            bad("CHANGEDSINCE needs CONDSTORE, which is not enabled.")
        seqs = self._resolve(cmd.sequence_set, cmd.uid)
        seen_now: set[int] = set()
        if sets_seen(cmd.items) and not view.read_only:
            unseen = [
                view.uids[s - 1]
                for s in seqs
                if not view.flags[s - 1] & store_flags.SEEN
                and view.uids[s - 1] not in view.pending_expunge
            ]
            if unseen:
                result = await db.set_flags(mailbox, view.folder, unseen, ["\\Seen"], "add")
                for change in result.changed:
                    seq = view.set_flags(
                        change.uid, change.flags & ~store_flags.RECENT, change.keywords
                    )
                    if seq is not None:
                        seen_now.add(seq)
                self.dirty = True
        asked_flags = any(isinstance(i, c.FetchAttribute) and i.name == "FLAGS" for i in cmd.items)
        missing = False
        prefetch = len(seqs) > 1 and needs_structure(cmd.items)
        for n, seq in enumerate(seqs):
            if prefetch and n % PREFETCH == 0:
                chunk = [view.uids[s - 1] for s in seqs[n : n + PREFETCH]]
                prefetch_structures(db, mailbox, view.folder, view.uidvalidity, chunk)
            uid = view.uids[seq - 1]
            fetcher = MessageFetcher(db, mailbox, view.folder, uid, view.uidvalidity)
            try:
                parts = fetch_parts(fetcher, view, seq, cmd.items, with_uid=cmd.uid)
            except MessageNotFoundError:
                missing = True
                continue
            if seq in seen_now and not asked_flags:
                parts.insert(0, b"FLAGS " + view.flag_bytes(seq))
            self.send(r.fetch_line(seq, parts))
            await self._maybe_flush()
        if missing:
            no("Some of the requested messages no longer exist.", r.EXPUNGEISSUED)
        return Done("Fetch completed.")

    async def _cmd_store(self, cmd: c.Store) -> Done:
        db, mailbox, view = self._selected()
        if cmd.unchanged_since is not None:
            bad("UNCHANGEDSINCE needs CONDSTORE, which is not enabled.")
        if view.read_only:
            no("Mailbox is read-only.", r.READ_ONLY)
        seqs = self._resolve(cmd.sequence_set, cmd.uid)
        flags = list(cmd.flags)
        store_flags.parse_flags(flags)  # BAD for an invalid flag (\\Recent too) up front
        uids = [view.uids[s - 1] for s in seqs if view.uids[s - 1] not in view.pending_expunge]
        mode = {"replace": "set", "add": "add", "remove": "remove"}[cmd.mode]
        changed: set[int] = set()
        if uids:
            result = await db.set_flags(mailbox, view.folder, uids, flags, mode)  # type: ignore[arg-type]
            for change in result.changed:
                seq = view.set_flags(
                    change.uid, change.flags & ~store_flags.RECENT, change.keywords
                )
                if seq is not None:
                    changed.add(seq)
            self.dirty = True
        keywords = [f for f in flags if not f.startswith("\\")]
        if keywords and cmd.mode != "remove" and view.new_keywords(keywords):
            for line in view.flags_announcement():
                self.send(line)
        if not cmd.silent:
            # Only messages whose flags changed (a no-op STORE is answered with OK alone).
            for seq in sorted(changed):
                parts = [b"UID %d" % view.uids[seq - 1]] if cmd.uid else []
                parts.append(b"FLAGS " + view.flag_bytes(seq))
                self.send(r.fetch_line(seq, parts))
                await self._maybe_flush()
        return Done("Store completed.")

    async def _cmd_copy(self, cmd: c.Copy) -> Done:
        return await self._copy_or_move(cmd.sequence_set, cmd.mailbox, cmd.uid, move=False)

    async def _cmd_move(self, cmd: c.Move) -> Done:
        return await self._copy_or_move(cmd.sequence_set, cmd.mailbox, cmd.uid, move=True)

    async def _copy_or_move(
        self, seqset: SequenceSet, target: str, uid: bool, *, move: bool
    ) -> Done:
        db, mailbox, view = self._selected()
        if move and view.read_only:
            no("Mailbox is read-only.", r.READ_ONLY)
        seqs = self._resolve(seqset, uid)
        dest = names.normalize(target)
        uids = [view.uids[s - 1] for s in seqs if view.uids[s - 1] not in view.pending_expunge]
        db.status(mailbox, dest)  # TRYCREATE before anything else when it does not exist
        what = "Move" if move else "Copy"
        if not uids:
            return Done("No messages found.") if uid else Done(f"{what} completed.")
        if move:
            result = await db.move(mailbox, view.folder, uids, dest)
        else:
            result = await db.copy(mailbox, view.folder, uids, dest)
        self.dirty = True
        if not result.source_uids:
            return Done(f"{what} completed.")
        code = r.code_copyuid(result.uidvalidity, result.source_uids, result.dest_uids)
        if move:
            self.send(r.untagged_status("OK", "Moved UIDs.", code))
            for line in view.expunge_now(result.expunged):
                self.send(line)
            return Done("Move completed.")
        return Done("Copy completed.", code)


class _NoTagged(Exception):
    """STARTTLS already sent its tagged answer."""


def _state_error(cmd: c.AnyCommand, state: c.SessionState) -> str:
    if state is c.SessionState.NOT_AUTHENTICATED:
        return "Log in first."
    if c.SessionState.SELECTED in cmd.valid_states:
        return "No mailbox selected."
    if c.SessionState.NOT_AUTHENTICATED in cmd.valid_states:
        return "Already logged in."
    return f"{cmd.name} is not allowed now."


def _store_error(
    exc: StoreError, cmd: c.AnyCommand
) -> tuple[Literal["NO", "BAD"], str, str | None]:
    creates = isinstance(cmd, c.Append | c.Copy | c.Move)
    if isinstance(exc, FolderNotFoundError | MailboxNotFoundError):
        return "NO", "Mailbox doesn't exist.", r.TRYCREATE if creates else r.NONEXISTENT
    if isinstance(exc, FolderExistsError):
        return "NO", "Mailbox already exists.", r.ALREADYEXISTS
    if isinstance(exc, InvalidFolderNameError):
        return "NO", str(exc) or "Invalid mailbox name.", r.CANNOT
    if isinstance(exc, QuotaExceededError):
        return "NO", "Quota exceeded.", r.OVERQUOTA
    if isinstance(exc, MessageTooLargeError):
        return "NO", "Message is too large.", r.TOOBIG
    if isinstance(exc, InvalidFlagError):
        return "BAD", "Invalid flag.", None
    if isinstance(exc, MessageNotFoundError):
        return "NO", "Some of the requested messages no longer exist.", r.EXPUNGEISSUED
    log.warning("store error in %s: %s", cmd.name, exc)
    return "NO", "Internal error, try again later.", r.SERVERBUG


__all__ = [
    "Authenticator",
    "Done",
    "ImapSession",
    "MailboxLocator",
    "Reply",
    "SessionConfig",
]
