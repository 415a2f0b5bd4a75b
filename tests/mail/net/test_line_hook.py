"""The line hook of stream connections (:meth:`Connection.set_line_hook`) on the loop the
tests run (uvloop, as the resource host): a lone line that arrives while the handler
waits is offered to the hook, and what the hook declines reaches the handler."""

from __future__ import annotations

import asyncio

from clustermail.mail.net.listener import Connection, Endpoint, Listener, ListenerLimits
from tests.support.ports import free_port


async def test_a_lone_line_goes_to_the_hook_and_the_rest_to_the_handler() -> None:
    port = free_port()
    listener = Listener("pop3", "127.0.0.1", [Endpoint(port, False)], None, ListenerLimits())
    hooked: list[bytes] = []
    handled: list[bytes] = []
    done = asyncio.get_running_loop().create_future()

    async def handler(conn: Connection) -> None:
        def hook(line: bytes) -> bool:
            if not line.startswith(b"HOOK"):
                return False
            hooked.append(line)
            conn.writer.transport.write(b"hooked\r\n")
            return True

        conn.set_line_hook(hook)
        await conn.send(b"ready\r\n")
        while (line := await conn.readline(100)) != b"QUIT\r\n":
            handled.append(line)
            await conn.send(b"handled\r\n")
        done.set_result(None)

    await listener.start_streams(handler)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.readline() == b"ready\r\n"
        answers = []
        for line in (b"HOOK 1\r\n", b"OTHER\r\n", b"HOOK 2\r\n"):
            writer.write(line)
            answers.append(await asyncio.wait_for(reader.readline(), 10))
        writer.write(b"QUIT\r\n")
        await asyncio.wait_for(done, 10)
        writer.close()
    finally:
        await listener.close()
    assert answers == [b"hooked\r\n", b"handled\r\n", b"hooked\r\n"]
    assert hooked == [b"HOOK 1\r\n", b"HOOK 2\r\n"]
    assert handled == [b"OTHER\r\n"]
