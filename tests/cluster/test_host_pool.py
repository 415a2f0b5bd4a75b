"""Spare resource hosts: started ahead of need, with what a takeover would otherwise
wait for already imported."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from clustermail.cluster.host_pool import start_host

#: A spare's imports take about a second on a quiet machine of this kind.
PRELOAD_TIMEOUT = 30.0


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


async def test_a_spare_host_loads_the_etcd_client_before_its_spec(tmp_path: Path) -> None:
    """The first resources of a virtual server (a block device's reservation, a network
    name) need the store; importing gRPC then cost a takeover ~0.1 s."""
    host = await start_host(tmp_path, "node1", "etcd")  # etcds: the same modules
    try:
        deadline = time.monotonic() + PRELOAD_TIMEOUT
        while "cygrpc" not in _maps(host.pid):  # gRPC's extension module, mapped
            assert host.returncode is None, "the spare host exited"
            assert time.monotonic() < deadline, "gRPC not loaded by the spare"
            await asyncio.sleep(0.05)
    finally:
        host.kill()
        await host.wait()
