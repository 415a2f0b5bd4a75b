"""A POP3 service in-process on real sockets, over the in-memory directory and a real
mail store (:mod:`tests.support.mail_fakes`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clustermail.mail.net.listener import AuthThrottle, ListenerLimits
from clustermail.mail.net.tls import ensure_certificate, server_context
from clustermail.mail.pop3.server import Pop3Ports, Pop3Service
from tests.support.mail_fakes import DOMAIN, FakeDirectory, FakeMailStore
from tests.support.ports import free_port


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
