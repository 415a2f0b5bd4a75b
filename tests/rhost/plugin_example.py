"""A plug-in resource type, as the mail layer will write them: an asyncio server
that runs inside the resource host, on the address of its ip_address dependency."""

from __future__ import annotations

import asyncio
import contextlib

from clustermail.cluster.resources import Properties, Resource, ResourceContext, register
from clustermail.cluster.resources.ip_address import IpAddressResource


class EchoResource(Resource):
    def __init__(self, ctx: ResourceContext, properties: Properties) -> None:
        super().__init__(ctx, properties)
        self.port = properties.integer("port", minimum=1)
        self._server: asyncio.Server | None = None

    async def online(self) -> None:
        address = self.ctx.dependency(IpAddressResource).address
        self._server = await asyncio.start_server(self._greet, address, self.port)

    async def _greet(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"echo {self.ctx.vs} epoch {self.ctx.epoch}\r\n".encode())
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


register("echo", EchoResource)
