"""Driving a real resource host process from tests: specs, events, pids, sockets.

Also a pytest plug-in (listed in ``tests/conftest.py``): the ``start_host`` and
``reaper`` fixtures, for every test package that runs resource hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from clustermail.cluster import procutil
from clustermail.cluster.host_pool import HOST_MODULE
from clustermail.coord import open_store

Event = dict[str, Any]
HOST_CMD = [sys.executable, "-m", HOST_MODULE]
#: Fast monitoring so failures show within a fraction of a second.
FAST_POLICY: dict[str, object] = {
    "quick_check_interval": 0.1,
    "thorough_check_interval": 0.5,
    "restart_threshold": 2,
    "restart_period": 60.0,
    "pending_timeout": 10.0,
    "affects_group": True,
}
WAIT = 10.0


def banner_command(address: str, port: int, name: str) -> list[str]:
    return [sys.executable, "-m", "clustermail.cluster.banner",
            "--address", address, "--port", str(port), "--name", name]


def process_resource(
    name: str, address: str, port: int, vs: str, depends_on: list[str]
) -> dict[str, object]:
    return {
        "name": name,
        "type": "process",
        "properties": {
            "command": banner_command(address, port, vs),
            "tcp_check": f"{address}:{port}",
            "stop_timeout": 5.0,
        },
        "depends_on": depends_on,
        "policy": FAST_POLICY,
    }


def mail1_spec(
    tmp: Path, port: int, *, epoch: int = 7, address: str = "127.0.0.11", vs: str = "mail1"
) -> dict[str, Any]:
    """The seed's mail1 group (ip, name, disk, banner) on a free port."""
    data = tmp / "data"
    return {
        "vs": vs,
        "node": "node1",
        "epoch": epoch,
        "store": f"sqlite://{tmp}/cluster.db",
        "data_dir": str(data),
        "resources": [
            {"name": "ip", "type": "ip_address", "properties": {"address": address},
             "depends_on": [], "policy": FAST_POLICY},
            {"name": "name", "type": "network_name", "properties": {"name": vs},
             "depends_on": ["ip"], "policy": FAST_POLICY},
            {"name": "disk", "type": "disk", "properties": {"path": f"{data}/disks/{vs}"},
             "depends_on": [], "policy": FAST_POLICY},
            process_resource("banner", address, port, vs, ["ip", "disk"]),
        ],
        "offline_resources": [],
    }


class EventStream:
    """Reads JSON lines from a pipe in a thread; tests wait on them with timeouts."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._queue: queue.Queue[Event | None] = queue.Queue()
        self.seen: list[Event] = []
        #: The host's periodic metrics reports (not state changes, so not in ``seen``).
        self.metrics: list[Event] = []
        self.closed = False
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[bytes]) -> None:
        with pipe:
            for line in pipe:
                try:
                    event = json.loads(line)
                except ValueError:
                    self._queue.put({"event": "unparsable", "line": line.decode(errors="replace")})
                    continue
                if isinstance(event, dict) and event.get("event") == "metrics":
                    self.metrics.append(event)  # periodic, not a state change: kept apart
                else:
                    self._queue.put(event)
        self._queue.put(None)

    def next(self, timeout: float = WAIT) -> Event | None:
        """The next event; None at end of stream. Raises TimeoutError."""
        try:
            event = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no event within {timeout} s") from None
        if event is None:
            self.closed = True
        else:
            self.seen.append(event)
        return event

    def wait(self, pred: Callable[[Event], bool], timeout: float = WAIT) -> Event:
        """Skips events until one matches ``pred``; fails with the events seen."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                event = None if self.closed else self.next(max(0.0, left))
            except TimeoutError:
                event = None
            if event is None:
                raise AssertionError(
                    f"no matching event within {timeout} s (stream closed: {self.closed}); "
                    f"seen: {json.dumps(self.seen[-30:], indent=0)}"
                )
            if pred(event):
                return event

    def resource(self, name: str, state: str, timeout: float = WAIT) -> Event:
        return self.wait(
            lambda e: e.get("event") == "resource"
            and e.get("resource") == name
            and e.get("state") == state,
            timeout,
        )

    def group(self, state: str, timeout: float = WAIT) -> Event:
        return self.wait(lambda e: e.get("event") == "group" and e.get("state") == state, timeout)

    def error(self, timeout: float = WAIT) -> Event:
        return self.wait(lambda e: e.get("event") == "error", timeout)

    def drain(self, quiet: float = 0.3) -> list[Event]:
        """Events until none arrives for ``quiet`` seconds."""
        out: list[Event] = []
        while not self.closed:
            try:
                event = self.next(quiet)
            except TimeoutError:
                break
            if event is not None:
                out.append(event)
        return out


def states(events: list[Event], state: str) -> list[str]:
    """The resources that reached ``state``, in event order."""
    return [
        e["resource"] for e in events if e.get("event") == "resource" and e.get("state") == state
    ]


class Host:
    """A resource host subprocess of this test process (``env``: its environment)."""

    def __init__(
        self, spec: dict[str, Any], stderr_path: Path, env: dict[str, str] | None = None
    ) -> None:
        with open(stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [*HOST_CMD, "--parent-pid", str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
            )
        assert self.proc.stdout is not None
        self.events = EventStream(self.proc.stdout)
        self.send(spec)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, message: dict[str, Any] | str) -> None:
        assert self.proc.stdin is not None
        line = message if isinstance(message, str) else json.dumps(message)
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait_exit(self, timeout: float = WAIT) -> int:
        return self.proc.wait(timeout)

    def child_pids(self) -> list[int]:
        return [e["pid"] for e in self.events.seen if e.get("pid")]

    def kill(self) -> None:
        for pid in self.child_pids():
            kill_if_ours(pid, group=True)
        if self.proc.returncode is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()


def kill_if_ours(pid: int, *, group: bool = False) -> None:
    """SIGKILLs a process (and its group) we started, if it is still that process."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"clustermail" not in cmdline:
        return  # the pid was reused by someone else's process
    if group:
        procutil.kill_group(pid, signal.SIGKILL)
    procutil.kill_pid(pid, signal.SIGKILL)


def read_banner(address: str, port: int, timeout: float = 5.0) -> str:
    with socket.create_connection((address, port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = b""
        while chunk := s.recv(1024):
            data += chunk
    return data.decode()


def connect_refused(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2.0):
            return False
    except ConnectionRefusedError:
        return True


def store_get(store_url: str, key: str) -> bytes | None:
    async def get() -> bytes | None:
        store = await open_store(store_url)
        try:
            kv = await store.get(key)
            return None if kv is None else kv.value
        finally:
            await store.close()

    return asyncio.run(get())


def store_put(store_url: str, key: str, value: str) -> None:
    async def put() -> None:
        store = await open_store(store_url)
        try:
            await store.put(key, value)
        finally:
            await store.close()

    asyncio.run(put())


# --------------------------------------------------------------------------- fixtures

StartHost = Callable[..., Host]


@pytest.fixture
def start_host(tmp_path: Path) -> Iterator[StartHost]:
    """Starts resource hosts (``start_host(spec, env=None)``); each is killed, with
    its children, at teardown."""
    started: list[Host] = []

    def start(spec: dict[str, Any], env: dict[str, str] | None = None) -> Host:
        host = Host(spec, tmp_path / f"host-{len(started)}.stderr", env)
        started.append(host)
        return host

    yield start
    for host in started:
        host.kill()


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """Pids to SIGKILL (with their process groups) at teardown, if still ours."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        kill_if_ours(pid, group=True)
