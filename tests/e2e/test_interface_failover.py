"""The ``ip_address`` resource in interface mode, between two "machines".

Each node runs in its own network namespace with an ``eth0`` on one bridge; the test
is the client on that bridge. The virtual server's address is added to node1's eth0;
node1 then "loses power" (its link goes down and its agent is killed) and the address
must come up on node2's eth0, announced by a gratuitous ARP so the client's neighbour
table points at node2 at once instead of at the dead machine's MAC address. A node
that is alive but lost (frozen agent) or whose agent crashed must not keep the
address: the fenced resource host, or the restarted agent, removes it.

Needs root and network namespaces (CI has both); the test creates and removes
everything it uses.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import LocalCluster, owners
from tests.support.iproute import ip

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("arping") is None,
    reason="needs root, iproute2 and arping (iputils-arping)",
)


@dataclass
class Network:
    subnet: str  # "198.18.X"
    bridge: str
    namespaces: dict[str, str]  # node → namespace
    macs: dict[str, str]  # node → MAC address of its eth0

    @property
    def vip(self) -> str:
        return f"{self.subnet}.10"


def unused_subnet() -> str:
    """A /24 of 198.18.0.0/15 (RFC 2544: for test networks, never a real LAN) that this
    machine does not route anywhere but through its default route, so the test's bridge
    cannot take traffic meant for a network the machine really uses."""
    for _ in range(50):
        subnet = f"198.{random.randint(18, 19)}.{random.randint(0, 255)}"
        routes = ip("-4", "route", "show", "to", "match", f"{subnet}.1").splitlines()
        if all(line.startswith("default") for line in routes):
            return subnet
    pytest.skip("no unused test subnet in 198.18.0.0/15 on this machine")


@pytest.fixture
def network() -> Iterator[Network]:
    tag = f"{random.randrange(16**4):04x}"
    subnet = unused_subnet()
    bridge = f"cmbr{tag}"
    net = Network(subnet, bridge, {}, {})
    try:
        ip("link", "add", bridge, "type", "bridge")
        ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        for n, node in enumerate(("node1", "node2"), start=1):
            ns = net.namespaces[node] = f"cm{tag}{node}"
            ip("netns", "add", ns)
            outer, inner = f"cm{tag}v{n}", f"cm{tag}p{n}"
            ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            ip("link", "set", outer, "master", bridge)
            ip("link", "set", outer, "up")
            ip("link", "set", inner, "netns", ns)
            ip("-n", ns, "link", "set", inner, "name", "eth0")
            # Each machine has an address of its own; the virtual server's comes and goes.
            ip("-n", ns, "addr", "add", f"{subnet}.{1 + n}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
            net.macs[node] = ip("-n", ns, "-br", "link", "show", "eth0").split()[2]
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        teardown(net)
        pytest.skip(f"cannot build the test network here: {exc}")
    try:
        yield net
    finally:
        teardown(net)


def teardown(net: Network) -> None:
    for ns in net.namespaces.values():
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
    subprocess.run(["ip", "link", "del", net.bridge], capture_output=True, timeout=10)


def cluster_toml(vip: str, port: int) -> str:
    return f"""
[cluster]
placement = "active-passive"
timing = "default"

[nodes.node1]
[nodes.node2]

[virtual_servers.mail1]
preferred_owners = ["node1", "node2"]
failback = "never"
failover_threshold = 10  # this test fails over several times

[virtual_servers.mail1.resources.ip]
type = "ip_address"
properties = {{ address = "{vip}", mode = "interface", interface = "eth0", prefix = 24 }}

[virtual_servers.mail1.resources.banner]
type = "process"
depends_on = ["ip"]
quick_check_interval = 0.5
[virtual_servers.mail1.resources.banner.properties]
command = ["{{python}}", "-m", "clustermail.cluster.banner", "--address", "{vip}",
           "--port", "{port}", "--name", "mail1"]
