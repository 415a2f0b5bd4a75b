"""The SMTP and POP3 services of one virtual server in their own process, for bench.mail.

    python -m bench.mail_server DISK ADDRESS SMTP_PORT POP3_PORT

Serves domain bench.test (u1..u10, password "bench") from a static in-memory directory;
prints one line "ready" once it listens."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clustermail import eventloop
from clustermail.mail.backends import MailboxRef, RecipientLookup
from clustermail.mail.net.listener import ListenerLimits
from clustermail.mail.net.tls import ensure_certificate, server_context
from clustermail.mail.pop3.server import Pop3Ports, Pop3Service
from clustermail.mail.queue.routing import Router
from clustermail.mail.queue.runner import QueueRunner, RunnerConfig
from clustermail.mail.queue.store import Queue, queue_path
from clustermail.mail.queue.tracking import TrackingLog
from clustermail.mail.smtp.handler import SmtpContext
from clustermail.mail.smtp.policy import SmtpLimits
from clustermail.mail.smtp.server import SmtpPorts, SmtpService
from clustermail.mail.store import MailboxDatabase, MailStore, StoreError

DOMAIN = "bench.test"
USERS = [f"u{i}@{DOMAIN}" for i in range(1, 11)]
PASSWORD = "bench"


@dataclass(frozen=True)
class Entry:
    address: str
    server: str = "mail1"
    storage_group: str = "SG1"
    database: str = "DB1"
    enabled: bool = True

    @property
    def mailbox_id(self) -> str:
        return self.address  # the mailbox's data is named by its address here


class StaticDirectory:
    def __init__(self) -> None:
        self.entries = {u: Entry(u) for u in USERS}

    async def resolve(self, address: str) -> list[MailboxRef]:
        e = self.entries.get(address.lower())
        return [e] if e else []

    async def is_local_domain(self, domain: str) -> bool:
        return domain.lower() == DOMAIN

    async def mailbox(self, address: str) -> MailboxRef | None:
        return self.entries.get(address.lower())

    async def authenticate(self, username: str, password: str) -> MailboxRef | None:
        e = self.entries.get(username.lower())
        return e if e is not None and password == PASSWORD else None

    async def send_as(self, mailbox: str, *, covering: Collection[str] = ()) -> set[str]:
        return {mailbox}


class BenchMailStore:
    def __init__(self, disk: Path) -> None:
        self.store = MailStore(disk)
        self.store.mount(1)
        self.directory: RecipientLookup = StaticDirectory()
        db = self.store.database("SG1", "DB1")
        for u in USERS:
            if not db.has_mailbox(u):
                db.create_mailbox_sync(u)

    def database_for(self, entry: MailboxRef) -> MailboxDatabase:
        return self.store.database(entry.storage_group, entry.database)

    async def mailbox_database(self, entry: MailboxRef) -> MailboxDatabase:
        """What the mail_store resource does (MailStoreResource.mailbox_database), so that
        delivery here takes the resource host's path: it creates a mailbox the directory
        has homed here before the database holds it."""
        db = self.database_for(entry)
        if not await asyncio.to_thread(db.has_mailbox, entry.mailbox_id):
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(db.create_mailbox_sync, entry.mailbox_id)
        return db


async def main(disk: Path, address: str, smtp_port: int, pop3_port: int) -> None:
    ms = BenchMailStore(disk)
    queue = Queue(queue_path(disk), time.time)
    queue.open(1)
    tracking = TrackingLog(disk, "mail1")
    router = Router(ms.directory, "mail1")
    tls = server_context(ensure_certificate(disk, "mail1.bench.test"))
    ctx = SmtpContext(vs="mail1", hostname="mail1.bench.test", router=router, mail_store=ms,
                      queue=queue, tracking=tracking, limits=SmtpLimits())
    runner = QueueRunner(queue, router, ms, tracking, RunnerConfig("mail1.bench.test"))
    smtp = SmtpService(ctx, runner, address, SmtpPorts(smtp_port, 0, 0), tls, ListenerLimits())
    pop3 = Pop3Service("mail1", "mail1.bench.test", ms, address, Pop3Ports(pop3_port, 0), tls,
                       ListenerLimits(), allow_plaintext_on_loopback=True)
    await smtp.start()
    await pop3.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    eventloop.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))


def base_resources(address: str, data: Path) -> list[dict[str, Any]]:
    """The resources under a bench virtual server's protocols in a real resource host:
    its address, name, disk and mail store."""
    return [
        {"name": "ip", "type": "ip_address", "properties": {"address": address}},
        {"name": "name", "type": "network_name", "properties": {"name": "mail1"},
         "depends_on": ["ip"]},
        {"name": "disk", "type": "disk", "properties": {"path": f"{data}/disks/mail1"}},
        {"name": "store", "type": "mail_store", "depends_on": ["disk"]},
    ]
