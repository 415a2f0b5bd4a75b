"""Coordination store benchmark: both backends, same machine, same run.

    python -m bench.coord [--seconds S] [--out bench/results/coord.json]

Measures put and compare-and-swap ops/s from 1 and from 4 processes, watch
delivery latency (commit in one process → event in another, p50/p99) and
lease expiry detection latency (TTL 2 s: expiry → delete event seen).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.machine import loadavg
from clustermail.coord import Compare, EventType, Put, open_store
from tests.support.etcd_server import EtcdCluster

RESULTS = Path(__file__).parent / "results"


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# ------------------------------------------------------------------ throughput


async def _ops_worker(url: str, mode: str, worker: int, seconds: float) -> int:
    store = await open_store(url)
    try:
        await store.revision()
        done = 0
        key = f"/bench/{mode}/{worker}"
        deadline = time.monotonic() + seconds
        if mode == "put":
            while time.monotonic() < deadline:
                await store.put(key, str(done))
                done += 1
        else:  # CAS: read-modify-write on the mod revision, as ownership changes are
            await store.put(key, "0")
            kv = await store.get(key)
            assert kv is not None
            rev = kv.mod_revision
            while time.monotonic() < deadline:
                result = await store.txn([Compare.mod_is(key, rev)], [Put(key, str(done))])
                assert result.succeeded
                rev = result.revision
                done += 1
        return done
    finally:
        await store.close()


def _ops_process(url: str, mode: str, worker: int, seconds: float, q: Any) -> None:
    q.put(asyncio.run(_ops_worker(url, mode, worker, seconds)))


def ops_per_second(url: str, mode: str, processes: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [
        ctx.Process(target=_ops_process, args=(url, mode, i, seconds, q)) for i in range(processes)
    ]
    for p in procs:
        p.start()
    total = sum(int(q.get(timeout=seconds + 60)) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    return total / seconds


# ------------------------------------------------------------------ watch latency


async def _writer(url: str, count: int) -> None:
    store = await open_store(url)
    try:
        for i in range(count):
            # CLOCK_MONOTONIC is one clock for the whole machine on Linux.
            await store.put(f"/bench/watch/{i}", repr(time.monotonic()))
            await asyncio.sleep(0.01)
    finally:
        await store.close()


def _writer_process(url: str, count: int) -> None:
    asyncio.run(_writer(url, count))


async def watch_latency(url: str, count: int) -> list[float]:
    store = await open_store(url)
    latencies: list[float] = []
    try:
        start = await store.revision() + 1
        proc = mp.get_context("spawn").Process(target=_writer_process, args=(url, count))
        proc.start()

        async def collect() -> None:
            async for ev in store.watch("/bench/watch/", start):
                latencies.append(time.monotonic() - float(ev.value))
                if len(latencies) == count:
                    return

        await asyncio.wait_for(collect(), count * 0.01 + 120)
        proc.join(timeout=30)
    finally:
        await store.close()
    return latencies


async def expiry_latency(url: str, runs: int, ttl: float = 2.0) -> list[float]:
    store = await open_store(url)
    latencies: list[float] = []
    try:
        for i in range(runs):
            key = f"/bench/expiry/{i}"
            lease = await store.grant(ttl)
            granted = time.monotonic()
            await store.put(key, "x", lease=lease.id)
            async for ev in store.watch(key):
                if ev.type is EventType.DELETE:
                    latencies.append(time.monotonic() - (granted + lease.ttl))
                    break
    finally:
        await store.close()
    return latencies


# ------------------------------------------------------------------ driver


def run_backend(name: str, url: str, seconds: float, log: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": name}
    for mode in ("put", "cas"):
        for procs in (1, 4):
            log(f"{name}: {mode} from {procs} process(es)…")
            out[f"{mode}_ops_per_s_{procs}p"] = round(ops_per_second(url, mode, procs, seconds))
    log(f"{name}: watch latency…")
    lat = asyncio.run(watch_latency(url, 300))
    out["watch_latency_ms"] = {
        "p50": round(statistics.median(lat) * 1000, 2),
        "p99": round(_pct(lat, 99) * 1000, 2),
        "n": len(lat),
    }
    log(f"{name}: lease expiry latency (TTL 2 s)…")
    exp = asyncio.run(expiry_latency(url, 5))
    out["expiry_latency_ms"] = {
        "p50": round(statistics.median(exp) * 1000, 1),
        "max": round(max(exp) * 1000, 1),
        "n": len(exp),
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput measurement")
    parser.add_argument("--out", type=Path, default=RESULTS / "coord.json")
    args = parser.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = []

    def cell(name: str, url: str) -> None:
        before = loadavg()
        out = run_backend(name, url, args.seconds, log)
        results.append({**out, "loadavg_before": before, "loadavg_after": loadavg()})

    with tempfile.TemporaryDirectory() as tmp:
        cell("sqlite", f"sqlite://{tmp}/cluster.db")
        etcd = EtcdCluster.start(Path(tmp) / "etcd", members=1, fast=False)
        try:
            cell("etcd", etcd.url)
        finally:
            etcd.stop()
    doc = {"benchmark": "coord", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())


