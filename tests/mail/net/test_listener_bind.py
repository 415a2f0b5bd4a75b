"""A protocol listener that cannot bind says which address and port, and who holds it."""

from __future__ import annotations

import os
import socket

import pytest

from clustermail.mail.net.listener import Connection, Endpoint, Listener, ListenerLimits

ADDRESS = "127.0.0.77"


async def test_address_in_use_names_the_port_and_its_holder() -> None:
    with socket.socket() as stray:
        stray.bind((ADDRESS, 0))
        stray.listen()
        port = stray.getsockname()[1]
        listener = Listener("smtp", ADDRESS, [Endpoint(port, False)], None, ListenerLimits())

        async def handler(conn: Connection) -> None:
            raise AssertionError("nothing may connect")

        with pytest.raises(OSError) as err:
            await listener.start_streams(handler)
    message = str(err.value)
    assert f"smtp: cannot listen on {ADDRESS}:{port}: " in message
    assert f"(held by pid {os.getpid()}: " in message
