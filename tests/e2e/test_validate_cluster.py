"""`clustermail validate --cluster` against a real local cluster (`clustermail up`, SQLite
store): every node agent answers with its checks and trial bring-ups, and the virtual
servers that run are not disturbed; a frozen node is a failure line, not a hang."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.e2e.harness import cluster_toml, free_addresses, freeze_outside_writes
from tests.support.local_up import cli, read_until, start_up

NODES = ["node1", "node2", "node3", "node4"]
#: A long lease: the node frozen below keeps it (a node without one is "not running", a
#: warning, not the silent node this test wants), and a loaded machine fences nobody.
LONG_LEASE = "timing = { ttl = 60, renew_interval = 2, safety_margin = 10 }"


def layout(data: Path) -> dict[str, tuple[Any, ...]]:
    """Each virtual server's state, owner, epoch and resource host."""
    status = json.loads(cli(data, "status", "--json").stdout)
    return {v["name"]: (v["state"], v["owner"], v["epoch"], v["pid"])
            for v in status["virtual_servers"]}


def node_pids(data: Path) -> dict[str, int]:
    status = json.loads(cli(data, "status", "--json").stdout)
    return {n["name"]: n["pid"] for n in status["nodes"]}


def test_validate_cluster_asks_every_node_and_disturbs_nothing(tmp_path: Path) -> None:
    base, port = free_addresses()
    data = tmp_path / "data"
    data.mkdir()
    toml = cluster_toml(base, port, mail=True).replace('timing = "default"', LONG_LEASE)
    assert LONG_LEASE in toml
    (data / "cluster.toml").write_text(toml)
    up = start_up(data)
    try:
        read_until(up, "virtual servers online: 3/3")
        before = layout(data)
        assert {state for state, *_ in before.values()} == {"online"}, before

        out = cli(data, "validate", "--cluster", "--json", "--timeout", "30")
        report = json.loads(out.stdout)
        assert out.returncode == report["exit_code"] and out.returncode in (0, 3), out.stdout
        nodes = {n["node"]: n for n in report["nodes"]}
        assert sorted(nodes) == NODES
        for node in nodes.values():
            assert node["answered"], node
            results = {c["name"]: c["result"] for c in node["checks"]}
            assert set(results.values()) <= {"pass", "warn"}, node["checks"]
            assert {"answer", "clock", "store latency", "data directory"} <= set(results)
        # node4 is passive: it tried every virtual server; node1 owns mail1.
        passive = {c["name"]: c["detail"] for c in nodes["node4"]["checks"]}
        for v in (1, 2, 3):
            assert {f"mail{v} disk", f"mail{v} address", f"mail{v} ports"} <= set(passive)
            assert "served by its owner" in passive[f"mail{v} ports"]
        owner = {c["name"]: c["detail"] for c in nodes["node1"]["checks"]}
        assert owner["mail1"].startswith("online here")
        assert {c["name"] for c in report["checks"]} >= {"store", "configuration", "clock skew"}

        # The human report says the same, in one table and a summary line.
        out = cli(data, "validate", "--cluster", "--timeout", "30")
        assert out.returncode in (0, 3), out.stdout
        assert "4 of 4 node(s) answered" in out.stdout

        # Nothing moved, restarted or changed epoch.
        assert layout(data) == before

        # A frozen node agent: a failure line after the timeout, not a hang.
        pid = node_pids(data)["node4"]
        freeze_outside_writes(pid, data / "cluster.db")  # `up`'s store: data/cluster.db
        try:
            started = time.monotonic()
            out = cli(data, "validate", "--cluster", "--json", "--timeout", "8")
            took = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        assert out.returncode == 1, out.stdout
        report = json.loads(out.stdout)
        frozen = next(n for n in report["nodes"] if n["node"] == "node4")
        assert not frozen["answered"]
        assert frozen["checks"][0]["detail"] == "node4 did not answer in 8 s"
        assert took < 40, took
        # The others still answer (at least one, on a machine this loaded).
        assert any(n["answered"] for n in report["nodes"] if n["node"] != "node4"), report
        assert layout(data) == before
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            try:
                up.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()
