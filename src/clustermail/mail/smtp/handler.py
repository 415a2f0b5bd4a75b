"""The aiosmtpd handler: our SMTP policy, as hooks on aiosmtpd's state machine.

* AUTH PLAIN/LOGIN against the directory, throttled per client address (TLS is required
  by the state machine unless the listener allows plaintext on loopback);
* MAIL: authenticated users only as their own addresses or aliases (``send_as``), and not
  while over their send quota;
* RCPT: local domains from anyone (unknown mailbox 5.1.1, quota 4.2.2/5.2.2 here already),
  other domains only when authenticated (never an open relay), at most N recipients;
* DATA: no bare CR/LF, then the message is committed in the mailbox databases (recipients
  homed here) and in the queue (everyone else) before the 250.
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import time
from base64 import b64decode
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from aiosmtpd.smtp import Envelope, Session

from clustermail.logutil import log_event
from clustermail.mail import metrics
from clustermail.mail.backends import MailboxRef, MailStoreService
from clustermail.mail.net.auth_throttle import AuthThrottle
from clustermail.mail.net.listener import client_address
from clustermail.mail.net.login_guard import cache_of, guarded_login
from clustermail.mail.queue import dsn
from clustermail.mail.queue.delivery import LocalResult, deliver_local
from clustermail.mail.queue.routing import Router, Target
from clustermail.mail.queue.store import LOCAL, NewMessage, NewRecipient, Queue, new_queue_id
from clustermail.mail.queue.tracking import TrackingLog
from clustermail.mail.smtp import policy
from clustermail.mail.store import MailboxDatabase, QuotaReport, StoreError
from clustermail.mail.store.quota import delivery_decision


class SmtpConnection(Protocol):
    """What the hooks use of the aiosmtpd protocol instance that calls them
    (:class:`clustermail.mail.smtp.server.ClusterSMTP`)."""

    transport: asyncio.BaseTransport | None

    @property
    def secure(self) -> bool: ...

    async def challenge_auth(self, challenge: str | bytes) -> object:
        """The client's decoded answer (bytes), or aiosmtpd's MISSING after it answered
        the client itself (aborted exchange, bad base64)."""
        ...

    def mail_accepted(self) -> None:
        """A message was accepted: the session's error counts start over."""
        ...


class MailEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[Target] = []
        self.size_hint = 0
        self.queue_id = new_queue_id()


@dataclass
class SmtpContext:
    """What every session of a virtual server's SMTP service shares."""

    vs: str
    hostname: str
    router: Router
    mail_store: MailStoreService
    queue: Queue
    tracking: TrackingLog
    limits: policy.SmtpLimits
    throttle: AuthThrottle = field(default_factory=AuthThrottle)
    wake_queue: Callable[[], None] | None = None  # the queue runner's wake-up
    clock: Callable[[], float] = time.time


NULL_SENDER = "<>"  # aiosmtpd's spelling of the null reverse-path (envelope.mail_from)


def sender_of(envelope: Envelope) -> str:
    """The envelope sender, "" for the null reverse-path."""
    sender = envelope.mail_from or ""
    return "" if sender == NULL_SENDER else sender


def _authenticated(session: Session) -> MailboxRef | None:
    data: Any = session.auth_data
    return data if session.authenticated and data is not None else None


QUOTA_CACHE_SECONDS = 1.0


R = TypeVar("R")


