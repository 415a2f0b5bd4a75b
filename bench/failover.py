"""Failover benchmark: kill -9 of the owner node → the address answers on the new owner.

    python -m bench.failover [--runs 20] [--moves 20] [--stores sqlite,etcd,etcd3]
                             [--profiles default,fast] [--mail]
                             [--out bench/results/failover.json]

Stores: ``sqlite`` (the embedded store), ``etcd`` (one member tuned to a 10 ms
heartbeat and 100 ms election timeout: the fastest etcd can be), ``etcd3``
(three members with etcd's default 100 ms / 1000 ms, what a site runs; etcd's
smallest lease is then 2 s, so the fast profile's 1 s TTL becomes 2 s).
Each cell records the load average before and after it; with ``--merge`` the
cells run replace the same cells in an existing results file.

For each store and lease profile (default, fast): a real
4-node cluster of `node run` processes on loopback; each run kills the node
that owns mail3 (agent and resource host: kill -9 of the agent, whose host
dies with it) and times until mail3's address answers with a banner naming
the new owner; the killed node is started again before the next run. Then
planned moves (`vs move`) timed the same way.

The banner is a ``process`` resource: a separate Python program the new owner starts
(~0.1 s of it is that program's own start). With ``--mail`` each virtual server is a
mail virtual server — its mail store on the disk, SMTP, IMAP4 and POP3 inside its
resource host, and the banner started after them — and each run times mail3's SMTP
instead: until the old listener is gone (a connection refused) and a ``220``
greeting comes, which only the new owner can send. Each cell says which it timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.machine import loadavg
from clustermail.admin import intents
from clustermail.cluster.host_pool import SPARE_DELAY
from tests.e2e.harness import (
    LocalCluster,
    banner,
    cluster_toml,
    free_addresses,
    mail_port,
    owners,
)
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


async def wait_banner(address: str, port: int, node: str, timeout: float = 30,
                      *, other_than: bool = False) -> float:
    """When the address answers from ``node`` (with ``other_than``: from any node but it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = await asyncio.to_thread(banner, address, port, 0.2)
        if line and (f"node {node}" in line) != other_than and "node " in line:
            return time.monotonic()
        await asyncio.sleep(0.005)
    which = f"a node other than {node}" if other_than else node
    raise TimeoutError(f"{address}:{port} did not answer from {which} within {timeout} s")


async def wait_greeting(address: str, port: int, timeout: float = 30,
                        probe: Callable[[str, int, float], str | None] = banner) -> float:
    """When ``address:port`` greets (``220``) after having refused a connection: the
    service that answered before is gone and a new one answers. ``probe``: the first
    line a connection gets, None when refused (the harness's ``banner``)."""
    deadline = time.monotonic() + timeout
    gone = False
    while time.monotonic() < deadline:
        line = await asyncio.to_thread(probe, address, port, 0.2)
        if line is None:
            gone = True
        elif gone and line.startswith("220"):
            return time.monotonic()
        await asyncio.sleep(0.005)  # nothing to await: another process's listener
    what = "greet again" if gone else "stop answering"
    raise TimeoutError(f"{address}:{port} did not {what} within {timeout} s")


#: What a cell times: the banner process, or a mail virtual server's SMTP (--mail).
TIMED = {False: "the banner, a process resource",
         True: "SMTP's greeting, a mail virtual server (store, SMTP, IMAP4, POP3)"}


def layout(base: str, port: int, profile: str, mail: bool) -> str:
    """The cluster of a cell; mail virtual servers start their banner after SMTP, so the
    banner's program start does not delay the mail services timed."""
    return cluster_toml(base, port, timing=profile, vs_extra="failover_threshold = 10000",
                        mail=mail, banner_after=("smtp",) if mail else ())


def settled(status: dict[str, Any]) -> bool:
    """Every node up and every virtual server online."""
    return all(n["state"] == "up" for n in status["nodes"]) and all(owners(status).values())


STORES = {
    "sqlite": "SQLite file (embedded)",
    "etcd": "etcd, 1 member, heartbeat 10 ms / election 100 ms",
    "etcd3": "etcd, 3 members, etcd's defaults: heartbeat 100 ms / election 1000 ms",
}


#: Seconds between a restarted node being back (or a move done) and the next kill
#: (or move): a node keeps one warm spare resource host, started SPARE_DELAY after it
#: joined or used its spare, and a host's start (Python and its imports) takes up to
#: ~1 s on a slow machine. Each run then meets the standby a long-running cluster has.
DWELL = SPARE_DELAY + 3.0


async def run_one(store_url: str, profile: str, runs: int, moves_runs: int,
                  log: Any, mail: bool = False) -> dict[str, Any]:
    base, port = free_addresses()
    address = f"{base}.13"
    smtp = mail_port(port, "smtp")
    toml = layout(base, port, profile, mail)
    with tempfile.TemporaryDirectory() as tmp:
        async with LocalCluster(Path(tmp), store_url, toml) as c:
            c.start_all()
            status = await c.wait_for(lambda s: all(owners(s).values()), timeout=60,
                                      what="all virtual servers online")
            await asyncio.sleep(DWELL)  # the standby's spare host, as in a running cluster
            failovers: list[float] = []
            moves: list[float] = []
            aborted = ""
            try:
                for i in range(runs):
                    owner = owners(status)["mail3"]
                    assert owner is not None
                    t0 = time.monotonic()
                    c.kill_node(owner)
                    # Usually the standby (node3 or node4); on a loaded machine a node
                    # may fence itself meanwhile and placement pick another.
                    t1 = await (wait_greeting(address, smtp) if mail
                                else wait_banner(address, port, owner, other_than=True))
                    failovers.append(t1 - t0)
                    log(f"  {profile} failover {i + 1}/{runs}: {t1 - t0:.3f} s")
                    c.start_node(owner)
                    status = await c.wait_for(settled, timeout=60, what=f"{owner} back")
                    # The restarted node is the next run's standby: let it warm its
                    # spare resource host (imports) as a long-running standby has.
                    await asyncio.sleep(DWELL)
                assert c.store is not None
                for i in range(moves_runs):
                    status = await c.wait_for(settled, timeout=60, what="a settled cluster")
                    await asyncio.sleep(DWELL)  # the target's spare host, used two moves ago
                    owner = owners(status)["mail3"]
                    target = "node4" if owner == "node3" else "node3"
                    t0 = time.monotonic()
                    await intents.move_vs(c.store, "mail3", target)
                    t1 = await (wait_greeting(address, smtp) if mail
                                else wait_banner(address, port, target))
                    moves.append(t1 - t0)
                    log(f"  {profile} planned move {i + 1}/{moves_runs}: {t1 - t0:.3f} s")
            except (TimeoutError, AssertionError) as exc:
                # A cluster that does not settle (live nodes fencing themselves on
                # an overloaded machine) ends the cell; the runs so far are kept.
                aborted = str(exc).splitlines()[0]
                log(f"  cell ended early: {aborted}")
            # A killed node cannot log; every fence logged is a live node that
            # missed its own deadline (the machine's load), and a disturbance.
            fences = sum(p.read_text(errors="replace").count('"event": "fenced"')
                         for p in c.data.glob("*.agent.log"))
    out: dict[str, Any] = {"failover_s": summary(failovers) if failovers else None,
                           "failover_runs_s": [round(x, 3) for x in failovers],
                           "live_node_fences": fences}
    if aborted:
        out["ended_early"] = aborted
    if moves:
        out["planned_move_s"] = summary(moves)
    return out


async def main_async(stores: list[str], profiles: list[str], runs: int, moves: int,
                     log: Any, mail: bool = False) -> list[dict[str, Any]]:
    results = []
    for backend in stores:
        for profile in profiles:
            log(f"{backend} / {profile}…")
            before = loadavg()
            with tempfile.TemporaryDirectory() as tmp:
                if backend == "sqlite":
                    out = await run_one(f"sqlite://{tmp}/cluster.db", profile, runs, moves, log,
                                        mail)
                else:
                    etcd = (EtcdCluster.start(Path(tmp) / "etcd", members=1) if backend == "etcd"
                            else EtcdCluster.start(Path(tmp) / "etcd", members=3, fast=False))
                    try:
                        out = await run_one(etcd.url, profile, runs, moves, log, mail)
                    finally:
                        etcd.stop()
            results.append({"backend": backend, "store": STORES[backend], "profile": profile,
                            "mail": mail, "timed": TIMED[mail], "dwell_s": DWELL,
                            "loadavg_before": before,
                            "loadavg_after": loadavg(), **out})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20, help="failovers per cell")
    parser.add_argument("--moves", type=int, default=None,
                        help="planned moves per cell (default: as many as --runs)")
    parser.add_argument("--stores", default="sqlite,etcd,etcd3",
                        help=f"comma-separated, of {', '.join(STORES)}")
    parser.add_argument("--profiles", default="default,fast", help="comma-separated")
    parser.add_argument("--out", type=Path, default=RESULTS / "failover.json")
    parser.add_argument("--mail", action="store_true",
                        help="mail virtual servers (store, SMTP, IMAP4, POP3): time SMTP's "
                        "greeting instead of the banner's")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other cells of an existing --out file")
    args = parser.parse_args(argv)
    stores = [x for x in args.stores.split(",") if x]
    profiles = [x for x in args.profiles.split(",") if x]
    bad = [x for x in stores if x not in STORES] + [
        x for x in profiles if x not in ("default", "fast")]
    if bad or args.runs < 1:
        parser.error(f"unknown store or profile: {', '.join(bad)}" if bad
                     else "--runs must be at least 1")
    moves = args.runs if args.moves is None else args.moves

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = asyncio.run(main_async(stores, profiles, args.runs, moves, log, args.mail))
    for cell in results:
        cell["command"] = ("python -m bench.failover " + " ".join(argv if argv is not None
                                                                  else sys.argv[1:])).strip()
        cell["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.merge and args.out.exists():
        old = json.loads(args.out.read_text()).get("results", [])
        def key(c: dict[str, Any]) -> tuple[Any, ...]:
            return c.get("backend"), c.get("profile"), c.get("mail", False)

        fresh = {key(c) for c in results}
        results = [c for c in old if key(c) not in fresh] + results
    doc = {"benchmark": "failover", "cpus": os.cpu_count(), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
