"""A frozen node agent (SIGSTOP past its lease TTL) never overlaps with the new owner."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from tests.e2e.harness import LocalCluster, cluster_toml, free_addresses, owners, vs_of

CLK_TCK = os.sysconf("SC_CLK_TCK")


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def started_at(pid: int) -> float:
    """When a process started, in CLOCK_BOOTTIME seconds (from /proc, jiffy resolution)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19]) / CLK_TCK


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_frozen_owner_is_fenced_before_the_new_owner_starts(
    tmp_path: Path, cluster_store_url: str
) -> None:
    base, port = free_addresses()
    async with LocalCluster(tmp_path, cluster_store_url, cluster_toml(base, port)) as c:
        c.start_all()
        seed = {"mail1": "node1", "mail2": "node2", "mail3": "node3"}
        status = await c.wait_for(lambda s: owners(s) == seed, what="the initial layout")
        old_host = vs_of(status, "mail3")["pid"]
        old_banner = vs_of(status, "mail3")["resource_pids"]["banner"]
        assert alive(old_host) and alive(old_banner)

        c.signal_node("node3", signal.SIGSTOP)  # the agent freezes; its host does not
        frozen_at = boottime()
        old_gone_at = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and old_gone_at is None:
            if not alive(old_host) and not alive(old_banner):
                old_gone_at = boottime()  # an upper bound of when both had died
            await asyncio.sleep(0.005)
        assert old_gone_at is not None, "the frozen node's resource host kept running"

        status = await c.wait_for(lambda s: owners(s)["mail3"] == "node4", what="mail3 on node4")
        new_host = vs_of(status, "mail3")["pid"]
        new_banner = vs_of(status, "mail3")["resource_pids"]["banner"]
        # Side one: the old host and its service were dead before the new owner's
        # service started. (The new resource host itself may be older: nodes keep
        # a warm spare host, which runs nothing until it is given a virtual server.)
        assert old_gone_at < started_at(new_banner)
        assert old_gone_at - frozen_at < 5

        # Side two: the frozen agent, resumed, fences itself and starts nothing.
        c.signal_node("node3", signal.SIGCONT)
        status = await c.wait_for(
            lambda s: {n["name"]: n["state"] for n in s["nodes"]}["node3"] == "up",
            what="node3 rejoined",
        )
        for _ in range(50):  # a second of cycles on the resumed node
            status = await c.status()
            assert owners(status)["mail3"] == "node4"
            assert vs_of(status, "mail3")["pid"] == new_host
            await asyncio.sleep(0.02)
        log = (c.data / "node3.agent.log").read_text()
        assert "fenced" in log


async def test_frozen_resource_host_under_a_healthy_agent_is_killed_and_fails_over(
    tmp_path: Path, cluster_store_url: str
) -> None:
    """The agent still renews its lease, so no lease expiry will help: the agent's
    pings notice the host, kill it (SIGKILL at once: a stopped process cannot act on
    SIGTERM), and the virtual server moves; the new owner starts its service only
    after the old host is dead."""
    host_timeout = 2.0
    base, port = free_addresses()
    toml = cluster_toml(base, port, vs_extra=f"host_timeout = {host_timeout}")
    async with LocalCluster(tmp_path, cluster_store_url, toml) as c:
        c.start_all()
        seed = {"mail1": "node1", "mail2": "node2", "mail3": "node3"}
        status = await c.wait_for(lambda s: owners(s) == seed, what="the initial layout")
        old_host = vs_of(status, "mail3")["pid"]

        os.kill(old_host, signal.SIGSTOP)
        frozen_at = boottime()
        deadline = time.monotonic() + 30
        while alive(old_host) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        assert not alive(old_host), "the frozen resource host was never killed"
        dead_at = boottime()
        # host_timeout, then a ping interval (0.4 s) to notice; slack for a loaded machine.
        assert dead_at - frozen_at < host_timeout + 0.4 + 3

        status = await c.wait_for(lambda s: owners(s)["mail3"] == "node4", what="mail3 on node4")
        assert started_at(vs_of(status, "mail3")["resource_pids"]["banner"]) > dead_at
        log = (c.data / "node3.agent.log").read_text()
        assert f"mail3: resource host {old_host} did not answer for" in log
        # The agent itself was fine all along: node3 stayed up and is a standby now.
        assert {n["name"]: n["state"] for n in status["nodes"]}["node3"] == "up"
