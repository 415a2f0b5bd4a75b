"""Lab benchmark: failover and client-visible unavailability between machines.

    sudo python -m bench.lab [--runs 20] [--profiles default,fast] [--faults power-off,partition]
                             [--vs mail3] [--out bench/results/lab.json]

Root only (the lab is network namespaces, a bridge, loop devices). For each timing
profile a fresh lab is brought up (`clustermail lab up --timing PROFILE`: 4 node
machines, a 3-member etcd on node1..node3, a client machine) and, for each fault,
``--runs`` times:

* the owner machine of the virtual server (mail3 by default) is looked up;
* a prober on the client machine opens a connection to the virtual server's SMTP
  address every 50 ms (each with a 0.5 s timeout, so probes overlap during an
  outage) and records whether a ``220`` banner came back;
* the owner is powered off (cable out, kill -9 of everything on it) or
  partitioned (cable out, processes live);
* failover time: from the fault to the virtual server's ``vs_online`` entry in the
  cluster event log from another node (its wall-clock stamp: every machine of the
  lab shares the host's clock);
* client-visible unavailability: from the start of the first failed probe to the
  start of the first successful one after it;
* the machine is powered on (or healed) and the cluster must settle (every node
  up, every virtual server online; failback is ``never`` in the lab, so the
  virtual server stays where it went) before the next run.

The lab's failover threshold (20 per period) is raised to 1000 for the bench: the
cells make more failovers than that on purpose. Every wait is bounded; the lab is
always taken down (also on Ctrl-C or SIGTERM).
Results go to ``bench/results/lab.json`` with the load average before and after
each cell; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench.machine import loadavg
from clustermail.cluster.host_pool import SPARE_DELAY

RESULTS = Path(__file__).parent / "results"
PROFILES = ("default", "fast")
FAULTS = ("power-off", "partition")
SMTP_PORT = 2525
#: Seconds between probe starts, and each probe's connect + banner timeout.
PROBE_INTERVAL = 0.05
PROBE_TIMEOUT = 0.5
#: Bounds of the waits of one run.
FAILOVER_TIMEOUT = 60.0
SETTLE_TIMEOUT = 120.0
#: Seconds a settled cluster is left alone before the next fault: the restarted
#: machine starts its spare resource host SPARE_DELAY after joining, and a host's
#: start takes up to ~1 s; then it is the warm standby a long-running cluster has.
DWELL = SPARE_DELAY + 3.0
STATUS_INTERVAL = 0.1
STORE_CALL_TIMEOUT = 5.0
#: Failovers per period a virtual server may make before it stays failed: more than
#: a run of every cell makes.
FAILOVER_THRESHOLD = 1000

#: Runs on the client machine: a probe every PROBE_INTERVAL, one line per probe
#: ("start end ok node") on stdout, until killed.
PROBER = r"""
import asyncio, re, sys, time
address, port = sys.argv[1], int(sys.argv[2])
interval, timeout = float(sys.argv[3]), float(sys.argv[4])
NODE = re.compile(r"node (\S+?)\)?$")

async def probe():
    start = time.time()
    ok, node = 0, "-"
    try:
        async def banner():
            reader, writer = await asyncio.open_connection(address, port)
            try:
                return await reader.readline()
            finally:
                writer.close()
        line = (await asyncio.wait_for(banner(), timeout)).decode(errors="replace").strip()
        if line.startswith("220"):
            ok = 1
            m = NODE.search(line)
            node = m.group(1) if m else "?"
    except (OSError, asyncio.TimeoutError):
        pass
    sys.stdout.write(f"{start:.4f} {time.time():.4f} {ok} {node}\n")
    sys.stdout.flush()

async def main():
    tasks = set()
    next_at = time.monotonic()
    while True:
        t = asyncio.get_running_loop().create_task(probe())
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))

