"""Helpers shared by the protocol resource types (smtp, pop3, imap4).

Each protocol resource depends on the virtual server's ``mail_store`` (which depends on
its disk) and ``ip_address``; it listens on that address, keeps its TLS certificate on
that disk, and names itself after the ``network_name`` resource.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clustermail.cluster.model import PropertyValue
from clustermail.cluster.resource_schema import PropertyKind, PropertySpec
from clustermail.cluster.resources.base import (
    Properties,
    PropertyError,
    ResourceContext,
    ResourceError,
)
from clustermail.cluster.resources.disk import DiskResource
from clustermail.cluster.resources.ip_address import IpAddressResource
from clustermail.cluster.resources.network_name import NetworkNameResource
from clustermail.mail.backends import MailStoreService
from clustermail.mail.net.listener import ListenerLimits
from clustermail.mail.net.tls import TlsError, ensure_certificate, server_context


def mail_store_dependency(ctx: ResourceContext) -> MailStoreService:
    """The ``mail_store`` resource among the direct dependencies (permanent error if none)."""
    for dep in ctx.dependencies():
        if isinstance(dep, MailStoreService):
            return dep
    raise ResourceError(
        f"{ctx.resource}: needs a dependency of type mail_store (add it to depends_on)",
        permanent=True,
    )


def vs_disk(ctx: ResourceContext, mail_store: MailStoreService) -> Path:
    """The virtual server's disk (the ``disk`` resource's folder; the mail store may live
    in a subfolder of it): the queue, the tracking log and the certificate go there."""
    for disk in ctx.of_type("disk"):
        if isinstance(disk, DiskResource):
            return disk.path
    return mail_store.store.disk


def service_address(ctx: ResourceContext) -> str:
    return ctx.dependency(IpAddressResource).address


def hostname(ctx: ResourceContext, properties: Properties) -> str:
    """The ``hostname`` property, else the virtual server's network name, else its name."""
    explicit = properties.optional_string("hostname")
    if explicit:
        return explicit
    names = ctx.of_type("network_name")
    if names and isinstance(names[0], NetworkNameResource):
        return names[0].name
    return ctx.vs


def port(properties: Properties, key: str, default: int) -> int:
    """A port property; 0 turns that listener off."""
    value = properties.integer(key, default)
    if value > 65535:
        raise PropertyError(f"property {key!r}: expected a port from 0 to 65535, got {value}")
    return value


def listener_limits(properties: Properties, default_timeout: float) -> ListenerLimits:
    return ListenerLimits(
        max_connections=properties.integer("max_connections", 1000, minimum=1),
        max_per_client=properties.integer("max_connections_per_client", 50, minimum=1),
        idle_timeout=properties.number("timeout", default_timeout, minimum=1),
    )


async def tls_context(
    ctx: ResourceContext, properties: Properties, disk: Path, name: str, address: str
) -> ssl.SSLContext:
    """The admin's certificate (``cert`` + ``key`` properties) or the virtual server's own
    self-signed one, kept on its disk."""
    cert = properties.optional_string("cert")
    key = properties.optional_string("key")
    try:
        paths = await asyncio.to_thread(
            ensure_certificate, disk, name,
            cert=Path(cert) if cert else None, key=Path(key) if key else None,
            addresses=(address,),
        )
        return server_context(paths)
    except TlsError as exc:
        raise ResourceError(f"{ctx.resource}: {exc}", permanent=cert is not None) from exc


@dataclass(frozen=True, slots=True)
class ServiceSetup:
    """What every protocol resource needs to come online, found the same way."""

    mail_store: MailStoreService
    address: str
    name: str
    disk: Path
    tls: ssl.SSLContext


async def service_setup(ctx: ResourceContext, properties: Properties) -> ServiceSetup:
    mail_store = mail_store_dependency(ctx)
    address = service_address(ctx)
    name = hostname(ctx, properties)
    disk = vs_disk(ctx, mail_store)
    tls = await tls_context(ctx, properties, disk, name, address)
    return ServiceSetup(mail_store, address, name, disk, tls)


# --------------------------------------------------------------------------- property schema


def port_check(value: PropertyValue) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535
    return None if ok else "a port from 1 to 65535 (0 turns the listener off)"


def above_zero(value: PropertyValue) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return None if ok else "a number greater than 0"


def tls_pair(props: Mapping[str, PropertyValue]) -> list[tuple[str, str]]:
    """The cross-property rule of every protocol type: a certificate comes with its key."""
    cert, key = props.get("cert"), props.get("key")
    if (cert is None) != (key is None):
        return [("cert" if cert is None else "key", "give both cert and key, or neither")]
    return []


#: The properties every protocol type takes (imap4 has ``idle_timeout``, not ``timeout``).
COMMON_PROPERTIES: Mapping[str, PropertySpec] = {
    "hostname": PropertySpec(PropertyKind.STR),
    "cert": PropertySpec(PropertyKind.STR),
    "key": PropertySpec(PropertyKind.STR),
    "timeout": PropertySpec(PropertyKind.FLOAT, check=above_zero),
    "max_connections": PropertySpec(PropertyKind.INT, check=above_zero),
    "max_connections_per_client": PropertySpec(PropertyKind.INT, check=above_zero),
    "allow_plaintext_on_loopback": PropertySpec(PropertyKind.BOOL),
}
