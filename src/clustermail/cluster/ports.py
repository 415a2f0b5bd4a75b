"""Who holds a TCP port: for the message of a resource that cannot listen on it.

"address already in use" alone sends an operator hunting; "held by pid 4242
(python3 -m clustermail.cluster.banner …)" says what to stop. Linux only: the
listening sockets come from ``/proc/net/tcp`` and ``tcp6`` (their inodes), and
the processes from the ``socket:[inode]`` links in ``/proc/<pid>/fd``. A process
of another user is found only with the rights to read its fds; when none is
found the note says so rather than guess.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import struct
from dataclasses import dataclass
from pathlib import Path

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column
_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class Listener:
    """One listening socket of ``/proc/net/tcp*``."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    inode: int


@dataclass(frozen=True, slots=True)
class Holder:
    pid: int
    command: str


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # The kernel prints each 32-bit word of the address in host byte order.
    words = [int(hex_address[i:i + 8], 16) for i in range(0, len(hex_address), 8)]
    packed = struct.pack(f"={len(words)}I", *words)
    return ipaddress.IPv4Address(packed) if len(packed) == 4 else ipaddress.IPv6Address(packed)


def parse_listeners(text: str) -> list[Listener]:
    """The listening sockets of one ``/proc/net/tcp`` or ``tcp6`` text."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        address, _, port = fields[1].partition(":")
        try:
            out.append(Listener(_address(address), int(port, 16), int(fields[9])))
        except ValueError:
            continue  # a line we do not understand is not worth failing over
    return out


def _covers(listener: Listener, address: str, port: int) -> bool:
    """Whether ``listener`` takes connections for ``address:port`` (a wildcard does)."""
    if listener.port != port:
        return False
    try:
        wanted = ipaddress.ip_address(address)
    except ValueError:
        return True  # a name: any listener on the port may be the one
    held = listener.address
    if isinstance(held, ipaddress.IPv6Address) and held.ipv4_mapped is not None:
        held = held.ipv4_mapped
    return held == wanted or held.is_unspecified


def listening_inodes(address: str, port: int) -> set[int]:
    """Inodes of the sockets listening on ``address:port`` (or on the port of every address)."""
    inodes: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            text = (_PROC / "net" / name).read_text()
        except OSError:
            continue
        inodes |= {s.inode for s in parse_listeners(text) if _covers(s, address, port)}
    inodes.discard(0)
    return inodes


def holders(address: str, port: int) -> list[Holder]:
    """The processes that hold a socket listening on ``address:port``, by pid."""
    inodes = listening_inodes(address, port)
    if not inodes:
        return []
    links = {f"socket:[{inode}]" for inode in inodes}
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(entry / "fd")
        except OSError:
            continue  # gone, or not ours to read
        for fd in fds:
            try:
                target = os.readlink(entry / "fd" / fd)
            except OSError:
                continue
            if target in links:
                found.append(Holder(int(entry.name), _command(entry)))
                break
    return sorted(found, key=lambda h: h.pid)


def _command(proc_dir: Path) -> str:
    try:
        argv = (proc_dir / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(a.decode(errors="replace") for a in argv if a)
    return text if len(text) <= 120 else text[:117] + "..."


def holder_note(address: str, port: int) -> str:
    """`` (held by pid 4242: python3 stray.py)`` for an error message; what is known
    when no process can be named; "" when nothing listens there (or no /proc)."""
    try:
        found = holders(address, port)
        listening = bool(found) or bool(listening_inodes(address, port))
    except OSError:
        return ""
    if found:
        named = ", ".join(f"pid {h.pid}: {h.command}" for h in found[:3])
        return f" (held by {named})"
    if listening:
        return " (held by a process this user cannot see)"
    return ""


def in_use_note(exc: OSError, address: str, port: int) -> str:
    """:func:`holder_note` when ``exc`` says the address is in use, else ""."""
    return holder_note(address, port) if exc.errno == errno.EADDRINUSE else ""
