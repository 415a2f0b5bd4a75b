"""A banner service: greets each connection with a line naming its node, and closes it.

``python -m clustermail.cluster.banner --address A --port P [--name VS]``

A minimal service for the generic `process` resource: tests connect to it to
see which node serves a virtual server, with no mail layer involved.
Exits 0 on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys

from clustermail.cluster.ports import in_use_note


def banner_line(name: str) -> bytes:
    node = os.environ.get("CLUSTERMAIL_NODE", "?")
    return f"220 {name} clustermail placeholder ready (pid {os.getpid()}, node {node})\r\n".encode()


async def serve(address: str, port: int, name: str) -> None:
    line = banner_line(name)

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            writer.write(line)
            await writer.drain()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(greet, address, port, reuse_address=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--name",
        default=os.environ.get("CLUSTERMAIL_VS", "clustermail"),
        help="the virtual server's name (default: $CLUSTERMAIL_VS)",
    )
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.address, args.port, args.name))
    except OSError as exc:
        print(f"banner: cannot listen on {args.address}:{args.port}: {exc}"
              f"{in_use_note(exc, args.address, args.port)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
