"""The ``imap4`` resource type: the IMAP server of a virtual server, in its resource host.

Properties: ``port`` (143), ``tls_port`` (993; 0 turns implicit TLS off),
``allow_plaintext_on_loopback`` (false), ``idle_timeout`` (seconds, at least 1800
by RFC 3501; smaller values are for tests), ``idle_keepalive`` (120 s between the
``* OK Still here`` an idling session gets, Dovecot's ``imap_idle_notify_interval``),
``login_timeout`` (60 s from the connect
to the login), ``write_timeout`` (60 s a write may wait for a client that does not
read), ``max_line_length`` (65536, Dovecot's ``imap_max_line_length``),
``max_userip_connections`` (10, Dovecot's ``mail_max_userip_connections``),
``max_bad_commands`` (10 BAD answers in a row close the connection, as Dovecot does),
``error_sleep_time`` (1 s each BAD answer waits from the third in a row on),
``max_connections`` (1000) and ``max_connections_per_client`` (50), and as for SMTP
and POP3 ``hostname`` and ``cert`` + ``key`` (else the virtual server's self-signed
certificate).

Dependencies: the group's ``ip_address`` (where to listen) and its
``mail_store`` resource, which provides the recipient directory (passwords)
and ``database_for(entry)``; the mailbox id in the store is the entry's
address. UIDVALIDITY and UIDs live in the mailbox databases, so they survive a
failover unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from clustermail.cluster.model import PropertyValue
from clustermail.cluster.resource_schema import PropertyKind, PropertySpec, ResourceType
from clustermail.cluster.resources import (
    Properties,
    PropertyError,
    Resource,
    ResourceContext,
    ResourceError,
)
from clustermail.mail.imap import idle_timeout, user_connections
from clustermail.mail.imap.context import (
    ERROR_SLEEP_TIME,
    LOGIN_TIMEOUT,
    MAX_BAD_COMMANDS,
    WRITE_TIMEOUT,
)
from clustermail.mail.imap.framing import FramingLimits
from clustermail.mail.imap.server import ImapServer
from clustermail.mail.imap.session import SessionConfig
from clustermail.mail.net import protocol_resource as pr
from clustermail.mail.net.listener import shared_throttle
from clustermail.mail.store import MailboxDatabase

MIN_IDLE_TIMEOUT = 30 * 60.0
#: A command line may be this long at least (a LIST of a 1000-character name) and at
#: most as long as a whole command may be.
LINE_LENGTH = (4096, FramingLimits().max_command)


def _line_length(value: PropertyValue) -> str | None:
    ok = (
        isinstance(value, int)
        and not isinstance(value, bool)
        and LINE_LENGTH[0] <= value <= LINE_LENGTH[1]
    )
    return None if ok else f"an integer from {LINE_LENGTH[0]} to {LINE_LENGTH[1]} (bytes)"


def _at_least_zero(value: PropertyValue) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    return None if ok else "a number >= 0"


class Imap4Resource(Resource):
    def __init__(self, ctx: ResourceContext, properties: Properties) -> None:
        super().__init__(ctx, properties)
        self.port = properties.integer("port", 143, minimum=1)
        self.tls_port = properties.integer("tls_port", 993, minimum=0)
        self.allow_plaintext = properties.boolean("allow_plaintext_on_loopback", False)
        self.idle_timeout = properties.number(
            "idle_timeout", idle_timeout.DEFAULT, minimum=idle_timeout.MINIMUM
        )
        self.login_timeout = properties.number(
            "login_timeout", LOGIN_TIMEOUT, minimum=idle_timeout.MINIMUM
        )
        self.write_timeout = properties.number(
            "write_timeout", WRITE_TIMEOUT, minimum=idle_timeout.MINIMUM
        )
        self.idle_keepalive = properties.number(
            "idle_keepalive", idle_timeout.KEEPALIVE, minimum=idle_timeout.MINIMUM
        )
        line = properties.integer("max_line_length", FramingLimits().max_line, minimum=1)
        problem = _line_length(line)
        if problem is not None:
            raise PropertyError(f"property 'max_line_length': expected {problem}, got {line}")
        self.framing = FramingLimits(max_line=line)
        self.max_userip = properties.integer(
            "max_userip_connections", user_connections.DEFAULT_LIMIT, minimum=1
        )
        self.max_bad = properties.integer("max_bad_commands", MAX_BAD_COMMANDS, minimum=1)
        self.error_sleep = properties.number("error_sleep_time", ERROR_SLEEP_TIME, minimum=0)
        # Connection counts only: idle timeouts are the session's (idle_timeout above).
        self.limits = pr.listener_limits(properties, MIN_IDLE_TIMEOUT)
        self.server: ImapServer | None = None
        self.address: str | None = None

    async def online(self) -> None:
        # Address, mail store and certificate found as SMTP and POP3 find them.
        setup = await pr.service_setup(self.ctx, self.properties)
        self.address, store, tls = setup.address, setup.mail_store, setup.tls

        def locate(entry: Any) -> tuple[MailboxDatabase, str]:
            return store.database_for(entry), str(entry.mailbox_id)

        server = ImapServer(
            store.directory,
            locate,
            tls=tls,
            allow_plaintext_on_loopback=self.allow_plaintext,
            config=SessionConfig(
                idle_timeout=self.idle_timeout,
                idle_keepalive=self.idle_keepalive,
                login_timeout=self.login_timeout,
                write_timeout=self.write_timeout,
                max_userip_connections=self.max_userip,
                max_bad_commands=self.max_bad,
                error_sleep_time=self.error_sleep,
                limits=self.framing,
            ),
            throttle=shared_throttle(self.ctx.vs),
            limits=self.limits,
        )
        try:
            await server.listen(self.address, self.port)
            if self.tls_port:
                await server.listen(self.address, self.tls_port, implicit_tls=True)
        except OSError as exc:
            await server.close()
            raise ResourceError(
                f"{self.ctx.resource}: cannot listen on {self.address}:{self.port}: {exc}"
            ) from None
        self.server = server
        self.ctx.log.info("imap4 online", address=self.address, port=self.port,
                          tls_port=self.tls_port)

    async def offline(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.close()

    async def quick_check(self) -> bool:
        return self.server is not None and self.server.serving

    async def thorough_check(self) -> bool:
        """A real client's first step: connect and read the greeting."""
        if not await self.quick_check() or self.address is None:
            return False
        try:
            async with asyncio.timeout(5):
                reader, writer = await asyncio.open_connection(self.address, self.port)
        except (OSError, TimeoutError):
            return False
        try:
            async with asyncio.timeout(5):
                greeting = await reader.readline()
            return greeting.startswith(b"* OK")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.write(b"x LOGOUT\r\n")
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()