asyncio.run(main())
"""


class BenchError(Exception):
    """The bench cannot go on; the message says why."""


# --------------------------------------------------------------------------- pure part


@dataclass(frozen=True, slots=True)
class Probe:
    start: float
    end: float
    ok: bool
    node: str


def parse_probes(text: str) -> list[Probe]:
    """The prober's lines, in start order; a torn last line (the prober killed
    mid-write) is skipped."""
    probes = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[2] not in ("0", "1"):
            continue
        try:
            probes.append(Probe(float(parts[0]), float(parts[1]), parts[2] == "1", parts[3]))
        except ValueError:
            continue
    probes.sort(key=lambda p: p.start)
    return probes


@dataclass(frozen=True, slots=True)
class Outage:
    """What the client saw of one fault."""

    #: Start of the first failed probe to start of the first successful one after it
    #: (None: no probe failed, or none succeeded after the first failure).
    unavailable_s: float | None
    #: Probes that failed from the fault to the first success after them.
    failed: int
    #: Node named by the first successful banner after the outage.
    recovered_on: str


def outage(probes: Iterable[Probe], fault: float) -> Outage:
    """The client's outage after a fault at ``fault`` (wall clock): probes that ended
    before the fault saw the old owner and do not count."""
    after = [p for p in probes if p.end >= fault]
    first_fail = next((i for i, p in enumerate(after) if not p.ok), None)
    if first_fail is None:
        return Outage(None, 0, "")
    back = next((p for p in after[first_fail:] if p.ok), None)
    if back is None:
        return Outage(None, sum(1 for p in after[first_fail:] if not p.ok), "")
    failed = sum(1 for p in after[first_fail:] if not p.ok and p.start < back.start)
    return Outage(back.start - after[first_fail].start, failed, back.node)


def fences(log_text: str, node: str) -> list[tuple[float, str]]:
    """(wall-clock time, node) of each ``fenced`` entry of a node agent's JSON log."""
    found = []
    for line in log_text.splitlines():
        if '"fenced"' not in line:
            continue
        try:
            entry = json.loads(line)
            if entry.get("event") == "fenced":
                found.append((datetime.fromisoformat(entry["time"]).timestamp(), node))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return found


def collateral(fenced: list[tuple[float, str]], runs: list[dict[str, Any]],
               end: float) -> dict[int, list[str]]:
    """Per run, the nodes other than the faulted owner that fenced themselves from the
    fault to the next run's fault (a healthy node losing its lease on the way)."""
    starts = [(r["fault_time"], r["run"], r["owner"]) for r in runs]
    out: dict[int, list[str]] = {}
    for i, (t0, run, owner) in enumerate(starts):
        t1 = starts[i + 1][0] if i + 1 < len(starts) else end
        out[run] = sorted({n for t, n in fenced if t0 <= t < t1 and n != owner})
    return out


