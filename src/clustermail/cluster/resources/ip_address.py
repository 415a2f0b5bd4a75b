"""The ``ip_address`` resource: the virtual server's address.

Properties:

* ``address`` (required) — IPv4 or IPv6 address.
* ``mode`` — ``"loopback"`` (default) or ``"interface"``.
  - loopback: the address is already local (all of 127.0.0.0/8 is, on Linux);
    the resource claims it by proving it can bind it. Needs no root.
  - interface: online runs ``ip addr add ADDR/PREFIX dev IFACE`` and announces
    the address by gratuitous ARP (``arping -U``) so clients drop the old owner's
    MAC at once (without it they kept it for 30 s in our measurements); offline
    deletes it. The announcer runs in the background, as Pacemaker's IPaddr2 and
    keepalived send theirs: arping's first packet leaves at once, but it then
    waits a second for replies an unsolicited ARP never gets, and awaiting that
    put a second into every failover. It repeats the announcement
    (:data:`ARP_COUNT` packets, one a second) in case the first is lost, and it
    is killed with the host's other children: on offline, and at once when the
    host fences, so an old owner never announces an address it gave up.
* ``interface`` (interface mode, required), ``prefix`` (default 24 / 64),
  ``arp`` (default true). The commands run in the resource host's own network
  namespace — the one its services listen in.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping

from clustermail.cluster import procutil, undo
from clustermail.cluster.model import PropertyValue
from clustermail.cluster.resource_schema import PropertyKind, PropertySpec, ResourceType
from clustermail.cluster.resources.base import (
    Properties,
    PropertyError,
    Resource,
    ResourceContext,
    ResourceError,
)

COMMAND_TIMEOUT = 10.0
#: Gratuitous ARPs sent per bring-up, a second apart (keepalived and IPaddr2 send 5).
ARP_COUNT = 3
#: What `ip addr del` says when the address is not there (old and new iproute2).
_GONE = ("Cannot assign requested address", "Address not found")


def bindable(address: str) -> str | None:
    """None if ``address`` can be bound on this machine, else the reason."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def interface_commands(
    address: str, prefix: int, interface: str, arp: bool
) -> tuple[list[list[str]], list[list[str]]]:
    """The command lines that put the address on and take it off (pure)."""
    on = [["ip", "addr", "add", f"{address}/{prefix}", "dev", interface]]
    if arp and ":" not in address:  # IPv6 announces itself (unsolicited NA), not ARP
        on.append(["arping", "-U", "-c", str(ARP_COUNT), "-I", interface, "-s", address,
                   address])
    off = [["ip", "addr", "del", f"{address}/{prefix}", "dev", interface]]
    return on, off


