"""The SMTP service of one virtual server: three listeners and the queue runner.

* inbound (port 25; 2525 in the demo): mail for the cluster's domains from anyone,
  STARTTLS offered, AUTH after TLS (then relaying is allowed);
* submission (587; 2587): STARTTLS, AUTH required before MAIL;
* submissions (465; 2465): implicit TLS (RFC 8314), AUTH required.

:class:`ClusterSMTP` is aiosmtpd's ``SMTP`` with three small additions and no change to
its state machine: connection admission (limits per listener and client address),
TCP_NODELAY, and enhanced status codes on every reply (:mod:`.replies`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope

from clustermail.mail.net.listener import (
    Admission,
    Endpoint,
    Listener,
    ListenerLimits,
    client_address,
    set_nodelay,
)
from clustermail.mail.queue.runner import QueueRunner
from clustermail.mail.smtp.handler import MailEnvelope, SmtpContext, SmtpHandler
from clustermail.mail.smtp.policy import SmtpLimits
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


class ClusterSMTP(SMTP):
    def __init__(
        self,
        handler: SmtpHandler,
        *,
        admission: Admission,
        implicit_tls: bool,
        sessions: weakref.WeakSet[ClusterSMTP] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, ident=IDENT, **kwargs)
        if sessions is not None:
            sessions.add(self)
        self._admission = admission
        self._admitted: str | None = None
        self._implicit_tls = implicit_tls
        self._greeted = False  # the greeting carries no enhanced code (RFC 2034) ...
        self._in_helo = False  # ... nor do the replies to HELO/EHLO

    def close(self) -> None:
        """Ends the session now (the resource goes offline)."""
        if self.transport is not None:
            self.transport.close()

    @property
    def secure(self) -> bool:
        return self._implicit_tls or self._tls_protocol is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._admitted is None and self._original_transport is None:
            set_nodelay(transport)
            client = client_address(transport)
            if not self._admission.admit(client):
                transport.write(BUSY)  # type: ignore[attr-defined]
                transport.close()
                return
            self._admitted = client
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        client, self._admitted = self._admitted, None
        if client is None and self.session is None:
            return  # refused at admission: the state machine never started
        if client is not None:
            self._admission.release(client)
        super().connection_lost(error)

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

    async def push(self, status: AnyStr) -> None:
        self_greeted, self._greeted = self._greeted, True
        if isinstance(status, str) and self_greeted and not self._in_helo:
            await super().push(with_enhanced(status))
        else:
            await super().push(status)

    async def smtp_EHLO(self, hostname: str) -> None:
        self._in_helo = bool(hostname)  # a syntax error still gets its enhanced code
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_helo = False

    async def smtp_HELO(self, hostname: str) -> None:
        self._in_helo = bool(hostname)
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._in_helo = False


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