def pct(values: list[float], p: float) -> float:
    """The nearest-rank percentile (no interpolation: a value that was measured)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"p50": round(statistics.median(values), 3), "p99": round(pct(values, 99), 3),
            "max": round(max(values), 3), "n": len(values)}


def first_online(entries: Iterable[dict[str, Any]], vs: str, old: str,
                 fault: float) -> dict[str, Any] | None:
    """The first ``vs_online`` entry of ``vs`` from another node than ``old`` at or
    after the fault (entries as the event log's JSON)."""
    found = [e for e in entries if e.get("event") == "vs_online" and e.get("vs") == vs
             and e.get("node") != old and float(e.get("time", 0)) >= fault]
    return min(found, key=lambda e: float(e["time"]), default=None)


def fmt(cell: dict[str, Any] | None, key: str) -> str:
    return "–" if cell is None else f"{cell[key]:.2f}"


def markdown_table(cells: list[dict[str, Any]]) -> str:
    head = ("| fault | profile | runs | failover p50 / p99 / max (s) | "
            "unavailable p50 / p99 / max (s) | failed banners (faults / rest) | "
            "other nodes fenced | errors |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        f, u = c.get("failover_s"), c.get("unavailable_s")
        lines.append(
            f"| {c['fault']} | {c['profile']} | {c['runs_ok']}/{c['runs']} | "
            f"{fmt(f, 'p50')} / {fmt(f, 'p99')} / {fmt(f, 'max')} | "
            f"{fmt(u, 'p50')} / {fmt(u, 'p99')} / {fmt(u, 'max')} | "
            f"{c['failed_banners']} / {c.get('failed_banners_outside_faults', 0)} | "
            f"{c.get('collateral_fences', 0)} | "
            f"{len(c['errors'])} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the lab


class LabBench:
    """One lab (one timing profile) and the faults run against it."""

    def __init__(self, data: Path, profile: str, vs: str, log: Callable[[str], None]) -> None:
        from rich.console import Console

        self.data = data
        self.profile = profile
        self.vs = vs
        self.log = log
        self.console = Console(quiet=True)
        self.store: Any = None
        self.prober: subprocess.Popen[bytes] | None = None
        self.probe_file = data.parent / f"probes-{profile}.txt"

    # The lab's own API (the same functions `clustermail lab …` calls).

    async def up(self) -> None:
        from clustermail.admin.lab import commands

        self.log(f"[{self.profile}] lab up…")
        t0 = time.monotonic()
        await commands.up(self.data, 4, 3, self.console, self.profile)
        self.log(f"[{self.profile}] lab up in {time.monotonic() - t0:.0f} s")
        await self.raise_failover_threshold()

    async def raise_failover_threshold(self) -> None:
        """The lab lets a virtual server fail over 20 times per period before it stays
        failed (the cluster's policy); a cell makes that many on purpose."""
        from dataclasses import replace

        from clustermail.admin import local
        from clustermail.admin.lab.commands import open_lab_store
        from clustermail.cluster.config import load_config

        config = load_config(self.data / "cluster.toml")
        config = replace(config, virtual_servers=tuple(
            replace(vs, failover_threshold=FAILOVER_THRESHOLD)
            for vs in config.virtual_servers))
        store = await open_lab_store(self.state())
        try:
            await asyncio.wait_for(local.apply_config(store, config), STORE_CALL_TIMEOUT)
        finally:
            await store.close()

    def state(self) -> Any:
        from clustermail.admin.lab.state import require

        return require(self.data)

    async def status(self) -> dict[str, Any] | None:
        """The cluster's status (the `status --json` contract), or None when the store
        does not answer in time (the lab's client then reconnects)."""
        from clustermail.admin.lab.commands import open_lab_store
        from clustermail.admin.status import build_status
        from clustermail.cluster.view import read_view

        try:
            if self.store is None:
                self.store = await open_lab_store(self.state())
            view = await asyncio.wait_for(read_view(self.store), STORE_CALL_TIMEOUT)
            return build_status(view)
        except Exception:  # CoordError, a timeout, a dead connection…
            await self.drop_store()
            return None

    async def drop_store(self) -> None:
        store, self.store = self.store, None
        if store is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(store.close(), STORE_CALL_TIMEOUT)

    async def events(self) -> list[dict[str, Any]]:
        from clustermail.cluster import eventlog

        for _ in range(3):
            if self.store is None:
                await self.status()
            if self.store is None:
                continue
            try:
                entries = await asyncio.wait_for(eventlog.read(self.store, 300),
                                                 STORE_CALL_TIMEOUT)
                return [{"time": e.time, "node": e.node, "event": e.event, "vs": e.vs}
                        for e in entries]
            except Exception:  # any store failure: reconnect, retry
                await self.drop_store()
        return []

    async def wait_for(self, check: Callable[[dict[str, Any]], bool], timeout: float,
                       what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            status = await self.status()
            if status is not None:
                last = status
                if check(status):
                    return status
            await asyncio.sleep(STATUS_INTERVAL)
        raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}; last status: "
                         f"{brief(last)}")

    # The client's prober.

    def start_prober(self) -> None:
        from clustermail.admin.lab import machines

        state = self.state()
        address = state.addresses[self.vs]
        with open(self.probe_file, "wb") as out:  # the prober keeps its own copy
            self.prober = subprocess.Popen(
                [*machines.enter(state.machine("client")), sys.executable, "-c", PROBER,
                 address, str(SMTP_PORT), str(PROBE_INTERVAL), str(PROBE_TIMEOUT)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.DEVNULL,
                start_new_session=True)

    def stop_prober(self) -> None:
        proc, self.prober = self.prober, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)

    def probes(self) -> list[Probe]:
        try:
            return parse_probes(self.probe_file.read_text(errors="replace"))
        except OSError:
            return []

    async def wait_probe_ok(self, since: float, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.ok and p.start >= since for p in self.probes()):
                return
            if self.prober is not None and self.prober.poll() is not None:
                raise BenchError("the prober on the client machine exited")
            await asyncio.sleep(0.1)
        raise BenchError(f"no SMTP banner from {self.vs} for {timeout:.0f} s")

    # Faults.

    def fault(self, kind: str, machine: str) -> None:
        from clustermail.admin.lab import commands

        if kind == "power-off":
            commands.power_off(self.data, machine, self.console)
        else:
            commands.partition(self.data, [machine], self.console)

    def repair(self, kind: str, machine: str) -> None:
        from clustermail.admin.lab import commands

        if kind == "power-off":
            commands.power_on(self.data, machine, self.console)
        else:
            commands.heal(self.data, self.console)

    async def etcd_healthy(self) -> bool:
        from clustermail.admin.lab.commands import etcd_healthy

        state = self.state()
        checks = [asyncio.to_thread(etcd_healthy, state.machines[n].address)
                  for n in state.etcd_members]
        return all(await asyncio.gather(*checks))

    async def settle(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status = await self.wait_for(settled, timeout, "every node up and every virtual "
                                     "server online")
        while not await self.etcd_healthy():
            if time.monotonic() > deadline:
                raise BenchError("an etcd member is not healthy after the repair")
            await asyncio.sleep(0.5)
        await self.wait_probe_ok(time.time(), max(5.0, deadline - time.monotonic()))
        return status

    async def run(self, kind: str, i: int, runs: int) -> dict[str, Any]:
        status = await self.settle(SETTLE_TIMEOUT)
        owner = owner_of(status, self.vs)
        assert owner is not None
        etcd_member = owner in self.state().etcd_members
        await asyncio.sleep(DWELL)
        fault_at = time.time()
        self.fault(kind, owner)
        result: dict[str, Any] = {"run": i + 1, "owner": owner, "owner_etcd_member": etcd_member,
                                  "fault_time": round(fault_at, 3)}
        try:
            after = await self.wait_for(
                lambda s: owner_of(s, self.vs) not in (None, owner), FAILOVER_TIMEOUT,
                f"{self.vs} online on another machine than {owner}")
            seen_at = time.time()
            result["new_owner"] = owner_of(after, self.vs)
            await self.wait_probe_ok(fault_at, FAILOVER_TIMEOUT)
            # The prober's probes that started before the first success are all in.
            await asyncio.sleep(PROBE_TIMEOUT + 0.2)
            entry = first_online(await self.events(), self.vs, owner, fault_at)
            if entry is not None:
                result["failover_s"] = round(float(entry["time"]) - fault_at, 3)
                result["failover_from"] = "event log"
            else:
                result["failover_s"] = round(seen_at - fault_at, 3)
                result["failover_from"] = "status poll"
            seen = outage(self.probes(), fault_at)
            result["unavailable_s"] = (None if seen.unavailable_s is None
                                       else round(seen.unavailable_s, 3))
            result["failed_banners"] = seen.failed
            result["recovered_on"] = seen.recovered_on
            result["window"] = [round(fault_at, 3), round(time.time(), 3)]
        finally:
            self.repair(kind, owner)
            result["repaired_at"] = round(time.time(), 3)
        self.log(f"[{self.profile}] {kind} {i + 1}/{runs}: {owner} -> "
                 f"{result.get('new_owner')}: failover {result.get('failover_s')} s "
                 f"({result.get('failover_from')}), unavailable {result.get('unavailable_s')} s, "
                 f"{result.get('failed_banners')} failed banners")
        return result

    async def cell(self, kind: str, runs: int) -> dict[str, Any]:
        before = loadavg()
        started = time.time()
        t0 = time.monotonic()
        results: list[dict[str, Any]] = []
        errors: list[str] = []
        for i in range(runs):
            try:
                results.append(await self.run(kind, i, runs))
            except BenchError as exc:
                errors.append(f"run {i + 1}: {exc}")
                self.log(f"[{self.profile}] {kind} {i + 1}/{runs}: ERROR {exc}")
                if len(errors) >= 3:
                    errors.append("cell ended early: 3 errors")
                    break
        fo = [r["failover_s"] for r in results if r.get("failover_s") is not None]
        un = [r["unavailable_s"] for r in results if r.get("unavailable_s") is not None]
        probes = [p for p in self.probes() if started <= p.start]
        fenced = [f for name in self.state().machines
                  for f in fences(read_text(self.data / "logs" / f"{name}.log"), name)]
        others = collateral(fenced, results, time.time())
        for r in results:
            r["collateral_fences"] = others.get(r["run"], [])
        windows = [(r["window"][0], r["window"][1]) for r in results if "window" in r]
        return {"fault": kind, "profile": self.profile, "vs": self.vs, "runs": runs,
                "runs_ok": len(fo), "failover_s": summary(fo), "unavailable_s": summary(un),
                "failed_banners": sum(int(r.get("failed_banners") or 0) for r in results),
                "probes": len(probes),
                "collateral_fences": sum(len(r["collateral_fences"]) for r in results),
                "failed_banners_outside_faults": failed_outside(probes, windows),
                "outside_faults": outside_runs(probes, windows, results),
                "errors": errors, "loadavg_before": before, "loadavg_after": loadavg(),
                "duration_s": round(time.monotonic() - t0, 1), "run_results": results}


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def owner_of(status: dict[str, Any], vs: str) -> str | None:
    for v in status["virtual_servers"]:
        if v["name"] == vs and v["state"] == "online":
            owner: str | None = v["owner"]
            return owner
    return None


def settled(status: dict[str, Any]) -> bool:
    return (all(n["state"] == "up" for n in status["nodes"])
            and all(v["state"] == "online" and v["owner"] for v in status["virtual_servers"]))


def brief(status: dict[str, Any] | None) -> str:
    if status is None:
        return "the store did not answer"
    nodes = ", ".join(f"{n['name']} {n['state']}" for n in status["nodes"])
    servers = ", ".join(f"{v['name']} {v['state']} on {v['owner'] or '-'}"
                        for v in status["virtual_servers"])
    return f"{nodes}; {servers}"


def failed_outside(probes: list[Probe], windows: list[tuple[float, float]]) -> int:
    """Failed probes outside the fault windows (a repair or failback disturbing clients)."""
    return sum(1 for p in probes if not p.ok
               and not any(a <= p.end and p.start <= b for a, b in windows))


def outside_runs(probes: list[Probe], windows: list[tuple[float, float]],
                 results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failed probes outside the fault windows, grouped by the run whose repair they
    followed: when they started and ended, in seconds after that repair."""
    repairs = sorted((r["repaired_at"], r["run"]) for r in results if "repaired_at" in r)
    groups: dict[int, list[Probe]] = {}
    for p in probes:
        if p.ok or any(a <= p.end and p.start <= b for a, b in windows):
            continue
        before = [(t, run) for t, run in repairs if t <= p.start]
        groups.setdefault(before[-1][1] if before else 0, []).append(p)
    out = []
    for run, failed in sorted(groups.items()):
        base = next((t for t, r in repairs if r == run), failed[0].start)
        out.append({"after_repair_of_run": run, "failed": len(failed),
                    "from_s": round(failed[0].start - base, 2),
                    "to_s": round(failed[-1].start - base, 2)})
    return out


async def bench_profile(bench: LabBench, faults: list[str], runs: int) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    try:
        await bench.up()
        bench.start_prober()
        for kind in faults:
            cells.append(await bench.cell(kind, runs))
            bench.log(markdown_table(cells[-1:]))
    finally:
        await bench.drop_store()
    return cells


def take_down(bench: LabBench, keep_logs: Path | None, log: Callable[[str], None]) -> None:
    """Synchronous, so that it also runs after Ctrl-C or SIGTERM stopped the event loop."""
    from clustermail.admin.errors import AdminError
    from clustermail.admin.lab import commands
    from clustermail.admin.lab.state import load

    bench.stop_prober()
    try:
        if load(bench.data) is not None:
            try:
                commands.down(bench.data, bench.console)
            except AdminError as exc:
                # Processes may take longer to die on a loaded machine: once more.
                log(f"lab down: {exc}; again")
                commands.down(bench.data, bench.console)
    finally:
        if keep_logs is not None:
            shutil.rmtree(keep_logs, ignore_errors=True)
            with contextlib.suppress(OSError):
                shutil.copytree(bench.data / "logs", keep_logs)
                shutil.copy(bench.probe_file, keep_logs)
            log(f"[{bench.profile}] the lab's logs are kept in {keep_logs}")
        shutil.rmtree(bench.data.parent, ignore_errors=True)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="faults per cell (default 20)")
    parser.add_argument("--profiles", default="default,fast",
                        help=f"comma-separated, of {', '.join(PROFILES)}")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"comma-separated, of {', '.join(FAULTS)}")
    parser.add_argument("--vs", default="mail3", choices=("mail1", "mail2", "mail3"),
                        help="the virtual server whose owner is faulted (default mail3)")
    parser.add_argument("--out", type=Path, default=RESULTS / "lab.json")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the lab's logs and the probes next to --out (kept anyway "
                             "when a run failed)")
    args = parser.parse_args(argv)
    profiles = [x for x in args.profiles.split(",") if x]
    faults = [x for x in args.faults.split(",") if x]
    bad = [x for x in profiles if x not in PROFILES] + [x for x in faults if x not in FAULTS]
    if bad:
        parser.error(f"unknown profile or fault: {', '.join(bad)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if os.geteuid() != 0:
        print("bench.lab needs root (the lab is network namespaces, a bridge and loop "
              "devices): run it with sudo", file=sys.stderr)
        return 2
    from clustermail.admin.errors import AdminError
    from clustermail.admin.lab.commands import require_root

    try:
        require_root()
    except AdminError as exc:
        print(f"bench.lab: {exc}", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    signal.signal(signal.SIGTERM, _terminate)
    command = "python -m bench.lab " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cells: list[dict[str, Any]] = []
    kept: list[str] = []
    interrupted = ""
    for profile in profiles:
        tmp = Path(tempfile.mkdtemp(prefix=f"clustermail-bench-lab-{profile}-"))
        bench = LabBench(tmp / "lab", profile, args.vs, log)
        done: list[dict[str, Any]] = []
        try:
            done = asyncio.run(bench_profile(bench, faults, args.runs))
        except KeyboardInterrupt as exc:
            interrupted = f"interrupted ({exc or 'Ctrl-C'})"
        except (AdminError, BenchError) as exc:
            interrupted = f"ended: {exc}"
        finally:
            cells += done
            failed = args.keep_logs or bool(interrupted) or any(c["errors"] for c in done)
            keep = args.out.parent / f"lab-{profile}-logs" if failed else None
            kept += [str(keep)] if keep else []
            take_down(bench, keep, log)
        if interrupted:
            log(interrupted)
            break
    result = {"benchmark": "lab", "command": command.strip(), "started": started,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "runs": args.runs, "vs": args.vs,
              "probe": {"interval_s": PROBE_INTERVAL, "timeout_s": PROBE_TIMEOUT,
                        "port": SMTP_PORT},
              "dwell_s": DWELL, "cpus": os.cpu_count(), "results": cells}
    if kept:
        result["logs_kept"] = kept
    if interrupted:
        result["incomplete"] = interrupted
    if cells:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(markdown_table(cells))
        print(f"\nwritten to {args.out}")
    return 1 if interrupted or any(c["errors"] for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