def timed(command: str) -> Callable[[Callable[..., Awaitable[R]]],
                                    Callable[..., Awaitable[R]]]:
    """Counts a hook's command and observes how long it took to answer (for DATA: from
    the end of the message to the reply, the durable commit; for AUTH: with the
    challenge's round trips and the password check)."""

    def wrap(hook: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        @functools.wraps(hook)  # aiosmtpd reads the hook's signature through __wrapped__
        async def run(*args: Any, **kwargs: Any) -> R:
            started = time.monotonic()
            try:
                return await hook(*args, **kwargs)
            finally:
                metrics.command("smtp", command, time.monotonic() - started)

        return run

    return wrap


class SmtpHandler:
    def __init__(self, ctx: SmtpContext) -> None:
        self.ctx = ctx
        # RCPT's quota check is an early refusal only (the store enforces the quota inside
        # its delivery transaction), so a second-old usage figure is good enough, and it
        # spares a database read per recipient on the event loop.
        self._quota: dict[tuple[int, str], tuple[float, QuotaReport]] = {}

    # ------------------------------------------------------------------ EHLO

    @timed("EHLO")
    async def handle_EHLO(
        self, server: SmtpConnection, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        keywords = [r[4:] for r in responses[1:] if r[4:] != "HELP"]
        keywords += ["PIPELINING", "ENHANCEDSTATUSCODES"]
        lines = [responses[0][4:], *keywords]
        return [f"250-{k}" for k in lines[:-1]] + [f"250 {lines[-1]}"]

    # ------------------------------------------------------------------ AUTH

    @timed("AUTH")
    async def handle_AUTH(
        self, server: SmtpConnection, session: Session, envelope: Envelope, args: list[str]
    ) -> str | None:
        client = client_address(server.transport) if server.transport else "unknown"
        mechanism = args[0].upper()
        initial = args[1] if len(args) > 1 else None
        credentials = await self._credentials(server, mechanism, initial)
        if credentials is None:
            return None  # the state machine already answered (aborted, bad base64)
        if isinstance(credentials, str):
            return credentials
        username, password = credentials
        directory = self.ctx.router.directory

        async def check() -> MailboxRef | None:
            entry = await directory.authenticate(username, password)
            return entry if entry is not None and entry.enabled else None

        login = await guarded_login(
            self.ctx.throttle, client, username, check,
            cached=cache_of(directory, username, password),
        )
        if login.outcome == "locked":
            return "454 4.7.0 Too many failed logins; try again later"
        if login.outcome == "busy":
            return "454 4.7.0 Authentication service busy; try again later"
        if login.outcome == "error":
            log_event("smtp_error", message="directory: password check failed", vs=self.ctx.vs)
            return "454 4.7.0 Temporary authentication failure"
        entry = login.principal
        if entry is None:
            return "535 5.7.8 Authentication credentials invalid"
        session.authenticated = True
        session.auth_data = entry  # type: ignore[assignment]
        return "235 2.7.0 Authentication successful"

    async def _credentials(
        self, server: SmtpConnection, mechanism: str, initial: str | None
    ) -> tuple[str, str] | str | None:
        def decode(text: str) -> bytes | None:
            if text == "=":
                return b""
            try:
                return b64decode(text.encode(), validate=True)
            except (binascii.Error, ValueError, UnicodeEncodeError):
                return None

        if mechanism == "PLAIN":
            if initial is None:
                blob = await server.challenge_auth("")
                if not isinstance(blob, bytes):
                    return None
                raw: bytes | None = blob
            else:
                raw = decode(initial)
            if raw is None:
                return "501 5.5.2 Cannot decode the response (base64)"
            parts = raw.split(b"\x00")
            if len(parts) != 3:
                return "501 5.5.2 PLAIN needs authzid NUL authcid NUL password"
            authz, user, password = (p.decode("utf-8", "replace") for p in parts)
            if authz and authz != user:
                return "535 5.7.8 Authorization identity must be the login name"
            return user, password
        # LOGIN (the state machine refuses mechanisms it does not know)
        if initial is None:
            got = await server.challenge_auth("Username:")
            if not isinstance(got, bytes):
                return None
            user_raw: bytes | None = got
        else:
            user_raw = decode(initial)
        if user_raw is None:
            return "501 5.5.2 Cannot decode the response (base64)"
        got = await server.challenge_auth("Password:")
        if not isinstance(got, bytes):
            return None
        return user_raw.decode("utf-8", "replace"), got.decode("utf-8", "replace")

    # ------------------------------------------------------------------ MAIL

    @timed("MAIL")
    async def handle_MAIL(
        self, server: SmtpConnection, session: Session, envelope: MailEnvelope, address: str,
        mail_options: list[str],
    ) -> str:
        user = _authenticated(session)
        if policy.has_control(address):
            return "501 5.1.7 Bad sender address syntax: control character"
        if address != NULL_SENDER and not policy.valid_address(address):
            return "553 5.1.7 Bad sender address syntax"
        if user is not None:
            try:
                allowed = await self.ctx.router.directory.send_as(
                    user.address, covering=[address])
            except Exception as exc:
                log_event("smtp_error", message=f"directory: {exc}", vs=self.ctx.vs)
                return "451 4.3.0 Directory unavailable; try again later"
            if not policy.may_send_as(address, allowed | {user.address}):
                return (f"553 5.7.1 <{policy.printable(address)}>: Sender address not owned "
                        f"by user {user.address}")
            refusal = self._send_quota(user)
            if refusal is not None:
                return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.size_hint = policy.size_hint(mail_options)
        return "250 2.1.0 Sender OK"

    def _send_quota(self, user: MailboxRef) -> str | None:
        if user.server != self.ctx.vs:
            return None  # homed elsewhere: that virtual server knows its usage
        try:
            decision = self.ctx.mail_store.database_for(user).may_send(user.mailbox_id)
        except StoreError:
            return None
        if decision.accepted:
            return None
        return f"552 {decision.code} {decision.reason}"

    # ------------------------------------------------------------------ RCPT

    @timed("RCPT")
    async def handle_RCPT(
        self, server: SmtpConnection, session: Session, envelope: MailEnvelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.ctx.limits.max_recipients:
            return f"452 4.5.3 Too many recipients (at most {self.ctx.limits.max_recipients})"
        if not policy.valid_address(address):
            return f"501 5.1.3 <{policy.printable(address)}>: Bad recipient address syntax"
        router = self.ctx.router
        try:
            local = await router.is_local_domain(address)
            if not policy.relay_allowed(local, _authenticated(session) is not None):
                return f"554 5.7.1 <{address}>: Relay access denied"
            targets = await router.targets(address, local=local)
        except Exception as exc:
            log_event("smtp_error", message=f"directory: {exc}", vs=self.ctx.vs)
            return "451 4.3.0 Directory unavailable; try again later"
        if not targets:
            return f"550 5.1.1 <{address}>: Recipient address rejected: no such user"
        accepted: list[Target] = []
        refusal = ""
        for target in targets:
            why = self._refuse_local(target, envelope.size_hint)
            if why is None:
                accepted.append(target)
            else:
                refusal = refusal or why
        if not accepted:
            return refusal.replace("<>", f"<{address}>")
        envelope.targets.extend(accepted)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    def _refuse_local(self, target: Target, size: int) -> str | None:
        entry = target.entry
        if entry is None:
            return None
        if not entry.enabled:
            return "550 5.2.1 <>: Mailbox disabled"
        if target.route != LOCAL:
            return None  # its own virtual server decides on quota
        try:
            db = self.ctx.mail_store.database_for(entry)
            report = self._quota_report(db, entry.mailbox_id)
        except StoreError:
            return None  # DATA will find out (and queue it for a retry)
        decision = delivery_decision(
            report.used_bytes, size, report.limits,
            full_is_permanent=db.settings.quota_full_permanent,
        )
        if decision.accepted:
            return None
        code = "552" if decision.permanent else "452"
        return f"{code} {decision.code} <>: {decision.reason}"

    def _quota_report(self, db: MailboxDatabase, mailbox: str) -> QuotaReport:
        now = time.monotonic()
        key = (id(db), mailbox)
        cached = self._quota.get(key)
        if cached is not None and now - cached[0] < QUOTA_CACHE_SECONDS:
            return cached[1]
        if len(self._quota) > 10_000:
            self._quota.clear()
        report = db.quota(mailbox)
        self._quota[key] = (now, report)
        return report

    # ------------------------------------------------------------------ DATA

    @timed("DATA")
    async def handle_DATA(
        self, server: SmtpConnection, session: Session, envelope: MailEnvelope
    ) -> str:
        content = envelope.original_content or b""
        bad = policy.bare_line_ending(content)
        client = client_address(server.transport) if server.transport else "unknown"
        sender = sender_of(envelope)
        if bad is not None:
            self._track("reject", envelope, policy.message_id(content), len(content), "5.6.0",
                        f"{bad} in message", client)
            return f"550 5.6.0 Message refused: {bad} (lines must end with CRLF)"
        if policy.hop_count(content) >= policy.MAX_HOPS:
            self._track("reject", envelope, policy.message_id(content), len(content), "5.4.6",
                        "too many Received fields: a mail loop", client)
            return f"554 5.4.6 Too many hops (at most {policy.MAX_HOPS}): mail loop"
        ctx = self.ctx
        now = ctx.clock()
        user = _authenticated(session)
        if user is not None and ctx.limits.reject_sender_login_mismatch:
            refusal = await self._header_from_refusal(user, content)
            if refusal is not None:
                self._track("reject", envelope, policy.message_id(content), len(content),
                            refusal[4:9], refusal[10:], client)
                return refusal
        proto = policy.protocol_name(
            esmtp=session.extended_smtp, tls=server.secure, authenticated=user is not None,
            utf8=envelope.smtp_utf8,
        )
        only = envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None
        message = policy.received_header(
            helo=session.host_name or "unknown", client_address=client, hostname=ctx.hostname,
            protocol=proto, queue_id=envelope.queue_id, recipient=only, now=now,
        ) + content
        mid = policy.message_id(content)
        local = [t for t in envelope.targets if t.route == LOCAL and t.entry is not None]
        remote = [t for t in envelope.targets if not (t.route == LOCAL and t.entry is not None)]
        entries = [t.entry for t in local if t.entry is not None]
        try:
            if remote:  # both commits at once; the reply waits for both
                results, _ = await asyncio.gather(
                    deliver_local(ctx.mail_store, message, entries),
                    self._enqueue(envelope.queue_id, sender, remote, message, mid),
                )
            else:
                results = await deliver_local(ctx.mail_store, message, entries)
        except StoreError as exc:
            log_event("smtp_error", message=f"queue: {exc}", vs=ctx.vs)
            self._track("reject", envelope, mid, len(message), "4.3.0", f"queue: {exc}", client)
            return "451 4.3.0 Cannot store the message now; try again later"
        reply = await self._finish(envelope, message, mid, local, remote, results, client)
        if reply.startswith("250"):
            server.mail_accepted()
        return reply

    async def _header_from_refusal(self, user: MailboxRef, content: bytes) -> str | None:
        """Submission: the From: header may name only addresses the logged-in user may
        send as (its own, its aliases'), as the envelope sender already must."""
        found = policy.header_from(content)
        if found is None:
            return "550 5.6.0 Message refused: the From: header has no valid address"
        if not found:
            return None  # no From: at all (rare; nothing to impersonate)
        try:
            allowed = await self.ctx.router.directory.send_as(user.address,
                                                              covering=found)
        except Exception as exc:
            log_event("smtp_error", message=f"directory: {exc}", vs=self.ctx.vs)
            return "451 4.3.0 Directory unavailable; try again later"
        for address in found:
            if not policy.may_send_as(address, allowed | {user.address}):
                return (f"550 5.7.1 From: <{policy.printable(address)}> is not owned by "
                        f"user {user.address}")
        return None

    async def _enqueue(
        self, queue_id: str, sender: str, targets: list[Target], message: bytes, mid: str | None,
        *, is_dsn: bool = False,
    ) -> str | None:
        if not targets:
            return None
        rcpts = tuple(NewRecipient(t.address, t.route) for t in targets)
        return await self.ctx.queue.enqueue(
            NewMessage(sender, rcpts, message, mid, is_dsn, queue_id)
        )

    async def _finish(
        self, envelope: MailEnvelope, message: bytes, mid: str | None,
        local: list[Target], remote: list[Target], results: list[LocalResult], client: str,
    ) -> str:
        sender = sender_of(envelope)
        pairs = zip(local, results, strict=True)
        retry = [t for t, r in pairs if not r.delivered and not r.permanent]
        failed = [r for r in results if r.permanent]
        delivered = [r.address for r in results if r.delivered]
        accepted = len(delivered) + len(retry) + len(remote)
        if accepted == 0:
            first = failed[0]
            self._track("reject", envelope, mid, len(message), first.code, first.reason, client)
            return f"550 {first.code} {first.reason}"
        if retry:
            # Accepted: a temporary local failure (store busy, quota 4.2.2) is retried from
            # the queue, so this too must be durable before the 250.
            qid = f"{envelope.queue_id}L"
            try:
                await self._enqueue(qid, sender, retry, message, mid)
            except StoreError as exc:
                log_event("smtp_error", message=f"queue: {exc}", vs=self.ctx.vs)
                return "451 4.3.0 Cannot store the message now; try again later"
        if failed and sender:
            await self._bounce_now(envelope, message, mid, failed)
        if remote or retry:
            wake = self.ctx.wake_queue
            if wake is not None:
                wake()
        metrics.RECEIVED.inc()
        metrics.DELIVERED.inc(len(delivered))
        self._track("receive", envelope, mid, len(message), "2.0.0",
                    f"delivered {len(delivered)}, queued {len(remote) + len(retry)}, "
                    f"failed {len(failed)}", client)
        return f"250 2.0.0 Ok: queued as {envelope.queue_id}"

    async def _bounce_now(
        self, envelope: MailEnvelope, message: bytes, mid: str | None, failed: list[LocalResult]
    ) -> None:
        """Some recipients were refused for good at DATA (after RCPT said yes): their
        notice goes out through the queue like any bounce."""
        sender = sender_of(envelope)
        try:
            targets = await self.ctx.router.targets(sender)
        except Exception:
            targets = []
        if not targets:
            return
        body = dsn.build(
            reporting_mta=self.ctx.hostname, original_sender=sender, original_message_id=mid,
            original=message,
            recipients=[dsn.RecipientReport(r.address, dsn.FAILED, r.code, r.reason)
                        for r in failed],
            arrived=self.ctx.clock(), now=self.ctx.clock(),
        )
        try:
            await self._enqueue(new_queue_id(), "", targets, body, None, is_dsn=True)
        except StoreError as exc:
            log_event("smtp_error", message=f"cannot queue a bounce: {exc}", vs=self.ctx.vs)

    def _track(
        self, event: str, envelope: MailEnvelope, mid: str | None, size: int, result: str,
        detail: str, client: str,
    ) -> None:
        self.ctx.tracking.record(
            event, queue_id=envelope.queue_id, message_id=mid, sender=sender_of(envelope),
            recipients=envelope.rcpt_tos, size=size, result=result, detail=detail, client=client,
        )

    # ------------------------------------------------------------------ errors

    async def handle_exception(self, error: Exception) -> str:
        log_event("smtp_error", message=f"{type(error).__name__}: {error}", vs=self.ctx.vs)
        return "451 4.3.0 Internal error; try again later"

