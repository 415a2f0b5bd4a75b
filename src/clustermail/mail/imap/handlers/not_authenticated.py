"""Commands of the not-authenticated state (RFC 3501 §6.2): STARTTLS and the logins."""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl

from clustermail.mail.imap import commands as c
from clustermail.mail.imap import response as r
from clustermail.mail.imap.command_table import NOT_AUTHENTICATED, CommandTable
from clustermail.mail.imap.context import SessionContext
from clustermail.mail.imap.errors import ParseError
from clustermail.mail.imap.outcome import AlreadyAnswered, Done, SessionClosed, bad, no
from clustermail.mail.imap.parser import parse_auth_response
from clustermail.mail.net.login_guard import cache_of, guarded_login
from clustermail.mail.store import MailboxNotFoundError

log = logging.getLogger(__name__)

COMMANDS: CommandTable[SessionContext] = CommandTable()


@COMMANDS.command(c.StartTLS, NOT_AUTHENTICATED)
async def starttls(s: SessionContext, cmd: c.StartTLS) -> Done:
    if s.tls is None:
        bad("STARTTLS is not available.")
    if s.secure:
        bad("TLS is already active.")
    # Anything the client sent after STARTTLS, before our answer, was sent in the clear
    # and must not be run as a command (RFC 3501 §6.2.1). What it sends after the answer
    # is its TLS handshake: stop reading before answering, so the plaintext reader does
    # not take it while the answer is written (the TLS layer reads it instead).
    s.framer.discard_buffered()
    buffered = getattr(s.reader, "_buffer", None)
    if isinstance(buffered, bytearray):
        buffered.clear()
    pause = getattr(s.writer.transport, "pause_reading", None)  # any loop's transport
    if pause is not None:
        pause()  # start_tls resumes it under TLS
    s.send(r.tagged(cmd.tag, "OK", "Begin TLS negotiation now."))
    await s.flush()
    try:
        async with asyncio.timeout(30):
            await s.writer.start_tls(s.tls)
    except (OSError, ssl.SSLError, TimeoutError):
        raise SessionClosed from None
    raise AlreadyAnswered


@COMMANDS.command(c.Login, NOT_AUTHENTICATED)
async def login(s: SessionContext, cmd: c.Login) -> Done:
    if not s.plaintext_ok:
        no(
            "Plaintext authentication disallowed on non-secure connections.",
            r.PRIVACYREQUIRED,
        )
    return await _authenticate(s, cmd.userid, cmd.password)


@COMMANDS.command(c.Authenticate, NOT_AUTHENTICATED)
async def authenticate(s: SessionContext, cmd: c.Authenticate) -> Done:
    if cmd.mechanism != "PLAIN":
        no("Unsupported authentication mechanism.", r.CANNOT)
    if not s.plaintext_ok:
        no(
            "Plaintext authentication disallowed on non-secure connections.",
            r.PRIVACYREQUIRED,
        )
    data = cmd.initial_response
    if data is None:
        s.send(r.continuation(""))
        await s.flush()
        try:
            data = parse_auth_response(await s.read_line())
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
    return await _authenticate(s, user, password)


async def _authenticate(s: SessionContext, user: str, password: str) -> Done:
    login = await guarded_login(
        s.throttle, s.peer, user, lambda: s.authenticator.authenticate(user, password),
        cached=cache_of(s.authenticator, user, password),
    )
    if login.outcome in ("locked", "busy"):
        no("Too many failed logins; try again later." if login.outcome == "locked"
           else "Authentication service busy; try again later.", r.UNAVAILABLE)
    if login.outcome == "error":
        no("Temporary authentication failure.", r.UNAVAILABLE)
    principal = login.principal
    if principal is None:
        no("Authentication failed.", r.AUTHENTICATIONFAILED)
    try:
        located = s.locate(principal)
        if inspect.isawaitable(located):
            located = await located
        db, mailbox = located
        if not db.has_mailbox(mailbox):
            raise MailboxNotFoundError(mailbox)
    except Exception:
        log.exception("no mailbox for %r", user)
        no("Your mailbox is not available right now.", r.UNAVAILABLE)
    s.login(user, db, mailbox)
    return Done("Logged in.", r.code_capability(s.capabilities()))
