"""In-memory stand-ins for the recipient directory and the mail_store resource (same
methods as the real ones, without a coordination store or password hashing, so protocol
tests stay fast; the resource-host tests use the real ones), and helpers to run the SMTP
service in-process on real sockets."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from clustermail.mail.backends import MailboxRef, RecipientLookup
from clustermail.mail.net.listener import AuthThrottle, ListenerLimits
from clustermail.mail.net.tls import ensure_certificate, server_context
from clustermail.mail.queue.routing import Router
from clustermail.mail.queue.runner import QueueRunner, RunnerConfig
from clustermail.mail.queue.schedule import RetryPolicy
from clustermail.mail.queue.store import Queue, queue_path
from clustermail.mail.queue.tracking import TrackingLog
from clustermail.mail.smtp.handler import SmtpContext
from clustermail.mail.smtp.policy import SmtpLimits
from clustermail.mail.smtp.server import SmtpPorts, SmtpService
from clustermail.mail.store import MailboxDatabase, MailStore
from tests.support.ports import free_port

DOMAIN = "example.test"
PASSWORD = "secret-pw"


@dataclass(frozen=True)
class Entry:
    address: str
    display_name: str = ""
    server: str = "mail1"
    storage_group: str = "SG1"
    database: str = "DB1"
    password_hash: str = ""
    quota: int | None = None
    enabled: bool = True

    @property
    def mailbox_id(self) -> str:
        return self.address  # the mailbox's data is named by its address here


@dataclass
class FakeDirectory:
    entries: dict[str, Entry] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, list[str]] = field(default_factory=dict)
    domains: set[str] = field(default_factory=lambda: {DOMAIN})

    def add(self, address: str, server: str = "mail1", password: str = PASSWORD,
            enabled: bool = True) -> Entry:
        entry = Entry(address, server=server, enabled=enabled)
        self.entries[address] = entry
        self.passwords[address] = password
        return entry

    async def resolve(self, address: str) -> list[MailboxRef]:
        address = address.lower()
        local, _, domain = address.partition("@")
        address = f"{local.split('+', 1)[0]}@{domain}"
        if address in self.aliases:
            return [self.entries[a] for a in self.aliases[address] if a in self.entries]
        entry = self.entries.get(address)
        return [entry] if entry else []

    async def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in self.domains

    async def mailbox(self, address: str) -> MailboxRef | None:
        return self.entries.get(address.lower())

    async def authenticate(self, username: str, password: str) -> MailboxRef | None:
        entry = self.entries.get(username.lower())
        if entry is None or self.passwords.get(entry.address) != password:
            return None
        return entry

    async def send_as(self, mailbox: str, *, covering: Collection[str] = ()) -> set[str]:
        out = {mailbox}
        for alias, targets in self.aliases.items():
            if targets == [mailbox]:
                out.add(alias)
        return out


class FakeMailStore:
    """The mail_store resource's surface: a mounted MailStore and the directory."""

    def __init__(self, disk: Path, directory: FakeDirectory, vs: str = "mail1",
                 epoch: int = 1) -> None:
        self.store = MailStore(disk)
        self.store.mount(epoch)
        self.directory: RecipientLookup = directory
        self.fake_directory = directory
        self.vs = vs
        self.sync_mailboxes()

    def sync_mailboxes(self) -> None:
        for entry in self.fake_directory.entries.values():
            if entry.server == self.vs:
                db = self.database_for(entry)
                if not db.has_mailbox(entry.address):
                    db.create_mailbox_sync(entry.address)

    def database_for(self, entry: MailboxRef) -> MailboxDatabase:
        return self.store.database(entry.storage_group, entry.database)

    def close(self) -> None:
        self.store.dismount()


@dataclass
class Running:
    service: SmtpService
    queue: Queue
    mail_store: FakeMailStore
    tracking: TrackingLog
    address: str
    ports: SmtpPorts
    disk: Path

    async def stop(self) -> None:
        await self.service.stop()
        self.queue.close()
        self.tracking.close()


async def start_smtp(
    disk: Path,
    directory: FakeDirectory,
    *,
    vs: str = "mail1",
    address: str = "127.0.0.1",
    limits: SmtpLimits | None = None,
    listener_limits: ListenerLimits | None = None,
    policy: RetryPolicy | None = None,
    smart_host: tuple[str, int] | None = None,
    store_url: str | None = None,
    mail_store: FakeMailStore | None = None,
    throttle: AuthThrottle | None = None,
    epoch: int = 1,
    ports: SmtpPorts | None = None,
    poll: float = 0.2,
) -> Running:
    from clustermail.coord import Store, open_store

    ms = mail_store or FakeMailStore(disk, directory, vs, epoch)
    queue = Queue(queue_path(disk), time.time)
    queue.open(epoch)
    tracking = TrackingLog(disk, vs)
    opened: list[Store] = []

    async def store() -> Store:
        if not opened:
            assert store_url is not None
            opened.append(await open_store(store_url))
        return opened[0]

    router = Router(directory, vs, store if store_url else None)
    ctx = SmtpContext(
        vs=vs, hostname=f"{vs}.{DOMAIN}", router=router, mail_store=ms, queue=queue,
        tracking=tracking, limits=limits or SmtpLimits(),
        throttle=throttle or AuthThrottle(),
    )
    runner = QueueRunner(
        queue, router, ms, tracking,
        RunnerConfig(f"{vs}.{DOMAIN}", smart_host, policy or RetryPolicy(base=0.2, max_interval=1),
                     poll=poll, relay_timeout=5),
    )
    cert = ensure_certificate(disk, f"{vs}.{DOMAIN}", addresses=(address,))
    ports = ports or SmtpPorts(free_port(address), free_port(address), free_port(address))
    service = SmtpService(
        ctx, runner, address, ports, server_context(cert),
        listener_limits or ListenerLimits(idle_timeout=30),
    )
    await service.start()
    return Running(service, queue, ms, tracking, address, ports, disk)


def require_tool(command: str, package: str) -> str:
    """The path of a client tool; a missing tool fails the test (it is installed by
    ./scripts/install-system-deps.sh, which `make test` runs): never a silent skip."""
    import shutil

    import pytest

    path = shutil.which(command)
    if path is None:
        pytest.fail(f"{command} is not installed: run ./scripts/install-system-deps.sh "
                    f"(apt-get install -y {package})")
    return path


async def run_tool(*argv: str, stdin: bytes = b"", timeout: float = 30.0) -> tuple[int, str]:
    """Runs a client tool without blocking the event loop the servers run on."""
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def three_users() -> FakeDirectory:
    """alice@ and bob@ on mail1, carol@ on mail2."""
    d = FakeDirectory()
    d.add(f"alice@{DOMAIN}")
    d.add(f"bob@{DOMAIN}")
    d.add(f"carol@{DOMAIN}", server="mail2")
    return d
