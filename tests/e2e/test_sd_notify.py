"""`node run` under systemd's Type=notify: a real `node run` process and a real unix
datagram socket as NOTIFY_SOCKET, as systemd would pass them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clustermail.cluster.sd_notify import Notifier
from tests.support.local_up import ROOT, cli

pytestmark = pytest.mark.e2e

ONE_NODE = """\
[cluster]
placement = "active-passive"
timing = "fast"

[nodes.node1]
"""


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield sock, path
    finally:
        sock.close()


def _receive(sock: socket.socket, want: str, timeout: float) -> list[str]:
    """Datagrams up to and including the first with the line ``want``."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{want!r} not received within {timeout} s; got {got}")
        sock.settimeout(left)
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            continue
        got.append(message)
        if want in message.splitlines():
            return got


def test_node_run_notifies_ready_watchdog_and_stopping(
        tmp_path: Path, notify_socket: tuple[socket.socket, Path]) -> None:
    sock, path = notify_socket
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (tmp_path / "cluster.toml").write_text(ONE_NODE)
    assert cli(data, "config", "apply", str(tmp_path / "cluster.toml")).returncode == 0
    env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    node = subprocess.Popen(
        [sys.executable, "-m", "clustermail", "node", "run", "--name", "node1",
         "--data", str(data)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        before = _receive(sock, "READY=1", timeout=30)
        assert any("STATUS=waiting for the cluster configuration" in m for m in before)
        assert "STATUS=node1 joined the cluster" in before[-1].splitlines()
        # Pings at half of WATCHDOG_USEC (0.2 s): five within about a second.
        started = time.monotonic()
        for _ in range(5):
            _receive(sock, "WATCHDOG=1", timeout=5)
        assert time.monotonic() - started < 4
        node.send_signal(signal.SIGTERM)
        _receive(sock, "STOPPING=1", timeout=10)
        assert node.wait(timeout=30) == 0
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()


def test_outside_systemd_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    notifier.ready("ignored")  # no socket: does nothing, raises nothing


def test_abstract_socket_and_a_watchdog_for_another_pid() -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "@clustermail-test", "WATCHDOG_USEC": "2000000",
                         "WATCHDOG_PID": "1"})
    assert notifier.address == "\0clustermail-test"
    assert notifier.watchdog_interval is None  # the watchdog is PID 1's, not ours
    mine = Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "2000000",
                     "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval == 1.0


def test_an_abstract_socket_receives(tmp_path: Path) -> None:
    name = f"clustermail-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        Notifier({"NOTIFY_SOCKET": "@" + name}).stopping("bye")
        sock.settimeout(5)
        assert sock.recv(4096).decode().splitlines() == ["STOPPING=1", "STATUS=bye"]
