"""The imap4 resource type in a resource group: listens on the group's address, finds
mailboxes through the group's mail_store resource, answers the health checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from clustermail.cluster.resources import Properties, Resource, ResourceContext
from clustermail.cluster.resources.ip_address import IpAddressResource
from clustermail.mail.imap.resource import Imap4Resource
from clustermail.mail.listener import shared_throttle
from clustermail.mail.store import MailboxDatabase
from tests.imap_reference.dovecot import free_port
from tests.rhost.test_resources import Env


@dataclass(frozen=True)
class Entry:
    address: str


class FakeDirectory:
    async def authenticate(self, username: str, password: str) -> Entry | None:
        return Entry(username) if password == "pw" else None


class FakeMailStore(Resource):
    """Stand-in for the mail_store resource (built in parallel): one database."""

    db: MailboxDatabase

    def __init__(self, ctx: ResourceContext, properties: Properties) -> None:
        super().__init__(ctx, properties)
        self.directory = FakeDirectory()
        # Where the shared TLS plumbing keeps the virtual server's certificate.
        self.store: Any = SimpleNamespace(disk=ctx.data_dir)

    def database_for(self, entry: Any) -> MailboxDatabase:
        return self.db

    async def online(self) -> None:
        pass

    async def offline(self) -> None:
        pass

    async def quick_check(self) -> bool:
        return True

    async def thorough_check(self) -> bool:
        return True


FakeMailStore.type_name = "mail_store"


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path)
    yield e
    await e.store.close()


async def test_imap4_resource_serves_the_group(env: Env, tmp_path: Path) -> None:
    db = MailboxDatabase(tmp_path / "db.sqlite")
    db.mount(1)
    db.create_mailbox_sync("alice@example.test")
    db.deliver_sync(b"Subject: hi\r\n\r\nhello\r\n", ["alice@example.test"])
    ip = env.make(IpAddressResource, "ip", {"address": "127.0.0.23"})
    store = env.make(FakeMailStore, "store", {})
    store.db = db
    port = free_port("127.0.0.23")
    imap = env.make(
        Imap4Resource,
        "imap",
        {"port": port, "tls_port": 0, "allow_plaintext_on_loopback": True},
        deps=("ip", "store"),
    )
    await ip.online()
    await imap.online()
    try:
        assert await imap.quick_check() and await imap.thorough_check()

        def session() -> int:
            c = IMAPClient("127.0.0.23", port=port, ssl=False, timeout=5)
            c.login("alice@example.test", "pw")
            n = int(c.select_folder("INBOX")[b"EXISTS"])
            c.logout()
            return n

        import asyncio

        assert await asyncio.to_thread(session) == 1

        # Failed logins over SMTP or POP3 of this virtual server count here too: a
        # password guesser gets one budget per virtual server, not one per protocol.
        throttle = shared_throttle(env.vs)
        try:
            for _ in range(throttle.max_failures):
                throttle.failure("127.0.0.1")
            with pytest.raises(LoginError, match="UNAVAILABLE"):
                await asyncio.to_thread(session)
        finally:
            throttle.success("127.0.0.1")
    finally:
        await imap.offline()
        await ip.offline()
        db.dismount()
    assert not await imap.quick_check()
