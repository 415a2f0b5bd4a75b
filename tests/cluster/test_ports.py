"""Who holds a TCP port: /proc parsing on fixed text, and real sockets of this process."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sys
from collections.abc import Iterator

import pytest

from clustermail.cluster import ports

# Two listeners (127.0.0.11:2525 and the wildcard :25) and a connection, as the kernel
# of a little-endian machine prints them (columns up to the inode).
_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  " \
    "timeout inode\n"
_REST = "00000000:00000000 00:00000000 00000000     0        0"
TCP = _HEADER + "".join(
    f"   {i}: {local} {remote} {state} {_REST} {inode}\n"
    for i, (local, remote, state, inode) in enumerate([
        ("0B00007F:09DD", "00000000:0000", "0A", 4711),
        ("00000000:0019", "00000000:0000", "0A", 4712),
        ("0100007F:DA6E", "0B00007F:09DD", "01", 4713),
    ])
)
TCP6 = _HEADER + f"   0: {'0' * 24}01000000:0050 {'0' * 32}:0000 0A {_REST} 5001\n"


@pytest.mark.skipif(sys.byteorder != "little", reason="the texts above are little-endian")
def test_listening_sockets_are_parsed_from_proc_net_text() -> None:
    assert ports.parse_listeners(TCP) == [
        ports.Listener(ipaddress.ip_address("127.0.0.11"), 2525, 4711),
        ports.Listener(ipaddress.ip_address("0.0.0.0"), 25, 4712),
    ]
    assert ports.parse_listeners(TCP6) == [ports.Listener(ipaddress.ip_address("::1"), 80, 5001)]
    assert ports.parse_listeners("header only\n   0: garbage\n") == []


@pytest.fixture
def listening() -> Iterator[tuple[str, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.77", 0))
        s.listen()
        yield "127.0.0.77", s.getsockname()[1]


def test_the_holder_of_a_port_is_named_with_its_pid(listening: tuple[str, int]) -> None:
    address, port = listening
    assert [h.pid for h in ports.holders(address, port)] == [os.getpid()]
    note = ports.holder_note(address, port)
    assert note.startswith(f" (held by pid {os.getpid()}: ") and note.endswith(")")
    # Another address on the same port is free; the wildcard would not be.
    assert ports.holder_note("127.0.0.78", port) == ""


def test_a_wildcard_listener_holds_the_port_on_every_address() -> None:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        assert f"pid {os.getpid()}" in ports.holder_note("127.0.0.79", port)


def test_only_address_in_use_gets_a_note(listening: tuple[str, int]) -> None:
    address, port = listening
    in_use = OSError(errno.EADDRINUSE, "Address already in use")
    assert f"pid {os.getpid()}" in ports.in_use_note(in_use, address, port)
    denied = OSError(errno.EACCES, "Permission denied")
    assert ports.in_use_note(denied, address, port) == ""
