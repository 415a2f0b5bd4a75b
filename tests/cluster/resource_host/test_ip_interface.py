"""The ``ip_address`` resource in interface mode, in network namespaces the test makes:
the gratuitous ARPs go out in the background (bringing the address up does not wait
out arping's second of listening for replies), reach the neighbours, and the
announcer never outlives the address."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.iproute import ip

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("arping") is None,
    reason="needs root, iproute2 and arping (iputils-arping)",
)

VIP = "10.231.0.10"
STALE_MAC = "02:00:00:00:00:99"


@dataclass
class Link:
    server: str  # namespace holding the resource's interface, eth0
    client: str  # namespace of a neighbour on the same link
    server_mac: str


@pytest.fixture
def link() -> Iterator[Link]:
    tag = f"{random.randrange(16**4):04x}"
    server, client = f"cmarp{tag}s", f"cmarp{tag}c"
    try:
        for ns in (server, client):
            ip("netns", "add", ns)
        ip("-n", server, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
           "netns", client)
        ip("-n", server, "addr", "add", "10.231.0.1/24", "dev", "eth0")
        ip("-n", client, "addr", "add", "10.231.0.2/24", "dev", "eth1")
        for ns, dev in ((server, "eth0"), (client, "eth1")):
            ip("-n", ns, "link", "set", dev, "up")
        mac = ip("-n", server, "-br", "link", "show", "eth0").split()[2]
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        for ns in (server, client):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        pytest.skip(f"cannot build the test link here: {exc}")
    try:
        yield Link(server, client, mac)
    finally:
        for ns in (server, client):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def neighbour_mac(ns: str, address: str) -> str | None:
    for line in ip("-n", ns, "neigh", "show", address, "dev", "eth1").splitlines():
        fields = line.split()
        if "lladdr" in fields:
            return fields[fields.index("lladdr") + 1]
    return None


@pytest.mark.parametrize("end", ["offline", "natural"])
def test_announcer_runs_in_the_background_and_never_outlives_the_address(
    tmp_path: Path, link: Link, end: str
) -> None:
    # The client still has the old owner's MAC for the address, as after a failover.
    ip("-n", link.client, "neigh", "replace", VIP, "lladdr", STALE_MAC, "dev", "eth1",
       "nud", "stale")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]))
    probe = subprocess.Popen(
        ["ip", "netns", "exec", link.server, sys.executable, "-m",
         "tests.cluster.resource_host.interface_probe", str(tmp_path), "eth0", VIP, end],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert probe.stdout is not None and probe.stdin is not None
        first = json.loads(probe.stdout.readline())
        # online() returned with the announcer still running: it did not wait for it.
        assert len(first["announcers"]) == 1 and first["alive_after_online"] == [True]
        # ...and its first announcement moved the neighbour's entry (bounded poll).
        deadline = time.monotonic() + 2.0
        while neighbour_mac(link.client, VIP) != link.server_mac:
            assert time.monotonic() < deadline, neighbour_mac(link.client, VIP)
            time.sleep(0.01)
        probe.stdin.write("\n")
        probe.stdin.flush()
        last = json.loads(probe.stdout.readline())
        assert probe.wait(timeout=20) == 0
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
    assert last == {"left": [], "alive_at_end": [False], "warnings": []}
    assert VIP not in ip("-n", link.server, "-br", "addr", "show", "eth0")
