"""The SMTP service of one virtual server: three listeners and the queue runner.

* inbound (port 25; 2525 in the demo): mail for the cluster's domains from anyone,
  STARTTLS offered, AUTH after TLS (then relaying is allowed);
* submission (587; 2587): STARTTLS, AUTH required before MAIL;
* submissions (465; 2465): implicit TLS (RFC 8314), AUTH required.

:class:`ClusterSMTP` is aiosmtpd's ``SMTP`` with small additions around its state machine:
connection admission (limits per listener and client address), TCP_NODELAY, enhanced
status codes on every reply (:mod:`.replies`), and what keeps hostile clients in check —
timeouts that abort (a graceful close waits for a send buffer that a non-reading client
never drains, and keeps the slot), replies that wait for a draining send buffer only so
long, a login deadline on the ports that require AUTH, a deadline for each command line (a
line sent a byte at a time does not hold the session), Postfix's error and junk
budgets (:class:`~.policy.SessionErrors`), and longer DATA lines than aiosmtpd's 1001.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, AnyStr, TypeVar

from aiosmtpd.smtp import MISSING, SMTP, Envelope, TLSSetupException

from clustermail.mail.net.listener import (
    WRITE_STALL_TIMEOUT,
    Admission,
    Endpoint,
    Listener,
    ListenerLimits,
    client_address,
    close_soon,
    drain_watched,
    set_nodelay,
)
from clustermail.mail.queue.runner import QueueRunner
from clustermail.mail.smtp.data import DOT_LINE, END, DataSection, DataState
from clustermail.mail.smtp.handler import MailEnvelope, SmtpContext, SmtpHandler
from clustermail.mail.smtp.policy import SessionErrors, SmtpLimits
from clustermail.mail.smtp.replies import with_enhanced

# aiosmtpd logs every session and every unknown command (unstructured, to stderr through
# logging's last resort); our handler logs what matters as structured events.
logging.getLogger("mail.log").setLevel(logging.ERROR)

BUSY = b"421 4.7.0 Too many connections; try again later\r\n"
# <local@domain> with a dot-atom local part and a plain domain; the rest after it.
_PLAIN_PATH = re.compile(
    r"^\s*<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)>(.*)$"
)
IDENT = "ESMTP clustermail"
#: The reader's buffer limit outside DATA (commands are at most 512 octets, RFC 5321
#: 4.5.3.1.4: aiosmtpd answers longer ones 500 and goes on). Longer lines are read and
#: dropped in steps of this size, so it is POP3's and IMAP's 64 KiB: with aiosmtpd's
#: 1001, dropping a flood of 1 MB lines took most of the event loop.
COMMAND_LINE_LIMIT = 64 * 1024
#: Past COMMAND_LINE_LIMIT, the rest of a command line is read at most this fast (bytes
#: per second; reading pauses between chunks): no client needs such a line, so one that
#: sends them gets a slow server, not its CPU, until the error limit ends the session.
DISCARD_RATE = 256 * 1024


F = TypeVar("F", bound=Callable[..., Any])


def _like(parent: Callable[..., Any]) -> Callable[[F], F]:
    """An override keeps the parent's HELP syntax (aiosmtpd reads it off the method)."""

    def copy(method: F) -> F:
        for attr in ("__smtp_syntax__", "__smtp_syntax_extended__", "__smtp_syntax_when__"):
            if hasattr(parent, attr):
                setattr(method, attr, getattr(parent, attr))
        return method

    return copy


