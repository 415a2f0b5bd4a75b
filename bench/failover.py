"""Failover benchmark: kill -9 of the owner node → the address answers on the new owner.

    python -m bench.failover [--runs 20] [--out bench/results/failover.json]

For each store backend (sqlite, etcd) and lease profile (default, fast): a real
4-node cluster of `node run` processes on loopback; each run kills the node
that owns mail3 (agent and resource host: kill -9 of the agent, whose host
dies with it) and times until mail3's address answers with a banner naming
the new owner; the killed node is started again before the next run. Then
planned moves (`vs move`) timed the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from clustermail.admin import intents
from tests.e2e.harness import LocalCluster, banner, cluster_toml, free_addresses, owners
from tests.support.etcd_server import EtcdCluster

RESULTS = Path(__file__).parent / "results"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 3),
        "p95": round(pct(values, 95), 3),
        "p99": round(pct(values, 99), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


async def wait_banner(address: str, port: int, node: str, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = await asyncio.to_thread(banner, address, port, 0.2)
        if line and f"node {node}" in line:
            return time.monotonic()
        await asyncio.sleep(0.005)
    raise TimeoutError(f"{address}:{port} did not answer from {node} within {timeout} s")


def settled(status: dict[str, Any]) -> bool:
    """Every node up and every virtual server online."""
    return all(n["state"] == "up" for n in status["nodes"]) and all(owners(status).values())


async def run_one(store_url: str, profile: str, runs: int, log: Any) -> dict[str, Any]:
    base, port = free_addresses()
    address = f"{base}.13"
    toml = cluster_toml(base, port, timing=profile, vs_extra="failover_threshold = 10000")
    with tempfile.TemporaryDirectory() as tmp:
        async with LocalCluster(Path(tmp), store_url, toml) as c:
            c.start_all()
            status = await c.wait_for(lambda s: all(owners(s).values()), timeout=60,
                                      what="all virtual servers online")
            failovers: list[float] = []
            for i in range(runs):
                owner = owners(status)["mail3"]
                assert owner is not None
                standby = "node4" if owner == "node3" else "node3"
                t0 = time.monotonic()
                c.kill_node(owner)
                t1 = await wait_banner(address, port, standby)
                failovers.append(t1 - t0)
                log(f"  {profile} failover {i + 1}/{runs}: {t1 - t0:.3f} s")
                c.start_node(owner)
                status = await c.wait_for(settled, timeout=30, what=f"{owner} back")
            moves: list[float] = []
            assert c.store is not None
            for i in range(runs):
                status = await c.wait_for(settled, timeout=30, what="a settled cluster")
                owner = owners(status)["mail3"]
                target = "node4" if owner == "node3" else "node3"
                t0 = time.monotonic()
                await intents.move_vs(c.store, "mail3", target)
                t1 = await wait_banner(address, port, target)
                moves.append(t1 - t0)
                log(f"  {profile} planned move {i + 1}/{runs}: {t1 - t0:.3f} s")
    return {"failover_s": summary(failovers), "planned_move_s": summary(moves)}


async def main_async(runs: int, log: Any) -> list[dict[str, Any]]:
    results = []
    for backend in ("sqlite", "etcd"):
        for profile in ("default", "fast"):
            log(f"{backend} / {profile}…")
            with tempfile.TemporaryDirectory() as tmp:
                if backend == "sqlite":
                    out = await run_one(f"sqlite://{tmp}/cluster.db", profile, runs, log)
                else:
                    etcd = EtcdCluster.start(Path(tmp) / "etcd", members=1)
                    try:
                        out = await run_one(etcd.url, profile, runs, log)
                    finally:
                        etcd.stop()
            results.append({"backend": backend, "profile": profile, **out})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS / "failover.json")
    args = parser.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = asyncio.run(main_async(args.runs, log))
    doc = {"benchmark": "failover", "runs": args.runs,
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