class IpAddressResource(Resource):
    def __init__(self, ctx: ResourceContext, properties: Properties) -> None:
        super().__init__(ctx, properties)
        raw = properties.string("address")
        try:
            parsed = ipaddress.ip_address(raw)
        except ValueError:
            raise PropertyError(
                f"{ctx.resource}: property 'address': {raw!r} is not an IP address"
            ) from None
        self.address = str(parsed)
        self.mode = properties.string("mode", "loopback")
        if self.mode not in ("loopback", "interface"):
            raise PropertyError(
                f"{ctx.resource}: property 'mode': expected 'loopback' or 'interface', "
                f"got {self.mode!r}"
            )
        self._interface = properties.optional_string("interface") or ""
        self._on: list[list[str]] = []
        self._off: list[list[str]] = []
        if self.mode == "interface":
            default_prefix = 24 if parsed.version == 4 else 64
            prefix = properties.integer("prefix", default_prefix, minimum=1)
            self._on, self._off = interface_commands(
                self.address,
                prefix,
                properties.string("interface"),
                properties.boolean("arp", True),
            )
        self._online = False
        self._announcer: asyncio.subprocess.Process | None = None
        self._reaper: asyncio.Task[None] | None = None

    async def online(self) -> None:
        if self.mode == "interface":
            add, *announce = self._on
            # Written before the address is added: whoever outlives this host removes it.
            await asyncio.to_thread(
                undo.record, self.ctx.data_dir, self.ctx.node, self.ctx.vs, self.ctx.resource,
                self._off[0],
                f"address {self.address} on {self._interface}", _GONE,
            )
            out = await _run(add)
            if out is not None and "File exists" not in out:
                raise ResourceError(f"{self.ctx.resource}: cannot add {self.address}: {out}")
            if announce:
                await self._start_announcer(announce[0])
        reason = bindable(self.address)
        if reason is not None:
            raise ResourceError(
                f"{self.ctx.resource}: address {self.address} is not usable on node "
                f"{self.ctx.node}: {reason}"
                + ("" if self.mode == "interface" else " (loopback mode needs a local address)")
            )
        self._online = True

    async def _start_announcer(self, cmd: list[str]) -> None:
        """Starts the gratuitous ARPs and returns: see the module doc."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # in live_groups: a fencing host kills it at once
                preexec_fn=procutil.child_preexec(),
            )
        except OSError as exc:
            self.ctx.log.warning(f"gratuitous ARP for {self.address} failed: "
                                 f"{cmd[0]}: {exc.strerror or exc}")
            return
        procutil.live_groups.add(proc.pid)
        self._announcer = proc
        self._reaper = asyncio.get_running_loop().create_task(self._reap_announcer(proc))

    async def _reap_announcer(self, proc: asyncio.subprocess.Process) -> None:
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                out, _ = await proc.communicate()
        except TimeoutError:
            procutil.kill_group(proc.pid)
            await proc.wait()
            out = f"no end within {COMMAND_TIMEOUT:g} s".encode()
        procutil.live_groups.discard(proc.pid)
        if proc.returncode != 0:
            text = out.decode(errors="replace").strip() or f"exit code {proc.returncode}"
            self.ctx.log.warning(f"gratuitous ARP for {self.address} failed: {text}")

    async def _stop_announcer(self) -> None:
        proc, reaper = self._announcer, self._reaper
        self._announcer = self._reaper = None
        if proc is None:
            return
        # Killed here, not by the reaper: a task cancelled before it first ran never
        # runs its clean-up.
        if proc.returncode is None:
            procutil.kill_group(proc.pid)
        if reaper is not None:
            reaper.cancel()
            await asyncio.gather(reaper, return_exceptions=True)
        await proc.wait()
        procutil.live_groups.discard(proc.pid)

    async def offline(self) -> None:
        self._online = False
        await self._stop_announcer()  # never an announcement of an address we dropped
        if self.mode == "interface":
            for cmd in self._off:
                out = await _run(cmd)
                if out is not None and not any(s in out for s in _GONE):
                    raise ResourceError(f"{self.ctx.resource}: cannot remove {self.address}: {out}")
            undo.clear(self.ctx.data_dir, self.ctx.node, self.ctx.vs, self.ctx.resource)

    async def quick_check(self) -> bool:
        return self._online and bindable(self.address) is None

    async def thorough_check(self) -> bool:
        return await self.quick_check()


async def _run(cmd: list[str]) -> str | None:
    """Runs a command; None on success, else its output (or why it did not run)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        return f"{cmd[0]}: {exc.strerror or exc}"
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return f"{' '.join(cmd)}: no answer within {COMMAND_TIMEOUT:g} s"
    if proc.returncode == 0:
        return None
    return out.decode(errors="replace").strip() or f"exit code {proc.returncode}"


# --------------------------------------------------------------------------- the type


def _ip(value: PropertyValue) -> str | None:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return "an IPv4 or IPv6 address such as 127.0.0.11"
    return None


def _check(props: Mapping[str, PropertyValue]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if props.get("mode") == "interface" and "interface" not in props:
        problems.append(("interface", 'required when mode = "interface"'))
    prefix = props.get("prefix")
    if isinstance(prefix, int) and not isinstance(prefix, bool):
        try:
            bits = ipaddress.ip_address(str(props.get("address"))).max_prefixlen
        except ValueError:
            bits = 128  # the address itself is reported already
        if not 0 <= prefix <= bits:
            problems.append(("prefix", f"expected a prefix length from 0 to {bits}, got {prefix}"))
    return problems


IP_ADDRESS_TYPE = ResourceType(
    "ip_address",
    IpAddressResource,
    {
        "address": PropertySpec(PropertyKind.STR, required=True, check=_ip),
        "mode": PropertySpec(PropertyKind.STR, choices=("loopback", "interface"),
                             default="loopback"),
        "interface": PropertySpec(PropertyKind.STR),
        "prefix": PropertySpec(PropertyKind.INT),
        "arp": PropertySpec(PropertyKind.BOOL),
    },
    check=_check,
)