class _StartedTls:
    """What aiosmtpd reads off its TLS layer once STARTTLS is done: the ``_extra`` details
    it keeps as ``session.ssl``."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        keys = ("sslcontext", "peercert", "cipher", "compression", "ssl_object")
        self._extra = {key: transport.get_extra_info(key) for key in keys}


class ClusterSMTP(SMTP):
    def __init__(
        self,
        handler: SmtpHandler,
        *,
        admission: Admission,
        implicit_tls: bool,
        limits: SmtpLimits,
        sessions: weakref.WeakSet[ClusterSMTP] | None = None,
        **kwargs: Any,
    ) -> None:
        # aiosmtpd builds its reader with this limit: the longest DATA line, raised to
        # during DATA only (:meth:`smtp_DATA`).
        self.line_length_limit = limits.max_line_length
        super().__init__(handler, ident=IDENT, **kwargs)
        if sessions is not None:
            sessions.add(self)
        self.limits = limits
        self.errors = SessionErrors(limits)
        self._admission = admission
        self._admitted: str | None = None
        self._implicit_tls = implicit_tls
        self._greeted = False  # the greeting carries no enhanced code (RFC 2034) ...
        self._in_helo = False  # ... nor do the replies to HELO/EHLO
        self._login_deadline: asyncio.TimerHandle | None = None
        self._line_deadline: asyncio.TimerHandle | None = None
        self._in_data = False  # DATA lines have the idle timeout and the size limit
        self._line_bytes = 0  # bytes received since the last line end
        self._resume: asyncio.TimerHandle | None = None
        self._idle_deadline = 0.0  # the idle timeout's deadline (loop time) ...
        self._idle_fires = 0.0  # ... and when its timer fires, while _idle_armed
        self._idle_armed = False

    def close(self) -> None:
        """Ends the session now (the resource goes offline)."""
        if self.transport is not None:
            self.transport.close()

    @property
    def secure(self) -> bool:
        return self._implicit_tls or self._tls_protocol is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self._admitted is None and self._original_transport is None
        if first:
            set_nodelay(transport)
            client = client_address(transport)
            if not self._admission.admit(client):
                transport.write(BUSY)  # type: ignore[attr-defined]
                transport.close()
                return
            self._admitted = client
        super().connection_made(transport)
        if first:
            self._reader._limit = COMMAND_LINE_LIMIT  # type: ignore[attr-defined]
            if self._auth_required:
                self._login_deadline = self.loop.call_later(
                    self.limits.login_timeout, self._ended_by_timeout, "no login in time"
                )

    def eof_received(self) -> bool | None:
        """The client closed its side: aiosmtpd cancels the session's task and asks to keep
        the transport half-open, leaving its close to that task. A task cancelled before
        its read loop (a client gone right after the greeting) never closed it, and the
        session kept its connection slot for good; nothing more can arrive, so close now
        (what is still to be sent is flushed first)."""
        super().eof_received()
        return False

    def connection_lost(self, error: Exception | None) -> None:
        client, self._admitted = self._admitted, None
        if self._login_deadline is not None:
            self._login_deadline.cancel()
            self._login_deadline = None
        self._stop_line_deadline()
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if client is None and self.session is None:
            return  # refused at admission: the state machine never started
        if client is not None:
            self._admission.release(client)
        super().connection_lost(error)

    # ------------------------------------------------------------------ timeouts

    def data_received(self, data: bytes) -> None:
        before = self._line_bytes
        first_end, last_end = data.find(b"\n"), data.rfind(b"\n")
        self._line_bytes = before + len(data) if last_end < 0 else len(data) - last_end - 1
        if not self._in_data and before > COMMAND_LINE_LIMIT and self.transport is not None:
            # The reader already holds more of this command line than it takes, so it is
            # dropping it: drop the rest here, before it is copied into the reader's buffer,
            # up to the line's end, and read on slowly.
            self._slow_down(len(data) / DISCARD_RATE)
            if first_end < 0:
                return
            data = data[first_end:]
        super().data_received(data)
        if self._in_data or self.transport is None:
            return
        pending: bytearray = self._reader._buffer  # type: ignore[attr-defined]
        if not pending or b"\n" in pending:
            self._stop_line_deadline()  # nothing waiting, or a whole line to read
        elif self._line_deadline is None:  # a line begun: it has line_timeout to end
            self._line_deadline = self.loop.call_later(
                self.limits.line_timeout, self._ended_by_timeout, "command line too slow"
            )

    def _slow_down(self, seconds: float) -> None:
        """Stop reading from the client for ``seconds`` (the reader's own flow control,
        when its buffer is full, stays in charge of resuming then)."""
        if self._resume is not None:
            return
        transport: Any = self.transport
        transport.pause_reading()

        def resume() -> None:
            self._resume = None
            if not self._reader._paused and not transport.is_closing():  # type: ignore[attr-defined]
                transport.resume_reading()

        self._resume = self.loop.call_later(seconds, resume)

    def _stop_line_deadline(self) -> None:
        if self._line_deadline is not None:
            self._line_deadline.cancel()
            self._line_deadline = None

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's idle timeout, restarted by every complete command: aiosmtpd cancels
        its timer and starts another each time (four per message). Here the timer only
        moves the deadline; a timer that fires before it starts one for the rest."""
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._idle_deadline = deadline
        if self._idle_armed and self._idle_fires <= deadline:
            return  # armed, and it fires before the deadline: it looks again then
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        self._idle_armed, self._idle_fires = True, deadline
        self._timeout_handle = self.loop.call_at(deadline, self._idle_check)

    def _idle_check(self) -> None:
        deadline = self._idle_deadline
        if self.loop.time() < deadline:  # a command came since this timer was started
            self._idle_fires = deadline
            self._timeout_handle = self.loop.call_at(deadline, self._idle_check)
            return
        self._idle_armed = False
        self._timeout_cb()

    def _timeout_cb(self) -> None:
        """aiosmtpd's idle timeout (reset by complete commands only) closes gracefully;
        here it says why and aborts if the client does not read the goodbye."""
        self._ended_by_timeout("timeout exceeded")

    def _ended_by_timeout(self, why: str) -> None:
        self._end(f"421 4.4.2 {self.hostname} Error: {why}")

    def _end(self, goodbye: str) -> None:
        """Says ``goodbye`` and closes (aborting if the client does not read it); nothing
        else is read or answered, not even commands already pipelined behind."""
        if self.transport is not None:
            close_soon(self.transport, goodbye.encode() + b"\r\n")
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()

    # ------------------------------------------------------------------ replies

    async def push(self, status: AnyStr) -> None:
        self_greeted, self._greeted = self._greeted, True
        if isinstance(status, str) and self_greeted and not self._in_helo:
            status = with_enhanced(status)
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        final = text[3:4] != "-"
        if final:
            delay = self.errors.delay()
            if delay:
                await asyncio.sleep(delay)  # the tarpit: a harvester gets one answer a second
        if isinstance(status, str):
            data = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii", "replace")
        else:
            data = status
        writer = self._writer
        writer.write(data + b"\r\n")
        transport = writer.transport
        if transport.get_write_buffer_size() or transport.is_closing():
            # Only then can the drain wait or raise: the reply went out at once otherwise.
            await drain_watched(writer, min(self.limits.timeout, WRITE_STALL_TIMEOUT))
        if final and self._reader._buffer:  # type: ignore[attr-defined]
            # Fairness: pipelined commands are read from the buffer without a pause, so a
            # client that pipelines thousands would hold the event loop until its buffer
            # ran dry; each session yields after each answer instead. (With nothing
            # buffered, the next read waits anyway.)
            await asyncio.sleep(0)
        self.errors.replied(text)
        if final and self.errors.exhausted():
            self._end(f"421 4.7.0 {self.hostname} Error: too many errors")

    def mail_accepted(self) -> None:
        self.errors.delivered()

    # ------------------------------------------------------------------ commands

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address parser (email's RFC 5322 parser, plus a class built per call)
        was a tenth of the event loop's time per message; plain ``<local@domain>`` takes a
        regular expression, anything else (quoted local parts, routes) the original."""
        match = _PLAIN_PATH.match(arg)
        if match is not None:
            return match.group(1), match.group(2).lstrip()
        return super()._getaddr(arg)

    def _create_envelope(self) -> Envelope:
        return MailEnvelope()

    @_like(SMTP.smtp_STARTTLS)
    async def smtp_STARTTLS(self, arg: str) -> None:
        """aiosmtpd swaps the socket transport's protocol by hand, which only asyncio's own
        loop supports; this goes through ``loop.start_tls`` (uvloop too), then lets
        aiosmtpd's STARTTLS branch of ``connection_made`` reset the session (RFC 3207 4.2)."""
        if arg:
            await self.push("501 Syntax: STARTTLS")
            return
        if not self.tls_context or self.transport is None:
            await self.push("454 TLS not available")
            return
        plain = self.transport
        # Nothing more is read as plaintext: the client's TLS hello may follow the 220 at
        # once, while the reply yields to the loop. What was pipelined after STARTTLS is
        # dropped, never read as if it had been sent under TLS.
        plain.pause_reading()  # type: ignore[attr-defined]
        await self.push("220 Ready to start TLS")
        self._reader._buffer.clear()  # type: ignore[attr-defined]
        try:
            secure = await self.loop.start_tls(
                plain,  # type: ignore[arg-type]
                self,
                self.tls_context,
                server_side=True,
                ssl_handshake_timeout=self.limits.line_timeout,
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise TLSSetupException() from error
        if secure is None:  # the connection went away during the handshake
            raise TLSSetupException()
        self._original_transport = plain
        self._tls_protocol = _StartedTls(secure)  # type: ignore[assignment]
        self._transport = secure  # what StreamReaderProtocol itself writes and closes
        self._over_ssl = True
        self.connection_made(secure)

    @_like(SMTP.smtp_EHLO)
    async def smtp_EHLO(self, hostname: str) -> None:
        self.errors.junk_command()  # a client needs two (before and after STARTTLS)
        self._in_helo = bool(hostname)  # a syntax error still gets its enhanced code
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_helo = False

    @_like(SMTP.smtp_HELO)
    async def smtp_HELO(self, hostname: str) -> None:
        self.errors.junk_command()
        self._in_helo = bool(hostname)
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._in_helo = False

    @_like(SMTP.smtp_AUTH)
    async def smtp_AUTH(self, arg: str) -> None:
        await super().smtp_AUTH(arg)
        if self.session is not None and self.session.authenticated \
                and self._login_deadline is not None:
            self._login_deadline.cancel()
            self._login_deadline = None

    @_like(SMTP.smtp_DATA)
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, the section read in chunks (:mod:`.data`), not line by line."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader: Any = self._reader
        reader._limit = self.limits.max_line_length  # the longest chunk held at once
        self._in_data = True
        self._stop_line_deadline()
        try:
            section = await self._read_data()
        finally:
            self._in_data = False
            reader._limit = COMMAND_LINE_LIMIT
        if section is None:
            return  # the connection is gone
        if section.state is DataState.TOO_LONG:
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
        elif section.state is DataState.TOO_MUCH:
            await self.push("552 Error: Too much mail data")
        if section.state is not DataState.NOMINAL:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        content = section.message()
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self) -> DataSection | None:
        """Reads up to each ``.<CRLF>`` until the one on a line of its own; when the
        reader already holds the section's end (within the reader's limit), up to it at
        once: lines that end in a full stop (prose) are not a read each then."""
        section = DataSection(self.data_size_limit, self.line_length_limit)
        reader = self._reader
        limit = self.line_length_limit
        clean = 0  # the buffered bytes known to hold no <CRLF>.<CRLF> (each searched once)
        while self.transport is not None:
            buffered: bytearray = reader._buffer  # type: ignore[attr-defined]
            try:
                end = section.end_in(buffered, max(0, clean - len(END) + 1))
                if 0 < end <= limit:
                    chunk = await reader.readexactly(end)  # buffered: returns at once
                else:
                    # Clean up to the end found past the limit, or all of it: the next
                    # search must not skip an end (what follows it is the next command).
                    clean = end - len(END) if end else len(buffered)
                    chunk = await reader.readuntil(DOT_LINE)
            except asyncio.LimitOverrunError as error:
                # No dot line within the limit: take what cannot be part of one.
                chunk = await reader.read(error.consumed)
                clean -= len(chunk)
                section.feed(chunk)
                continue
            except asyncio.IncompleteReadError:
                return None  # end of stream (eof_received ends the session)
            except asyncio.CancelledError:
                self._writer.close()  # as aiosmtpd: the connection went during DATA
                raise
            clean -= len(chunk)
            if section.feed(chunk):
                return section
        return None

    # Postfix's junk commands (NOOP, RSET, VRFY; here EHLO, HELO and HELP too): past the
    # limit, each counts as an error.
    @_like(SMTP.smtp_NOOP)
    async def smtp_NOOP(self, arg: str) -> None:
        self.errors.junk_command()
        await super().smtp_NOOP(arg)

    @_like(SMTP.smtp_RSET)
    async def smtp_RSET(self, arg: str) -> None:
        self.errors.junk_command()
        await super().smtp_RSET(arg)

    @_like(SMTP.smtp_VRFY)
    async def smtp_VRFY(self, arg: str) -> None:
        self.errors.junk_command()
        await super().smtp_VRFY(arg)

    @_like(SMTP.smtp_HELP)
    async def smtp_HELP(self, arg: str) -> None:
        self.errors.junk_command()
        await super().smtp_HELP(arg)


@dataclass(frozen=True, slots=True)
class SmtpPorts:
    inbound: int = 25
    submission: int = 587
    submissions: int = 465


class SmtpService:
    """Listeners plus the queue runner of one virtual server."""

    def __init__(
        self,
        ctx: SmtpContext,
        runner: QueueRunner | None,
        address: str,
        ports: SmtpPorts,
        tls_context: ssl.SSLContext | None,
        limits: ListenerLimits,
        *,
        plaintext_auth: bool = False,
    ) -> None:
        self.ctx = ctx
        self.runner = runner
        self.handler = SmtpHandler(ctx)
        if runner is not None:
            ctx.wake_queue = runner.wake
        self.tls_context = tls_context
        self.plaintext_auth = plaintext_auth
        self._submission_ports = {ports.submission, ports.submissions}
        endpoints = [Endpoint(ports.inbound, False), Endpoint(ports.submission, False)]
        if tls_context is not None:
            endpoints.append(Endpoint(ports.submissions, True))
        self.listener = Listener("smtp", address, endpoints, tls_context, limits, busy_reply=BUSY)
        self._sessions: weakref.WeakSet[ClusterSMTP] = weakref.WeakSet()

    def _protocol(self, endpoint: Endpoint) -> asyncio.BaseProtocol:
        submission = endpoint.port in self._submission_ports
        limits = self.ctx.limits
        with warnings.catch_warnings():
            # "AUTH without TLS" is only true for plaintext_auth; the implicit-TLS port is
            # TLS below the state machine, which cannot see it.
            warnings.simplefilter("ignore", UserWarning)
            return self._new_protocol(endpoint, submission, limits)

    def _new_protocol(
        self, endpoint: Endpoint, submission: bool, limits: SmtpLimits
    ) -> asyncio.BaseProtocol:
        return ClusterSMTP(
            self.handler,
            admission=self.listener.admission,
            implicit_tls=endpoint.implicit_tls,
            limits=limits,
            sessions=self._sessions,
            hostname=self.ctx.hostname,
            data_size_limit=limits.message_size_limit,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=None if endpoint.implicit_tls else self.tls_context,
            timeout=limits.timeout,
            auth_required=submission,
            auth_require_tls=not (endpoint.implicit_tls or self.plaintext_auth),
            command_call_limit=None,
        )

    async def start(self) -> None:
        await self.listener.start_protocol(self._protocol)
        if self.runner is not None:
            self.runner.start()

    @property
    def ports(self) -> list[int]:
        return self.listener.ports

    def is_serving(self) -> bool:
        return self.listener.is_serving() and (self.runner is None or self.runner.running)

    async def stop(self) -> None:
        await self.listener.close()
        for session in list(self._sessions):
            session.close()
        if self.runner is not None:
            await self.runner.stop()
