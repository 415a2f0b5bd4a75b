"""Run by test_ip_interface inside a network namespace: brings an interface-mode
``ip_address`` online and, after ``end`` ("offline" or "natural"), reports as JSON
what the announcer did."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from clustermail.cluster import procutil
from clustermail.cluster.resources.ip_address import IpAddressResource
from tests.support.resource_env import Env


async def main(tmp: str, interface: str, address: str, end: str) -> None:
    env = Env(Path(tmp))
    ip = env.make(IpAddressResource, "ip",
                  {"address": address, "mode": "interface", "interface": interface})
    await ip.online()
    running = sorted(procutil.live_groups)
    report: dict[str, object] = {
        "announcers": running,
        "alive_after_online": [procutil.pid_alive(p) for p in running],
    }
    print(json.dumps(report), flush=True)
    sys.stdin.readline()  # the test looks at the client's neighbour table meanwhile
    if end == "offline":
        await ip.offline()
    else:
        reaper = ip._reaper  # the announcer ends by itself (~ARP_COUNT s); its reaper then
        assert reaper is not None
        await asyncio.wait_for(asyncio.shield(reaper), 10)
        await ip.offline()
    report = {
        "left": sorted(procutil.live_groups),
        "alive_at_end": [procutil.pid_alive(p) for p in running],
        "warnings": [m for level, m in env.logs.lines if level == "warning"],
    }
    print(json.dumps(report), flush=True)
    await env.store.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
