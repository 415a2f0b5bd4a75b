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

from clustermail.cluster.resources import Properties, PropertyError, Resource, ResourceContext
from clustermail.cluster.resources.ip_address import IpAddressResource
from clustermail.mail.imap.resource import Imap4Resource
from clustermail.mail.net.auth_throttle import Refused
from clustermail.mail.net.listener import shared_throttle
from clustermail.mail.store import MailboxDatabase
from tests.support.ports import free_port
from tests.support.resource_env import Env


@dataclass(frozen=True)
class Entry:
    address: str

    @property
    def mailbox_id(self) -> str:
        return self.address  # the mailbox's data is named by its address here


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
        max_delay, throttle.max_delay = throttle.max_delay, 0.1  # refusals answered late
        try:
            for _ in range(throttle.max_failures):
                attempt = throttle.begin("127.0.0.1", "alice@example.test")
                assert not isinstance(attempt, Refused)
                throttle.failure(attempt)
            with pytest.raises(LoginError, match="UNAVAILABLE"):
                await asyncio.to_thread(session)
        finally:
            throttle.reset()
            throttle.max_delay = max_delay
    finally:
        await imap.offline()
        await ip.offline()
        db.dismount()
    assert not await imap.quick_check()


def test_imap4_properties_in_a_cluster_file() -> None:
    """What an administrator may write for imap4 (the same TLS and limit properties as
    SMTP and POP3), and what is refused before it reaches a node."""
    from clustermail.cluster.config import ConfigError, config_from_dict

    def config(props: dict[str, Any]) -> dict[str, Any]:
        return {
            "nodes": {"node1": {}},
            "virtual_servers": {"mail1": {"resources": {
                "ip": {"type": "ip_address", "properties": {"address": "127.0.0.23"}},
                "imap": {"type": "imap4", "depends_on": ["ip"], "properties": props},
            }}},
        }

    ok = config_from_dict(config({
        "port": 143, "tls_port": 993, "cert": "/etc/ssl/mail.pem", "key": "/etc/ssl/mail.key",
        "hostname": "mail.example.test", "max_connections": 500,
        "max_connections_per_client": 20, "idle_timeout": 1800.0, "login_timeout": 30.0,
        "write_timeout": 120.0, "max_line_length": 8192, "max_userip_connections": 20,
        "idle_keepalive": 60.0,
    }))
    assert ok.virtual_servers[0].resource("imap") is not None
    with pytest.raises(ConfigError) as info:
        config_from_dict(config({"port": 70000, "timeout": 5.0}))
    text = str(info.value)
    assert "port from 1 to 65535" in text
    assert "unknown property for type imap4: 'timeout'" in text
    with pytest.raises(ConfigError, match="give both cert and key"):
        config_from_dict(config({"cert": "/etc/ssl/mail.pem"}))
    with pytest.raises(ConfigError) as info:
        config_from_dict(config({
            "max_line_length": 100, "login_timeout": 0, "max_userip_connections": 0,
            "idle_keepalive": 0,
        }))
    text = str(info.value)
    assert "max_line_length" in text and "from 4096 to 1048576" in text
    assert "login_timeout" in text and "max_userip_connections" in text
    assert "idle_keepalive" in text


def test_limits_reach_the_server(tmp_path: Path) -> None:
    resource = Env(tmp_path).make(Imap4Resource, "imap", {
        "login_timeout": 5, "write_timeout": 7.5, "max_line_length": 8192,
        "max_userip_connections": 3, "idle_keepalive": 30,
    })
    assert (resource.login_timeout, resource.write_timeout) == (5.0, 7.5)
    assert resource.idle_keepalive == 30.0
    assert resource.framing.max_line == 8192 and resource.max_userip == 3
    with pytest.raises(PropertyError, match="max_line_length"):
        Env(tmp_path).make(Imap4Resource, "imap", {"max_line_length": 10_000_000})


@pytest.mark.parametrize("value", [0, -5, 0.05, 0.1, 1, 30.5, 1800, True, "600"])
def test_idle_timeout_is_checked_as_the_resource_reads_it(tmp_path: Path, value: Any) -> None:
    """``config check`` refuses exactly the idle_timeout values the imap4 resource would
    refuse on every node (0 used to pass the check and then fail everywhere)."""
    from clustermail.cluster.config import ConfigError, config_from_dict
    from clustermail.mail.imap.idle_timeout import check_idle_timeout

    try:
        Env(tmp_path).make(Imap4Resource, "imap", {"idle_timeout": value})
        resource_accepts = True
    except PropertyError:
        resource_accepts = False
    assert (check_idle_timeout(value) is None) == resource_accepts
    cluster = {
        "nodes": {"node1": {}},
        "virtual_servers": {"mail1": {"resources": {
            "imap": {"type": "imap4", "properties": {"idle_timeout": value}},
        }}},
    }
    if resource_accepts:
        config_from_dict(cluster)
    else:
        with pytest.raises(ConfigError, match="idle_timeout"):
            config_from_dict(cluster)

