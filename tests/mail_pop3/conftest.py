from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clustermail.mail.net.listener import AuthThrottle, ListenerLimits
from clustermail.mail.net.tls import ensure_certificate, server_context
from clustermail.mail.pop3.server import Pop3Ports, Pop3Service
from tests.mail_smtp.fakes import DOMAIN, FakeDirectory, FakeMailStore, free_port, three_users


@dataclass
class Pop3:
    service: Pop3Service
    mail_store: FakeMailStore
    address: str
    plain: int
    tls: int

    def deliver(self, address: str, message: bytes) -> None:
        db = self.mail_store.store.database("SG1", "DB1")
        db.deliver_sync(message, [address])


async def start_pop3(disk: Path, directory: FakeDirectory, *, plaintext: bool = True,
                     throttle: AuthThrottle | None = None,
                     mail_store: FakeMailStore | None = None, idle_timeout: float = 30) -> Pop3:
    ms = mail_store or FakeMailStore(disk, directory)
    address = "127.0.0.1"
    ports = Pop3Ports(free_port(address), free_port(address))
    cert = ensure_certificate(disk, f"mail1.{DOMAIN}")
    service = Pop3Service("mail1", f"mail1.{DOMAIN}", ms, address, ports, server_context(cert),
                          ListenerLimits(idle_timeout=idle_timeout),
                          allow_plaintext_on_loopback=plaintext, throttle=throttle)
    await service.start()
    return Pop3(service, ms, address, ports.plain, ports.tls)


@pytest.fixture
def directory() -> FakeDirectory:
    return three_users()


@pytest.fixture
async def pop3(tmp_path: Path, directory: FakeDirectory) -> AsyncIterator[Pop3]:
    p = await start_pop3(tmp_path / "disk", directory)
    yield p
    await p.service.stop()
    p.mail_store.close()