IMAP4_TYPE = ResourceType(
    "imap4",
    Imap4Resource,
    {
        **{k: v for k, v in pr.COMMON_PROPERTIES.items() if k != "timeout"},  # idle_timeout
        "port": PropertySpec(PropertyKind.INT, default=143, check=pr.port_check),
        "tls_port": PropertySpec(PropertyKind.INT, default=993, check=pr.port_check),
        "allow_plaintext_on_loopback": PropertySpec(PropertyKind.BOOL, default=False),
        "idle_timeout": PropertySpec(PropertyKind.FLOAT, check=idle_timeout.check_idle_timeout),
        "login_timeout": PropertySpec(PropertyKind.FLOAT, check=idle_timeout.check_idle_timeout),
        "write_timeout": PropertySpec(PropertyKind.FLOAT, check=idle_timeout.check_idle_timeout),
        "idle_keepalive": PropertySpec(PropertyKind.FLOAT, check=idle_timeout.check_idle_timeout),
        "max_line_length": PropertySpec(PropertyKind.INT, check=_line_length),
        "max_userip_connections": PropertySpec(PropertyKind.INT, check=pr.above_zero),
        "max_bad_commands": PropertySpec(PropertyKind.INT, check=pr.above_zero),
        "error_sleep_time": PropertySpec(PropertyKind.FLOAT, check=_at_least_zero),
    },
    check=pr.tls_pair,
)
