"""One IMAP connection: the RFC 3501 state machine over the pure protocol layer and the store.

Bytes go through :class:`CommandFramer` and :func:`parse_command`; each typed
command runs in its handler (:mod:`clustermail.mail.imap.handlers`), which writes
untagged data and returns the tagged result (or raises :class:`Reply`). The loop
looks the command up in the command table (:mod:`clustermail.mail.imap.command_table`)
and enforces what it declares: the states a command is allowed in, and when EXPUNGE
responses may be sent. Store errors are translated once, in
:meth:`ImapSession._run_command`; no exception text or traceback reaches the client.
Commands run one at a time in arrival order (pipelined input waits in the framer).

Timers count commands, not bytes: before login the session has ``login_timeout``
seconds from the connect; after it, each complete command restarts ``idle_timeout``.
Every write waits at most ``write_timeout`` for the client to read, then the connection
is aborted. An APPEND's ``+`` is sent only after :meth:`ImapSession._may_append` found
the command allowed, its folder there and the message within the size limit and quota.

Other sessions' changes reach the selected mailbox through the server's
:class:`~clustermail.mail.imap.change_hub.ChangeHub`, which marks the session dirty;
the next command boundary (or IDLE at once) reads the store's change log and sends
EXISTS/EXPUNGE/FETCH.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from typing import Literal

from clustermail.mail import metrics
from clustermail.mail.imap import commands as c
from clustermail.mail.imap import response as r
from clustermail.mail.imap.command_table import CommandSpec, CommandTable, SessionState
from clustermail.mail.imap.context import (
    SOFT_BAD_COMMANDS,
    Authenticator,
    MailboxLocator,
    SessionConfig,
    SessionContext,
)
from clustermail.mail.imap.errors import ParseError
from clustermail.mail.imap.framing import (
    LITERAL_HEADER_RE,
    ContinuationNeeded,
    FrameEvent,
    FramingError,
)
from clustermail.mail.imap.handlers import any_state, authenticated, not_authenticated, selected
from clustermail.mail.imap.outcome import AlreadyAnswered, Done, Reply, SessionClosed
from clustermail.mail.imap.parser import parse_command
from clustermail.mail.store import (
    FencedError,
    FolderExistsError,
    FolderNotFoundError,
    InvalidFlagError,
    InvalidFolderNameError,
    MailboxNotFoundError,
    MessageNotFoundError,
    MessageTooLargeError,
    NotMountedError,
    QuotaExceededError,
    StoreError,
)

log = logging.getLogger(__name__)

#: Every command the parser can produce, with its handler and rules.
COMMANDS: CommandTable[SessionContext] = CommandTable(
    any_state.COMMANDS,
    not_authenticated.COMMANDS,
    authenticated.COMMANDS,
    selected.COMMANDS,
)


class ImapSession(SessionContext):
    _closing = False  # set by close_soon (server shutdown)
    _bad_streak = 0  # BAD answers in a row (any other answer resets it)

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
                event = await self.next_event()
                if event is None:
                    break
                await self._handle_event(event)
                if self._bad_streak >= SOFT_BAD_COMMANDS:
                    await self._tarpit()
                if self._bad_streak >= self.config.max_bad_commands:
                    self.send(r.untagged_status("BYE", "Too many invalid IMAP commands."))
                    raise SessionClosed
                await self.flush()
        except SessionClosed:
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
        self.stop_timer()
        self.unselect()
        self.logged_out()
        wait = min(5.0, self.config.write_timeout)
        try:
            with contextlib.suppress(Exception):
                if self._out and not self.writer.is_closing():
                    self.writer.write(b"".join(self._out))
                    self._out.clear()
                    async with asyncio.timeout(wait):
                        await self.writer.drain()
            with contextlib.suppress(Exception):
                self.writer.close()
                async with asyncio.timeout(wait):
                    await self.writer.wait_closed()
        finally:
            # A graceful close waits for the send buffer to drain; a client that does not
            # read would keep the socket (and its buffer) forever. No-op once closed.
            self.writer.transport.abort()

    async def _tarpit(self) -> None:
        """Wait ``error_sleep_time`` without reading (Postfix's error sleep): garbage
        costs its sender a second, and the server nothing meanwhile."""
        if self.config.error_sleep_time:
            await asyncio.sleep(self.config.error_sleep_time)

    def _answer(self, line: bytes) -> None:
        """Send a command's final answer, counting BADs in a row: a client that only
        sends garbage (or overlong lines) is disconnected instead of costing reads forever."""
        self._bad_streak = self._bad_streak + 1 if _is_bad(line) else 0
        self.send(line)

    async def _handle_event(self, event: FrameEvent) -> None:
        if isinstance(event, ContinuationNeeded):
            if event.append and not await self._may_append(event):
                self.framer.refuse_literal()
                self.restart_timer()
                return
            self.send(r.continuation("Ready for literal data."))
            self.restart_timer()
            return
        if isinstance(event, FramingError):
            self._answer(r.render_parse_error(event.error))
            if event.error.fatal or self.framer.closed:
                await self._tarpit()  # no reconnecting at wire speed either
                self.send(r.untagged_status("BYE", "Too much invalid input."))
                raise SessionClosed
            return
        self.restart_timer()
        try:
            command = parse_command(event.raw)
        except ParseError as exc:
            self._answer(r.render_parse_error(exc))
            return
        await self._run_command(command)
        self.restart_timer()  # the command's own time (a long SEARCH) is not idleness

    async def _may_append(self, event: ContinuationNeeded) -> bool:
        """Before inviting an APPEND's message with ``+``: the command is allowed now, well
        formed, and its folder, size and the quota take the message. Otherwise it is
        answered now and the client never sends the message."""
        cmd = _append_so_far(event)
        if cmd is None:
            return True  # the literal is not the message (a mailbox name sent as one)
        if isinstance(cmd, ParseError):
            self._answer(r.render_parse_error(cmd))
            return False
        spec = COMMANDS.specs[c.Append]
        if self.state not in spec.states:
            self._answer(r.tagged(cmd.tag, "BAD", _state_error(spec.states, self.state, cmd.name)))
            return False
        try:
            authenticated.check_append(self, cmd, event.size)
        except Reply as reply:
            self._answer(r.tagged(cmd.tag, reply.status, reply.text, reply.code))
            return False
        except (NotMountedError, FencedError):
            self._answer(r.tagged(cmd.tag, "NO", "Mailbox database unavailable.", r.UNAVAILABLE))
            self.send(r.untagged_status("BYE", "Mailbox database went away, reconnect."))
            raise SessionClosed from None
        except StoreError as exc:
            status, text, code = _store_error(exc, cmd)
            self._answer(r.tagged(cmd.tag, status, text, code))
            return False
        return True

    # ------------------------------------------------------------------ dispatch

    async def _run_command(self, cmd: c.AnyCommand) -> None:
        tag = cmd.tag
        spec = COMMANDS.specs[type(cmd)]  # every command the parser makes has an entry
        if self.state not in spec.states:
            self._answer(r.tagged(tag, "BAD", _state_error(spec.states, self.state, cmd.name)))
            return
        self.running = spec
        started = time.monotonic()
        try:
            done: Done = await spec.handler(self, cmd)
        except AlreadyAnswered:
            self._bad_streak = 0
            return
        except Reply as reply:
            await self._sync_after(spec, cmd)
            self._answer(r.tagged(tag, reply.status, reply.text, reply.code))
            return
        except (NotMountedError, FencedError):
            self._answer(r.tagged(tag, "NO", "Mailbox database unavailable.", r.UNAVAILABLE))
            self.send(r.untagged_status("BYE", "Mailbox database went away, reconnect."))
            raise SessionClosed from None
        except StoreError as exc:
            status, text, code = _store_error(exc, cmd)
            await self._sync_after(spec, cmd)
            self._answer(r.tagged(tag, status, text, code))
            return
        finally:
            self.running = None
            metrics.command("imap4", cmd.name, time.monotonic() - started)
        await self._sync_after(spec, cmd)
        self._answer(r.tagged(tag, "OK", done.text, done.code))

    async def _sync_after(self, spec: CommandSpec[SessionContext], cmd: c.AnyCommand) -> None:
        # Always look (an index lookup): the store notifies listeners only after it has
        # answered the writer, so another session's change may be acknowledged to its
        # client before our notification arrives. The dirty flag wakes IDLE.
        if self.view_current:
            self.view_current = False
        elif self.view is not None:
            await self.sync(allow_expunge=not spec.uses_seqs(cmd))


def _is_bad(line: bytes) -> bool:
    """Is this answer (``tag BAD …`` or ``* BAD …``) a BAD?"""
    _, _, rest = line.partition(b" ")
    return rest.startswith(b"BAD ")


def _append_so_far(event: ContinuationNeeded) -> c.Append | ParseError | None:
    """The APPEND whose message literal ``event`` announces (parsed with an empty message);
    a ParseError when the command is already malformed; None when the literal is an
    earlier argument (the command cannot end there)."""
    header = LITERAL_HEADER_RE.search(event.head.rstrip(b"\r\n"))
    if header is None:
        return None
    empty = event.head[: header.start()] + b"{0}\r\n"
    try:
        cmd = parse_command(empty)
    except ParseError as exc:
        try:  # a literal that more arguments follow: not the message
            parse_command(empty + b" {0}\r\n")
        except ParseError:
            return exc
        return None
    return cmd if isinstance(cmd, c.Append) else None


def _state_error(states: frozenset[SessionState], state: SessionState, name: str) -> str:
    if state is SessionState.NOT_AUTHENTICATED:
        return "Log in first."
    if SessionState.SELECTED in states:
        return "No mailbox selected."
    if SessionState.NOT_AUTHENTICATED in states:
        return "Already logged in."
    return f"{name} is not allowed now."


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
    "COMMANDS",
    "Authenticator",
    "ImapSession",
    "MailboxLocator",
    "SessionConfig",
]
