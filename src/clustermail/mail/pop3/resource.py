"""The ``pop3`` resource type: POP3 access to the virtual server's mailboxes.

Depends on ``mail_store`` and ``ip_address``. Properties (all optional): ``port`` 110,
``tls_port`` 995 (0 turns one off), ``hostname``, ``cert`` / ``key``, ``timeout`` 600 s
(RFC 1939's autologout minimum), ``login_timeout`` 60 s (a client must have logged in
this long after connecting), ``max_connections`` 1000,
``max_connections_per_client`` 50, ``allow_plaintext_on_loopback`` false.
"""

from __future__ import annotations

from clustermail.cluster.resource_schema import PropertyKind, PropertySpec, ResourceType
from clustermail.cluster.resources.base import (
    Properties,
    Resource,
    ResourceContext,
    ResourceError,
)
from clustermail.mail.net import protocol_resource as pr
from clustermail.mail.net.listener import shared_throttle
from clustermail.mail.pop3.server import LOGIN_TIMEOUT, Pop3Ports, Pop3Service

TIMEOUT = 600.0


class Pop3Resource(Resource):
    def __init__(self, ctx: ResourceContext, properties: Properties) -> None:
        super().__init__(ctx, properties)
        self.ports = Pop3Ports(
            pr.port(properties, "port", 110), pr.port(properties, "tls_port", 995)
        )
        self.limits = pr.listener_limits(properties, TIMEOUT)
        self.plaintext_on_loopback = properties.boolean("allow_plaintext_on_loopback", False)
        self.login_timeout = properties.number("login_timeout", LOGIN_TIMEOUT, minimum=1)
        self.service: Pop3Service | None = None

    async def online(self) -> None:
        ctx = self.ctx
        setup = await pr.service_setup(ctx, self.properties)
        mail_store, address, name, tls = setup.mail_store, setup.address, setup.name, setup.tls
        service = Pop3Service(
            ctx.vs, name, mail_store, address, self.ports, tls, self.limits,
            allow_plaintext_on_loopback=self.plaintext_on_loopback,
            throttle=shared_throttle(ctx.vs), login_timeout=self.login_timeout,
        )
        try:
            await service.start()
        except OSError as exc:
            raise ResourceError(f"{ctx.resource}: {exc}") from exc
        self.service = service
        ctx.log.info(f"pop3 on {address} ports {service.ports} as {name}")

    async def offline(self) -> None:
        service, self.service = self.service, None
        if service is not None:
            await service.stop()

    async def quick_check(self) -> bool:
        return self.service is not None and self.service.is_serving()

    async def thorough_check(self) -> bool:
        return await self.quick_check()



POP3_TYPE = ResourceType(
    "pop3",
    Pop3Resource,
    {
        **pr.COMMON_PROPERTIES,
        "port": PropertySpec(PropertyKind.INT, check=pr.port_check),
        "tls_port": PropertySpec(PropertyKind.INT, check=pr.port_check),
        "login_timeout": PropertySpec(PropertyKind.FLOAT, check=pr.above_zero),
    },
    check=pr.tls_pair,
)
