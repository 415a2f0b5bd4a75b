"""A third party's resource type, as a distribution of its own would ship it: an
asyncio server that runs inside the resource host, on the address of its
ip_address dependency. Tests declare it as the entry point
``echo = "tests.cluster.resource_host.plugin_example:ECHO_TYPE"``."""

from __future__ import annotations

import asyncio
import contextlib

from clustermail.cluster.resource_schema import PropertyKind, PropertySpec, ResourceType
from clustermail.cluster.resources import Properties, Resource, ResourceContext
from clustermail.cluster.resources.ip_address import IpAddressResource

#: The entry point tests declare for it.
ENTRY_POINT = {"echo": f"{__name__}:ECHO_TYPE"}


class EchoResource(Resource):
    def __init__(self, ctx: ResourceContext, properties: Properties) -> None:
        super().__init__(ctx, properties)
        self.port = properties.integer("port", minimum=1)
        self.greeting = properties.string("greeting", "echo")
        self._server: asyncio.Server | None = None

    async def online(self) -> None:
        address = self.ctx.dependency(IpAddressResource).address
        self._server = await asyncio.start_server(self._greet, address, self.port)

    async def _greet(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"{self.greeting} {self.ctx.vs} epoch {self.ctx.epoch}\r\n".encode())
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    async def offline(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def quick_check(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def thorough_check(self) -> bool:
        return await self.quick_check()


ECHO_TYPE = ResourceType(
    "echo",
    EchoResource,
    {
        "port": PropertySpec(PropertyKind.INT, required=True),
        "greeting": PropertySpec(PropertyKind.STR, default="echo"),
    },
)
