"""The SMTP and POP3 services in-process on real sockets, over the real recipient
directory (a SQLite coordination store, argon2id hashing in worker threads) and a real
mail store, for the hostile-client tests of SMTP, POP3 and login throttling."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from argon2 import PasswordHasher

from clustermail.coord import Store, open_store
from clustermail.mail.backends import RecipientLookup
from clustermail.mail.directory import Directory
from clustermail.mail.directory.passwords import Passwords
from clustermail.mail.net.auth_throttle import AuthThrottle
from clustermail.mail.net.listener import ListenerLimits
from clustermail.mail.net.tls import ensure_certificate, server_context
from clustermail.mail.pop3.server import Pop3Ports, Pop3Service
from clustermail.mail.queue.routing import Router
from clustermail.mail.queue.store import Queue, queue_path
from clustermail.mail.queue.tracking import TrackingLog
from clustermail.mail.smtp.handler import SmtpContext
from clustermail.mail.smtp.policy import SmtpLimits
from clustermail.mail.smtp.server import SmtpPorts, SmtpService
from tests.support.mail_fakes import DOMAIN, PASSWORD, FakeDirectory, FakeMailStore
from tests.support.ports import free_port

ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
ALIAS = f"al@{DOMAIN}"  # an alias of alice
#: Cheap hashing keeps most tests fast; the queue tests pass argon2's defaults (~0.15 s a
#: check, paid by logins of unknown users, whose dummy hash is made with them).
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@dataclass
class Servers:
    store: Store
    directory: RecipientLookup
    mail_store: FakeMailStore
    throttle: AuthThrottle
    smtp: SmtpService
    smtp_ports: SmtpPorts
    pop3: Pop3Service
    pop3_ports: Pop3Ports
    queue: Queue
    tracking: TrackingLog
    ids: dict[str, str]  # address -> the mailbox's id (its name in the database)
    address: str = "127.0.0.1"

    async def stop(self) -> None:
        await self.smtp.stop()
        await self.pop3.stop()
        self.queue.close()
        self.tracking.close()
        self.mail_store.close()
        await self.store.close()

    def inbox(self, address: str) -> list[bytes]:
        db = self.mail_store.store.database("SG1", "DB1")
        listing = db.list_messages(self.ids[address], "INBOX")
        return [db.fetch_raw(self.ids[address], "INBOX", uid) for uid in listing.uids]

    def deliver(self, address: str, message: bytes) -> None:
        self.mail_store.store.database("SG1", "DB1").deliver_sync(message, [self.ids[address]])


async def start_servers(
    tmp: Path,
    *,
    throttle: AuthThrottle | None = None,
    limits: SmtpLimits | None = None,
    idle_timeout: float = 30.0,
    pop3_login_timeout: float = 60.0,
    hasher: PasswordHasher = CHEAP,
    max_per_client: int = 50,
) -> Servers:
    store = await open_store(f"sqlite://{tmp}/cluster.db")
    admin = Directory(store, passwords=Passwords(CHEAP))  # users are added fast ...
    await admin.add_domain(DOMAIN)
    await admin.add_mailbox(ALICE, password=PASSWORD, server="mail1")
    await admin.add_mailbox(BOB, password=PASSWORD, server="mail1")
    await admin.add_alias(ALIAS, ALICE)
    # ... and served with ``hasher``: an unknown user costs a check of its dummy hash
    served = Directory(store, passwords=Passwords(hasher))
    # Directory returns MailboxEntry lists where the protocol says MailboxRef (list is
    # invariant); the mail_store resource hands it over the same way, untyped.
    directory = cast(RecipientLookup, served)
    # The mailboxes in the mail store, named by their ids (what the mail_store resource
    # does from the directory)
    mail_store = FakeMailStore(tmp / "disk", FakeDirectory())
    mail_store.directory = directory
    ids = {e.address: e.mailbox_id for e in await admin.list_mailboxes()}
    for mailbox_id in ids.values():
        mail_store.store.database("SG1", "DB1").create_mailbox_sync(mailbox_id)

    throttle = throttle or AuthThrottle()
    disk = tmp / "disk"
    queue = Queue(queue_path(disk), time.time)
    queue.open(1)
    tracking = TrackingLog(disk, "mail1")
    router = Router(directory, "mail1", None)
    ctx = SmtpContext(vs="mail1", hostname=f"mail1.{DOMAIN}", router=router,
                      mail_store=mail_store, queue=queue, tracking=tracking,
                      limits=limits or SmtpLimits(), throttle=throttle)
    address = "127.0.0.1"
    cert = server_context(ensure_certificate(disk, f"mail1.{DOMAIN}", addresses=(address,)))
    listener_limits = ListenerLimits(idle_timeout=idle_timeout, max_per_client=max_per_client)
    smtp_ports = SmtpPorts(free_port(address), free_port(address), free_port(address))
    smtp = SmtpService(ctx, None, address, smtp_ports, cert, listener_limits,
                       plaintext_auth=True)
    await smtp.start()
    pop3_ports = Pop3Ports(free_port(address), free_port(address))
    pop3 = Pop3Service("mail1", f"mail1.{DOMAIN}", mail_store, address, pop3_ports, cert,
                       listener_limits, allow_plaintext_on_loopback=True, throttle=throttle,
                       login_timeout=pop3_login_timeout)
    await pop3.start()
    return Servers(store, directory, mail_store, throttle, smtp, smtp_ports, pop3, pop3_ports,
                   queue, tracking, ids)


def insecure_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(port: int, source: str = "127.0.0.1", address: str = "127.0.0.1",
            timeout: float = 10.0) -> socket.socket:
    """A TCP connection from ``source`` (any 127.0.0.0/8 address works on Linux: each is
    another client address for the server's limits and throttle)."""
    s = socket.create_connection((address, port), timeout=timeout, source_address=(source, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def smtp_reply(f: BinaryIO) -> bytes:
    """The last line of one SMTP reply (b"" at end of stream)."""
    while True:
        line = f.readline()
        if not line or line[3:4] != b"-":
            return line


class AsyncClient:
    """A line client on the event loop (tests that run many clients at once must not use
    threads: the servers' password checks need the same default thread pool)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1",
                   address: str = "127.0.0.1") -> AsyncClient:
        reader, writer = await asyncio.open_connection(address, port, local_addr=(source, 0))
        return cls(reader, writer)

    async def line(self, timeout: float = 30.0) -> bytes:
        async with asyncio.timeout(timeout):
            return await self.reader.readline()

    async def reply(self, timeout: float = 30.0) -> bytes:
        """The last line of an SMTP reply (b"" at end of stream)."""
        while True:
            line = await self.line(timeout)
            if not line or line[3:4] != b"-":
                return line

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def plain(user: str, password: str) -> bytes:
    return base64.b64encode(f"\0{user}\0{password}".encode())


async def smtp_auth(port: int, user: str, password: str, source: str = "127.0.0.1") -> bytes:
    """One AUTH PLAIN on an SMTP port (plaintext allowed on loopback here); its reply."""
    c = await AsyncClient.open(port, source)
    try:
        await c.line()
        await c.send(b"EHLO x\r\n")
        await c.reply()
        await c.send(b"AUTH PLAIN " + plain(user, password) + b"\r\n")
        return await c.reply()
    finally:
        await c.close()


async def pop3_login(port: int, user: str, password: str, source: str = "127.0.0.1") -> bytes:
    """USER/PASS on a POP3 port; the answer to PASS."""
    c = await AsyncClient.open(port, source)
    try:
        await c.line()
        await c.send(f"USER {user}\r\nPASS {password}\r\n".encode())
        await c.line()
        return await c.line()
    finally:
        await c.close()