tcp_check = "{vip}:{port}"
"""


def greeting(address: str, port: int) -> str | None:
    try:
        with socket.create_connection((address, port), timeout=1) as s:
            return s.makefile("rb").readline().decode(errors="replace").strip() or None
    except OSError:
        return None


def neighbour_mac(net: Network, address: str) -> str | None:
    for line in ip("neigh", "show", address, "dev", net.bridge).splitlines():
        fields = line.split()
        if "lladdr" in fields:
            return fields[fields.index("lladdr") + 1]
    return None


def addresses(net: Network, node: str) -> str:
    return ip("-n", net.namespaces[node], "-br", "addr", "show", "eth0")


def nodes_up(status: dict[str, Any], *names: str) -> bool:
    states = {n["name"]: n["state"] for n in status["nodes"]}
    return all(states.get(name) == "up" for name in names)


async def test_address_moves_to_the_surviving_machine(tmp_path: Path, network: Network) -> None:
    vip, port = network.vip, random.randint(20000, 40000)
    ns = network.namespaces
    async with LocalCluster(tmp_path, f"sqlite://{tmp_path}/cluster.db",
                            cluster_toml(vip, port)) as c:
        for node in ns:
            c.start_node(node, wrap=["ip", "netns", "exec", ns[node]])
        await c.wait_for(lambda s: owners(s) == {"mail1": "node1"}, timeout=60,
                         what="mail1 online on node1")
        assert f"{vip}/24" in addresses(network, "node1")
        assert vip not in addresses(network, "node2")
        first = greeting(vip, port)
        assert first is not None and "node node1" in first, first
        assert neighbour_mac(network, vip) == network.macs["node1"]

        # node1 loses power: its link goes, then its processes, all at once (no process
        # gets to clean anything up: the host is killed before its agent).
        ip("-n", ns["node1"], "link", "set", "eth0", "down")
        status = await c.status()
        os.kill(int(next(v["pid"] for v in status["virtual_servers"])), signal.SIGKILL)
        c.kill_node("node1")
        await c.wait_for(lambda s: owners(s) == {"mail1": "node2"}, timeout=60,
                         what="mail1 online on node2")
        assert f"{vip}/24" in addresses(network, "node2")
        # The gratuitous ARP already moved the client's entry: no wait for it to go stale.
        assert neighbour_mac(network, vip) == network.macs["node2"]
        second = greeting(vip, port)
        assert second is not None and "node node2" in second, second

        # node1 boots again (the kernel forgot its addresses).
        ip("-n", ns["node1"], "addr", "del", f"{vip}/24", "dev", "eth0")
        ip("-n", ns["node1"], "link", "set", "eth0", "up")
        c.start_node("node1", wrap=["ip", "netns", "exec", ns["node1"]])
        await c.wait_for(lambda s: nodes_up(s, "node1", "node2"), timeout=60, what="node1 back")

        # node2's agent freezes with its machine still on the network: its resource host
        # fences itself at the lease deadline and takes the address off eth0 on the way
        # out, so the address is never on two machines once node1 has it.
        c.signal_node("node2", signal.SIGSTOP)
        try:
            await c.wait_for(lambda s: owners(s) == {"mail1": "node1"}, timeout=60,
                             what="mail1 back on node1")
            assert vip not in addresses(network, "node2")
            assert f"{vip}/24" in addresses(network, "node1")
            assert neighbour_mac(network, vip) == network.macs["node1"]
            third = greeting(vip, port)
            assert third is not None and "node node1" in third, third
        finally:
            c.signal_node("node2", signal.SIGCONT)
        await c.wait_for(lambda s: nodes_up(s, "node1", "node2"), timeout=60,
                         what="node2 rejoined")

        # mail1's resource host on node1 is killed on its own (kill -9: no cleanup at
        # all): the agent removes the address it left when it reaps the host.
        status = await c.status()
        host_pid = next(v["pid"] for v in status["virtual_servers"] if v["name"] == "mail1")
        os.kill(int(host_pid), signal.SIGKILL)
        await c.wait_for(lambda s: owners(s) == {"mail1": "node2"}, timeout=60,
                         what="mail1 on node2 after its host was killed")
        assert vip not in addresses(network, "node1")
        assert neighbour_mac(network, vip) == network.macs["node2"]

        # A planned move takes the address off the old owner's interface (offline).
        out = c.cli("vs", "move", "mail1", "--to", "node1")
        assert out.returncode == 0, out.stderr
        await c.wait_for(lambda s: owners(s) == {"mail1": "node1"}, timeout=60,
                         what="mail1 moved to node1")
        assert vip not in addresses(network, "node2")
        assert neighbour_mac(network, vip) == network.macs["node1"]
        assert not list((c.data / "undo" / "node2").rglob("*.json"))  # cleared on offline

        # node1's agent crashes (kill -9; the machine stays up): the parent-death signal
        # makes its resource host kill its children and remove the address on its way out.
        c.kill_node("node1")
        await c.wait_for(lambda s: owners(s) == {"mail1": "node2"}, timeout=60,
                         what="mail1 on node2 after node1's agent crashed")
        assert vip not in addresses(network, "node1")
        assert f"{vip}/24" in addresses(network, "node2")
        fourth = greeting(vip, port)
        assert fourth is not None and "node node2" in fourth, fourth
