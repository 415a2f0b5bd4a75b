"""The ``admin_service`` resource type: the REST API, cluster metrics and the web console,
run by the cluster's own group (``kind = "cluster"``) and failed over with it.

It depends on the group's ``ip_address`` and listens there: HTTPS on ``https_port``
(default 8443) and, only when that address is a loopback address, plain HTTP on
``http_port`` (default 8080; 0 turns a listener off). The certificate is the
administrator's (``cert`` + ``key``) or the cluster's own self-signed one, made
once and kept in the coordination store (``/clustermail-admin/tls``), so every
node serves the same certificate and a client that pinned it still trusts the
console after a failover.

The module imports the web framework only when the resource comes online: spare
resource hosts import every resource type while they wait.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from clustermail.cluster.model import PropertyValue
from clustermail.cluster.resource_schema import PropertyKind, PropertySpec, ResourceType
from clustermail.cluster.resources.base import (
    Properties,
    PropertyError,
    Resource,
    ResourceContext,
    ResourceError,
)
from clustermail.cluster.resources.ip_address import IpAddressResource
from clustermail.coord import Compare, Put, Store

if TYPE_CHECKING:
    from clustermail.admin.api.server import ApiServer

TLS_KEY = "/clustermail-admin/tls"
CHECK_TIMEOUT = 5.0


def _port(properties: Properties, key: str, default: int) -> int:
    value = properties.integer(key, default)
    if value > 65535:
        raise PropertyError(f"property {key!r}: expected a port from 0 to 65535, got {value}")
    return value


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


async def cluster_certificate(store: Store, hostname: str, address: str) -> tuple[bytes, bytes]:
    """The cluster's self-signed certificate and key (PEM), made by the first caller."""
    from clustermail.mail.net.tls import self_signed

    kv = await store.get(TLS_KEY)
    if kv is None:
        cert, key = await asyncio.to_thread(self_signed, hostname, (address,))
        record = json.dumps({"cert": cert.decode(), "key": key.decode()})
        await store.txn([Compare.absent(TLS_KEY)], [Put(TLS_KEY, record)])
        kv = await store.get(TLS_KEY)
    if kv is None:
        raise ResourceError("the cluster certificate vanished from the store; retrying")
    data = json.loads(kv.value)
    return str(data["cert"]).encode(), str(data["key"]).encode()


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class AdminServiceResource(Resource):
    def __init__(self, ctx: ResourceContext, properties: Properties) -> None:
        super().__init__(ctx, properties)
        self.http_port = _port(properties, "http_port", 8080)
        self.https_port = _port(properties, "https_port", 8443)
        self.cert = properties.optional_string("cert")
        self.key = properties.optional_string("key")
        self.hostname = properties.optional_string("hostname") or ctx.vs
        self.server: ApiServer | None = None
        self.urls: list[str] = []

    async def _tls(self, store: Store, address: str) -> ssl.SSLContext:
        from clustermail.mail.net.tls import CertificatePaths, TlsError, server_context

        if self.cert is not None and self.key is not None:
            paths = CertificatePaths(Path(self.cert), Path(self.key), generated=False)
        else:
            cert, key = await cluster_certificate(store, self.hostname, address)
            folder = self.ctx.data_dir / "admin-tls"
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            paths = CertificatePaths(folder / f"{self.ctx.vs}.crt", folder / f"{self.ctx.vs}.key",
                                     generated=True)
            await asyncio.to_thread(_write_private, paths.key, key)
            await asyncio.to_thread(_write_private, paths.cert, cert)
        try:
            return server_context(paths)
        except TlsError as exc:
            raise ResourceError(f"{self.ctx.resource}: {exc}",
                                permanent=self.cert is not None) from exc

    async def online(self) -> None:
        from clustermail.admin.api.server import ApiServer, Listener, make_context

        address = self.ctx.dependency(IpAddressResource).address
        if self.http_port and not is_loopback(address):
            raise ResourceError(
                f"{self.ctx.resource}: plain HTTP is served only on a loopback address, "
                f"not on {address}: set http_port = 0 (HTTPS stays on {self.https_port})",
                permanent=True)
        store = await self.ctx.store()
        listeners = []
        if self.http_port:
            listeners.append(Listener(address, self.http_port))
        if self.https_port:
            listeners.append(Listener(address, self.https_port, await self._tls(store, address)))
        api = await make_context(store, self.ctx.node, self.ctx.data_dir)
        server = ApiServer(api)
        try:
            await server.start(listeners)
        except OSError as exc:
            raise ResourceError(f"{self.ctx.resource}: cannot listen on {address}: "
                                f"{exc.strerror or exc}") from exc
        self.server = server
        self.urls = [listener.url for listener in server.listeners]
        self.ctx.log.info(f"admin service on {', '.join(self.urls)} (console at "
                          f"{self.urls[0]}/console/)")

    async def offline(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.stop()

    async def quick_check(self) -> bool:
        return self.server is not None and self.server.runner is not None

    async def thorough_check(self) -> bool:
        """The health route answers on the first listener, within CHECK_TIMEOUT."""
        import aiohttp

        server = self.server
        if server is None or not server.listeners:
            return False
        listener = server.listeners[0]
        try:
            # Our own certificate: nothing to verify it against, and no need to.
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=CHECK_TIMEOUT)) as session, \
                    session.get(listener.url + "/api/v1/health", ssl=False) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False


def _port_check(value: PropertyValue) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535
    return None if ok else "a port from 1 to 65535 (0 turns the listener off)"


def _check(props: object) -> list[tuple[str, str]]:
    assert isinstance(props, dict)
    out = []
    if (props.get("cert") is None) != (props.get("key") is None):
        out.append(("cert" if props.get("cert") is None else "key",
                    "give both cert and key, or neither"))
    if props.get("http_port") == 0 and props.get("https_port") == 0:
        out.append(("https_port", "http_port and https_port are both 0: nothing to serve"))
    return out


ADMIN_SERVICE_TYPE = ResourceType(
    "admin_service",
    AdminServiceResource,
    {
        "http_port": PropertySpec(PropertyKind.INT, default=8080, check=_port_check),
        "https_port": PropertySpec(PropertyKind.INT, default=8443, check=_port_check),
        "cert": PropertySpec(PropertyKind.STR),
        "key": PropertySpec(PropertyKind.STR),
        "hostname": PropertySpec(PropertyKind.STR),
    },
    check=lambda props: _check(dict(props)),
)
