"""What `clustermail up` checks before it starts anything.

A local cluster needs its data directory to itself and the addresses and ports
of its virtual servers (and, with ``--etcd``, of its private etcd members) free.
Either failing means a start that would only burn through failover thresholds
("address already in use" on every node in turn), so `up` refuses with one line
that says what holds them and how to stop it.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from pathlib import Path

from clustermail.admin import dir_lock
from clustermail.admin.errors import AdminError
from clustermail.cluster import ports
from clustermail.cluster.model import ClusterConfig


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else \
            f"{self.address}:{self.port}"


def in_use_by_up(data_dir: Path, held: dir_lock.Holder) -> AdminError:
    return AdminError(
        f"{data_dir} is in use by {held.what} (pid {held.pid}): stop it with Ctrl-C in "
        f"its terminal or `kill {held.pid}`"
    )


def check_no_agents(data_dir: Path) -> None:
    """Refuses when node agents of an earlier start still run on ``data_dir``."""
    running = dir_lock.node_holders(data_dir)
    if not running:
        return
    listed = ", ".join(f"{n} (pid {h.pid})" for n, h in sorted(running.items()))
    pids = " ".join(str(h.pid) for _, h in sorted(running.items()))
    raise AdminError(
        f"{data_dir} is in use by node agent{'s' * (len(running) > 1)} {listed} "
        f"not started by this command: stop them with `clustermail node stop NAME` or "
        f"`kill {pids}`"
    )


def endpoints(config: ClusterConfig) -> list[Endpoint]:
    """Every address:port the virtual servers listen on: each port property
    (``port``, ``*_port``) on each of the virtual server's addresses, and the
    ``tcp_check`` of process resources."""
    found: dict[Endpoint, None] = {}
    for vs in config.virtual_servers:
        addresses = [str(r.properties["address"]) for r in vs.resources
                     if r.type == "ip_address" and r.properties.get("address")]
        for res in vs.resources:
            for key, value in res.properties.items():
                if (key == "port" or key.endswith("_port")) and isinstance(value, int) \
                        and not isinstance(value, bool) and 0 < value < 65536:
                    for address in addresses:
                        found[Endpoint(address, value)] = None
                elif key == "tcp_check" and isinstance(value, str):
                    host, _, port = value.rpartition(":")
                    if host and port.isdigit():
                        found[Endpoint(host.strip("[]"), int(port))] = None
    return list(found)


def in_use(endpoint: Endpoint) -> bool:
    """Whether binding ``endpoint`` as a server would fail with "address in use".
    An address this machine does not have yet is not "in use": the virtual
    server's ip_address resource brings it up."""
    family = socket.AF_INET6 if ":" in endpoint.address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as our listeners do
        try:
            s.bind((endpoint.address, endpoint.port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def check_ports(config: ClusterConfig, config_path: Path) -> None:
    """Refuses when another process holds an address:port of a virtual server."""
    check_endpoints(endpoints(config), f"choose other addresses/ports in {config_path}")


def check_endpoints(wanted: list[Endpoint], otherwise: str) -> None:
    """Refuses when another process holds one of ``wanted``; the message names it and
    ends with ``otherwise`` (what else the user can do)."""
    held = [e for e in wanted if in_use(e)]
    if not held:
        return
    first = held[0]
    holders = ports.holders(first.address, first.port)
    if holders:
        who = ", ".join(f"pid {h.pid} ({h.command})" for h in holders[:2])
        pids = " ".join(str(h.pid) for h in holders[:2])
        how = f"stop it (`kill {pids}`)"
    else:
        who, how = "a process this user cannot see", "stop it"
    more = f" (and {len(held) - 1} more address{'es' * (len(held) > 2)})" if len(held) > 1 \
        else ""
    raise AdminError(f"{first} is in use by {who}{more}: {how} or {otherwise}")
