"""Administration of a running cluster with real node processes: planned moves,
resource failures, pause/resume, failback, and clear errors for bad input."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.harness import (
    SEED,
    LocalCluster,
    banner,
    cluster_toml,
    free_addresses,
    owners,
    vs_of,
)


async def test_planned_move_and_back(tmp_path: Path, cluster_store_url: str) -> None:
    base, port = free_addresses()
    async with LocalCluster(tmp_path, cluster_store_url, cluster_toml(base, port)) as c:
        c.start_all()
        before = await c.wait_for(lambda s: owners(s) == SEED, what="the initial layout")
        epoch = vs_of(before, "mail1")["epoch"]
        out = c.cli("vs", "move", "mail1", "--to", "node4")
        assert out.returncode == 0, out.stderr
        assert "online on node4" in out.stdout
        status = await c.wait_for(lambda s: owners(s)["mail1"] == "node4", what="mail1 on node4")
        assert vs_of(status, "mail1")["epoch"] > epoch
        line = banner(f"{base}.11", port)
        assert line is not None and "node4" in line
        # A move to a node that already hosts a virtual server is refused (N+1 rule).
        out = c.cli("vs", "move", "mail2", "--to", "node4")
        assert out.returncode == 1 and "move of mail2 not done" in out.stderr
        # Move without a target: the best other node, which is node1 again.
        out = c.cli("vs", "move", "mail1")
        assert out.returncode == 0, out.stderr
        await c.wait_for(lambda s: owners(s) == SEED, what="mail1 back on node1")


async def test_resource_failure_restarts_then_fails_over(
    tmp_path: Path, cluster_store_url: str
) -> None:
    base, port = free_addresses()
    toml = cluster_toml(base, port, banner_policy="restart_threshold = 1\nrestart_period = 600")
    async with LocalCluster(tmp_path, cluster_store_url, toml) as c:
        c.start_all()
        status = await c.wait_for(lambda s: owners(s) == SEED, what="the initial layout")
        first = vs_of(status, "mail2")["resource_pids"]["banner"]
        os.kill(first, signal.SIGKILL)
        # One local restart is allowed: the banner comes back on node2 with a new pid.
        status = await c.wait_for(
            lambda s: (
                vs_of(s, "mail2")["resource_pids"].get("banner", first) != first
                and vs_of(s, "mail2")["state"] == "online"
            ),
            what="banner restarted locally",
        )
        assert owners(status)["mail2"] == "node2"
        second = vs_of(status, "mail2")["resource_pids"]["banner"]
        os.kill(second, signal.SIGKILL)
        # Past the threshold the group fails and moves to the standby.
        await c.wait_for(lambda s: owners(s)["mail2"] == "node4", what="mail2 failed over")
        line = banner(f"{base}.12", port)
        assert line is not None and "node4" in line
        log = c.cli("log", "-n", "200", "--json")
        events = [json.loads(x)["event"] for x in log.stdout.splitlines()]
        assert "vs_failed" in events and "resource_failed" in events


async def test_pause_keeps_running_but_takes_nothing_new(
    tmp_path: Path, cluster_store_url: str
) -> None:
    base, port = free_addresses()
    async with LocalCluster(tmp_path, cluster_store_url, cluster_toml(base, port)) as c:
        c.start_all()
        await c.wait_for(lambda s: owners(s) == SEED, what="the initial layout")
        assert c.cli("node", "pause", "node4").returncode == 0
        assert c.cli("node", "pause", "node1").returncode == 0
        status = await c.status()
        assert {n["name"]: n["state"] for n in status["nodes"]}["node1"] == "paused"
        assert owners(status)["mail1"] == "node1"  # a paused node keeps what it runs
        c.kill_node("node3")
        status = await c.wait_for(
            lambda s: vs_of(s, "mail3")["state"] == "failed",
            what="mail3 left failed: the standby is paused",
        )
        assert "paused" in vs_of(status, "mail3")["reason"]
        assert c.cli("node", "resume", "node4").returncode == 0
        await c.wait_for(lambda s: owners(s)["mail3"] == "node4", what="mail3 on node4")


async def test_failback_immediate(tmp_path: Path, cluster_store_url: str) -> None:
    base, port = free_addresses()
    async with LocalCluster(
        tmp_path, cluster_store_url, cluster_toml(base, port, failback="immediate")
    ) as c:
        c.start_all()
        await c.wait_for(lambda s: owners(s) == SEED, what="the initial layout")
        c.kill_node("node1")
        await c.wait_for(lambda s: owners(s)["mail1"] == "node4", what="mail1 on node4")
        c.start_node("node1")
        await c.wait_for(lambda s: owners(s) == SEED, what="mail1 failed back to node1")


async def test_failback_window_closed_keeps_it_on_the_standby(
    tmp_path: Path, cluster_store_url: str
) -> None:
    base, port = free_addresses()
    # A one-hour window that starts in two hours is closed now.
    start = (time.localtime().tm_hour + 2) % 24
    window = f"{start}-{(start + 1) % 24}"
    async with LocalCluster(
        tmp_path, cluster_store_url, cluster_toml(base, port, failback=window)
    ) as c:
        c.start_all()
        await c.wait_for(lambda s: owners(s) == SEED, what="the initial layout")
        c.kill_node("node1")
        await c.wait_for(lambda s: owners(s)["mail1"] == "node4", what="mail1 on node4")
        c.start_node("node1")
        status = await c.wait_for(
            lambda s: {n["name"]: n["state"] for n in s["nodes"]}["node1"] == "up",
            what="node1 back",
        )
        out = c.cli("explain", "mail1")
        assert out.returncode == 0 and "window" in out.stdout, out.stdout
        assert owners(status)["mail1"] == "node4"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["vs", "move", "nosuch"], "no virtual server named 'nosuch'"),
        (["vs", "move", "mail1", "--to", "node9"], "no node named 'node9'"),
        (["node", "pause", "node9"], "no node named 'node9'"),
        (["resource", "offline", "mail1", "nosuch"], "has no resource 'nosuch'"),
        (["explain", "mail7"], "no virtual server named 'mail7'"),
        (["vs", "frobnicate"], "invalid choice"),
    ],
)
async def test_unknown_names_get_one_clear_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    base, port = free_addresses()
    async with LocalCluster(
        tmp_path, f"sqlite://{tmp_path}/cluster.db", cluster_toml(base, port)
    ) as c:
        out = c.cli(*args)
        assert out.returncode != 0
        assert message in out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[cluster\n", "line 1"),
        ('[nodes.node1]\n[virtual_servers.v]\npreferred_owners = ["node7"]\n', "node7"),
        ('[nodes.n1]\n[virtual_servers.v.resources.a]\ntype = "nosuch"\n', "nosuch"),
        (
            '[nodes.n1]\n[virtual_servers.v.resources.a]\ntype = "process"\n'
            'depends_on = ["b"]\nproperties = { command = "true" }\n'
            '[virtual_servers.v.resources.b]\ntype = "process"\ndepends_on = ["a"]\n'
            'properties = { command = "true" }\n',
            "cycle",
        ),
        (
            "[cluster]\ntiming = { ttl = 1, renew_interval = 0.5, safety_margin = 0.2 }\n"
            "[nodes.n1]\n",
            "must be less than ttl",
        ),
    ],
)
def test_malformed_config_files_are_rejected_clearly(
    tmp_path: Path, text: str, message: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    c = LocalCluster(tmp_path, f"sqlite://{tmp_path}/cluster.db", "")
    out = c.cli("config", "check", str(bad))
    assert out.returncode == 1, out.stdout
    assert message in out.stderr and str(bad) in out.stderr
    assert "Traceback" not in out.stderr


async def test_resource_and_vs_offline_online(tmp_path: Path) -> None:
    base, port = free_addresses()
    async with LocalCluster(
        tmp_path, f"sqlite://{tmp_path}/cluster.db", cluster_toml(base, port)
    ) as c:
        c.start_all()
        await c.wait_for(lambda s: owners(s) == SEED, what="the initial layout")
        assert c.cli("resource", "offline", "mail1", "banner").returncode == 0
        status = await c.wait_for(
            lambda s: vs_of(s, "mail1")["state"] == "partially_online", what="banner held offline"
        )
        assert vs_of(status, "mail1")["resources"]["banner"] == "offline"
        assert vs_of(status, "mail1")["resources"]["ip"] == "online"
        assert banner(f"{base}.11", port) is None
        listed = json.loads(c.cli("resource", "list", "mail1", "--json").stdout)
        assert {r["resource"]: r["admin_offline"] for r in listed}["banner"] is True
        assert c.cli("resource", "online", "mail1", "banner").returncode == 0
        await c.wait_for(lambda s: vs_of(s, "mail1")["state"] == "online", what="banner back")
        assert banner(f"{base}.11", port) is not None

        assert c.cli("vs", "offline", "mail2").returncode == 0
        status = await c.wait_for(
            lambda s: (
                vs_of(s, "mail2")["state"] == "offline" and vs_of(s, "mail2")["owner"] is None
            ),
            what="mail2 offline",
        )
        assert "administrator" in vs_of(status, "mail2")["reason"]
        assert banner(f"{base}.12", port) is None
        assert c.cli("vs", "online", "mail2").returncode == 0
        await c.wait_for(lambda s: owners(s) == SEED, what="mail2 online again on node2")


async def test_graceful_node_stop_moves_without_counting_a_failure(tmp_path: Path) -> None:
    base, port = free_addresses()
    async with LocalCluster(
        tmp_path, f"sqlite://{tmp_path}/cluster.db", cluster_toml(base, port)
    ) as c:
        c.start_all()
        await c.wait_for(lambda s: owners(s) == SEED, what="the initial layout")
        started = time.monotonic()
        assert c.stop_node("node3") == 0
        status = await c.wait_for(lambda s: owners(s)["mail3"] == "node4", what="mail3 moved")
        # Well inside the lease TTL: it was handed over, not failed over.
        assert time.monotonic() - started < 5
        assert {n["name"]: n["state"] for n in status["nodes"]}["node3"] == "down"
        assert c.store is not None
        history = await c.store.get("/clustermail/failures/mail3")
        assert history is None or json.loads(history.value) == []


async def test_evict_a_dead_node(tmp_path: Path) -> None:
    base, port = free_addresses()
    async with LocalCluster(
        tmp_path, f"sqlite://{tmp_path}/cluster.db", cluster_toml(base, port)
    ) as c:
        c.start_all()
        await c.wait_for(lambda s: owners(s) == SEED, what="the initial layout")
        out = c.cli("node", "evict", "node2")
        assert out.returncode == 1 and "is up" in out.stderr
        c.kill_node("node2")
        await c.wait_for(lambda s: owners(s)["mail2"] == "node4", what="mail2 on node4")
        out = c.cli("node", "evict", "node2")
        assert out.returncode == 0, out.stderr
        status = await c.wait_for(lambda s: len(s["nodes"]) == 3, what="node2 evicted")
        assert owners(status)["mail2"] == "node4"
        shown = json.loads(c.cli("config", "show").stdout)
        assert "node2" not in shown["nodes"]
        assert "node2" not in shown["virtual_servers"]["mail2"]["preferred_owners"]
