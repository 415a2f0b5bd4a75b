"""`clustermail up` owns its local cluster: Ctrl-C, SIGTERM and SIGHUP stop every node
agent and resource host within the stop timeout (killing what does not stop), a
killed `up` takes its nodes with it, and a start that would collide with a running
cluster or a stray process refuses in one line and starts nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clustermail.cluster.proctree import ProcRef, descendants
from tests.e2e.harness import cluster_toml, free_addresses
from tests.support.local_up import (
    cli,
    cluster_processes,
    kill_all,
    node_agents_on,
    read_until,
    start_up,
    stop_up,
    wait_all_gone,
)

ONLINE = "virtual servers online: 3/3"


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    """A data directory with a cluster file on addresses and a port of its own."""
    base, port = free_addresses()
    data = tmp_path / "data"
    data.mkdir()
    (data / "cluster.toml").write_text(cluster_toml(base, port))
    yield data


def _stop_and_check(up: subprocess.Popen[str], data: Path, sig: int,
                    *, group: bool = False, procs: list[ProcRef] | None = None) -> str:
    """Sends ``sig`` once the cluster is online; returns the rest of the output after
    checking that `up` and every process of the cluster are gone."""
    if procs is None:
        read_until(up, ONLINE)
        procs = cluster_processes(up, data)
        assert len(procs) >= 4 + 3 + 3, procs  # agents, hosts, banner processes (and spares)
    # And whatever started since (a failover's new resource host).
    procs = list({*procs, *(r for p in descendants(up.pid) if (r := ProcRef.of(p)))})
    return stop_up(up, procs, sig, group=group, timeout=60, gone_within=5)


def test_ctrl_c_stops_every_process(data: Path) -> None:
    # Ctrl-C reaches the terminal's foreground process group: `up`, in its own session
    # here, as in a terminal; its nodes run in sessions of their own.
    up = start_up(data, new_session=True)
    rest = _stop_and_check(up, data, signal.SIGINT, group=True)
    assert "stopped." in rest


def test_sighup_stops_every_process_and_logs_the_stop(data: Path) -> None:
    up = start_up(data)
    _stop_and_check(up, data, signal.SIGHUP)
    # The terminal is gone after SIGHUP: the rest is in up.log.
    log = (data / "logs" / "up.log").read_text()
    assert "stopping the local cluster" in log and "stopped." in log


def test_sigterm_stops_every_process_killing_a_frozen_agent(data: Path) -> None:
    up = start_up(data, "--stop-timeout", "3")
    read_until(up, ONLINE)
    # A second `up` on the same data directory: one clear line, nothing started.
    agents = sorted(node_agents_on(data))
    second = cli(data, "up")
    assert second.returncode == 1
    line = second.stderr.strip()
    assert "\n" not in line, second.stderr
    assert f"is in use by clustermail up (pid {up.pid})" in line, line
    assert f"kill {up.pid}" in line
    assert sorted(node_agents_on(data)) == agents
    # `node start` of a node that runs: refused, naming it.
    again = cli(data, "node", "start", "node2")
    assert again.returncode == 1 and "node2 is already running (pid" in again.stderr

    # An agent that cannot stop (frozen): killed once the stop timeout has passed.
    procs = cluster_processes(up, data)
    frozen = agents[0]
    os.kill(frozen, signal.SIGSTOP)
    started = time.monotonic()
    rest = _stop_and_check(up, data, signal.SIGTERM, procs=procs)
    assert time.monotonic() - started < 30
    assert f"(pid {frozen}) did not stop within 3 s: killing it" in rest, rest
    assert "stopped." in rest


def test_sigkill_of_up_stops_its_nodes_within_seconds(data: Path) -> None:
    up = start_up(data)
    read_until(up, ONLINE)
    procs = cluster_processes(up, data)
    try:
        up.kill()
        up.wait()
        # The agents stop gracefully when their owner is gone (killed after 10 s at most).
        left = wait_all_gone(procs, 20)
        assert not left, f"still running after kill -9 of up: {left}"
    finally:
        kill_all(procs)


def test_a_port_held_by_a_stray_process_is_named_and_nothing_starts(data: Path) -> None:
    text = (data / "cluster.toml").read_text()
    address, port = text.split('tcp_check = "')[1].split('"')[0].split(":")
    # The stray process: another program listening on mail1's address and port.
    stray = subprocess.Popen(
        ["python3", "-c", "import socket, sys, time; s = socket.socket(); "
         f"s.bind(('{address}', {port})); s.listen(); print('ready', flush=True); "
         "time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert stray.stdout is not None and stray.stdout.readline().strip() == "ready"
        out = cli(data, "up")
        assert out.returncode == 1
        line = out.stderr.strip()
        assert "\n" not in line, out.stderr
        assert f"{address}:{port} is in use by pid {stray.pid}" in line, line
        assert f"kill {stray.pid}" in line
        assert not node_agents_on(data)
        assert not (data / "cluster.db").exists()  # nothing applied either
    finally:
        stray.kill()
        stray.wait()


def test_node_agents_left_by_an_earlier_start_are_named(data: Path) -> None:
    """An agent running on the data directory without an `up` (started by hand, or
    left behind) blocks a new `up`: its PID is in the message."""
    up = start_up(data)
    read_until(up, ONLINE)
    procs = cluster_processes(up, data)
    try:
        ref = ProcRef.of(sorted(node_agents_on(data))[0])
        assert ref is not None
        # Take `up` away without letting its nodes notice: freeze them first.
        frozen = [p for p in procs if p.pid in node_agents_on(data)]
        for p in frozen:
            os.kill(p.pid, signal.SIGSTOP)
        up.kill()
        up.wait()
        out = cli(data, "up")
        assert out.returncode == 1
        assert "is in use by node agents node1 (pid" in out.stderr, out.stderr
        assert str(ref.pid) in out.stderr
    finally:
        kill_all(procs)
