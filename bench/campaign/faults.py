"""The faults a campaign run injects, and the world they act on.

Each fault is a coroutine that acts on real processes — ``kill -9``, ``kill
-STOP`` then ``kill -CONT``, a held write lock, an admin's move — and returns
what it did. Targets are picked at injection time from the cluster's status,
with the run's random generator, so a seed replays the same choices (the
timings of a loaded machine do not replay).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.campaign.audit import AuditWatcher
from clustermail.admin import intents
from clustermail.coord import CoordError
from tests.e2e.harness import LocalCluster, owners
from tests.support.etcd_server import EtcdCluster

#: Every kind of fault, with the backends it applies to.
KINDS: dict[str, tuple[str, ...]] = {
    "kill_agent": ("sqlite", "etcd"),
    "kill_host": ("sqlite", "etcd"),
    "kill_agent_and_host": ("sqlite", "etcd"),
    "stop_agent_short": ("sqlite", "etcd"),
    "stop_agent_long": ("sqlite", "etcd"),
    "stop_host_short": ("sqlite", "etcd"),
    "stop_host_long": ("sqlite", "etcd"),
    "stop_store_member": ("etcd",),
    "stop_store_short": ("sqlite", "etcd"),
    "stop_store_long": ("sqlite", "etcd"),
    "move_racing_failure": ("sqlite", "etcd"),
    "restart_racing_failback": ("sqlite", "etcd"),
}
#: Faults that are a whole scenario of their own, never paired with another.
SINGLE_ONLY = {"move_racing_failure", "restart_racing_failback"}
#: The virtual server whose failback is immediate (the others never fail back).
FAILBACK_VS = "mail1"
FAILBACK_NODE = "node1"


def short_stop(ttl: float, rng: random.Random) -> float:
    """Shorter than the lease TTL."""
    return round(rng.uniform(0.15, 0.6) * ttl, 3)


def long_stop(ttl: float, rng: random.Random) -> float:
    """Longer than the lease TTL."""
    return round(rng.uniform(1.25, 3.0) * ttl, 3)


class StoreControl:
    """What the campaign can do to the coordination store."""

    members = 0

    async def stall(self, seconds: float) -> None:
        raise NotImplementedError

    async def stall_member(self, seconds: float, rng: random.Random) -> str:
        raise NotImplementedError

    def resume_all(self) -> None:
        """Undoes every stall at once (cleanup after a failed run)."""


_HOLD_SQLITE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


@dataclass
class SqliteControl(StoreControl):
    """The embedded store: a stall is its write lock held by another process."""

    path: Path
    _holders: list[subprocess.Popen[str]] = field(default_factory=list)

    async def stall(self, seconds: float) -> None:
        holder = subprocess.Popen([sys.executable, "-c", _HOLD_SQLITE_LOCK, str(self.path),
                                   str(seconds)], stdout=subprocess.PIPE, text=True)
        self._holders.append(holder)
        try:
            assert holder.stdout is not None
            await asyncio.to_thread(holder.stdout.readline)  # "locked"
            await asyncio.to_thread(holder.wait, seconds + 30)
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
            self._holders.remove(holder)

    def resume_all(self) -> None:
        for holder in list(self._holders):
            holder.kill()


@dataclass
class EtcdControl(StoreControl):
    """A 3-member etcd cluster: members are frozen with SIGSTOP."""

    etcd: EtcdCluster
    members: int = 3

    async def stall(self, seconds: float) -> None:
        await asyncio.to_thread(self._pause, list(range(self.members)))
        try:
            await asyncio.sleep(seconds)
        finally:
            self.resume_all()

    async def stall_member(self, seconds: float, rng: random.Random) -> str:
        leader = await asyncio.to_thread(self.etcd.leader_index, 5.0)
        index = leader if rng.random() < 0.5 else rng.choice(
            [i for i in range(self.members) if i != leader])
        await asyncio.to_thread(self._pause, [index])
        try:
            await asyncio.sleep(seconds)
        finally:
            self.etcd.resume_member(index)
        return f"member {index}" + (" (leader)" if index == leader else "")

    def _pause(self, indexes: list[int]) -> None:
        for i in indexes:
            self.etcd.pause_member(i)

    def resume_all(self) -> None:
        for i in range(self.members):
            self.etcd.resume_member(i)


@dataclass
class World:
    """The cluster under test and what acts on it."""

    cluster: LocalCluster
    store: StoreControl
    rng: random.Random
    ttl: float
    #: PIDs stopped with SIGSTOP and not yet continued.
    frozen: set[int] = field(default_factory=set)
    #: Told of every freeze and thaw (the one-owner audit discounts frozen time).
    audit: AuditWatcher | None = None

    async def status(self, timeout: float = 60.0) -> dict[str, Any]:
        """The cluster's status, waiting (bounded) through a store that does not answer
        yet: the previous run's stall or an election may still be ending."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self.cluster.status()
            except CoordError:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.5)

    def live_nodes(self) -> list[str]:
        return sorted(n for n, p in self.cluster.procs.items() if p.poll() is None)

    def agent_pid(self, node: str) -> int:
        return self.cluster.procs[node].pid

    async def kill_agent(self, node: str) -> None:
        self.cluster.expected_exits.add(node)
        proc = self.cluster.procs[node]
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        self.frozen.discard(proc.pid)
        await asyncio.to_thread(proc.wait, 10)

    async def freeze(self, pid: int, seconds: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
            self.frozen.add(pid)
            if self.audit is not None and await asyncio.to_thread(_stopped, pid):
                self.audit.froze(pid, time.monotonic())
        try:
            await asyncio.sleep(seconds)
        finally:
            self.thaw(pid)

    def thaw(self, pid: int) -> None:
        if self.audit is not None and _state(pid) not in ("", "Z", "X"):
            self.audit.thawed(pid, time.monotonic())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        self.frozen.discard(pid)

    def thaw_all(self) -> None:
        for pid in list(self.frozen):
            self.thaw(pid)
        self.store.resume_all()


def _state(pid: int) -> str:
    """The process's state letter from /proc ("" when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def _stopped(pid: int, timeout: float = 2.0) -> bool:
    """Waits (bounded) until the kernel shows ``pid`` stopped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _state(pid) in ("T", "t"):
            return True
        time.sleep(0.002)
    return False


@dataclass
class Injected:
    kind: str
    target: str
    at: float  # monotonic
    duration: float = 0.0  # how long a stop lasted
    ended: float = 0.0  # monotonic: when its last action was done
    note: str = ""

    def to_dict(self, run_start: float) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "target": self.target,
                               "at": round(self.at - run_start, 3)}
        if self.duration:
            out["duration"] = self.duration
        if self.note:
            out["note"] = self.note
        return out


def _online_hosts(status: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(virtual server, owner, resource host pid) of every online virtual server."""
    return [(v["name"], v["owner"], int(v["pid"])) for v in status["virtual_servers"]
            if v["state"] == "online" and v["owner"] and v["pid"]]


async def inject(world: World, kind: str) -> Injected:
    """Carries out one fault of ``kind`` now; returns when its last action is done."""
    rng = world.rng
    status = await world.status()
    hosts = _online_hosts(status)
    live = world.live_nodes()
    now = time.monotonic
    if kind == "kill_agent":
        node = rng.choice(live)
        fault = Injected(kind, node, now())
        await world.kill_agent(node)
    elif kind in ("kill_host", "kill_agent_and_host"):
        if not hosts:
            return Injected(kind, "-", now(), note="no online virtual server")
        vs, owner, pid = rng.choice(hosts)
        fault = Injected(kind, f"{vs} host {pid}" + (f" + {owner}" if "agent" in kind else ""),
                         now())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if kind == "kill_agent_and_host" and owner in live:
            await world.kill_agent(owner)
    elif kind.startswith("stop_agent"):
        node = rng.choice(live)
        seconds = (short_stop if kind.endswith("short") else long_stop)(world.ttl, rng)
        fault = Injected(kind, node, now(), duration=seconds)
        await world.freeze(world.agent_pid(node), seconds)
    elif kind.startswith("stop_host"):
        if not hosts:
            return Injected(kind, "-", now(), note="no online virtual server")
        vs, _, pid = rng.choice(hosts)
        seconds = (short_stop if kind.endswith("short") else long_stop)(world.ttl, rng)
        fault = Injected(kind, f"{vs} host {pid}", now(), duration=seconds)
        await world.freeze(pid, seconds)
    elif kind == "stop_store_member":
        seconds = round(rng.uniform(0.3, 3.0) * world.ttl, 3)
        fault = Injected(kind, "etcd", now(), duration=seconds)
        fault.target = await world.store.stall_member(seconds, rng)
    elif kind.startswith("stop_store"):
        seconds = (short_stop if kind.endswith("short") else long_stop)(world.ttl, rng)
        fault = Injected(kind, "store", now(), duration=seconds)
        await world.store.stall(seconds)
    elif kind == "move_racing_failure":
        fault = await _move_racing_failure(world, status, hosts)
    elif kind == "restart_racing_failback":
        fault = await _restart_racing_failback(world)
    else:
        raise ValueError(f"unknown fault kind {kind!r}")
    fault.ended = time.monotonic()
    return fault


async def _move_racing_failure(world: World, status: dict[str, Any],
                               hosts: list[tuple[str, str, int]]) -> Injected:
    """An administrator moves a virtual server; the source or the target node dies
    while the move is under way."""
    rng = world.rng
    live = world.live_nodes()
    busy = {owner for _, owner, _ in hosts}
    if not hosts or len(live) < 2:
        return Injected("move_racing_failure", "-", time.monotonic(), note="nothing to move")
    vs, source, _ = rng.choice(hosts)
    idle = [n for n in live if n not in busy]
    target = rng.choice(idle or [n for n in live if n != source])
    victim = source if rng.random() < 0.5 else target
    delay = round(rng.uniform(0.0, 1.5), 3)
    assert world.cluster.store is not None
    fault = Injected("move_racing_failure", f"{vs} {source}->{target}, kill {victim}",
                     time.monotonic(), duration=delay)
    await intents.move_vs(world.cluster.store, vs, target)
    await asyncio.sleep(delay)
    await world.kill_agent(victim)
    return fault


async def _restart_racing_failback(world: World) -> Injected:
    """The preferred owner of the virtual server that fails back dies, its virtual
    server fails over, the node comes back — and while the virtual server fails
    back to it, a node of the move dies."""
    rng = world.rng
    c = world.cluster
    status = await world.status()
    if owners(status).get(FAILBACK_VS) != FAILBACK_NODE:
        return Injected("restart_racing_failback", "-", time.monotonic(),
                        note=f"{FAILBACK_VS} was not on {FAILBACK_NODE}")
    await world.kill_agent(FAILBACK_NODE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        held = owners(await world.status()).get(FAILBACK_VS)
        if held and held != FAILBACK_NODE:
            break
        await asyncio.sleep(0.05)
    else:
        return Injected("restart_racing_failback", "-", time.monotonic(),
                        note=f"{FAILBACK_VS} did not fail over within 30 s")
    standby = owners(await world.status())[FAILBACK_VS]
    c.start_node(FAILBACK_NODE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        nodes = {n["name"]: n["state"] for n in (await world.status())["nodes"]}
        if nodes.get(FAILBACK_NODE) == "up":
            break
        await asyncio.sleep(0.05)
    delay = round(rng.uniform(0.0, 2.0), 3)
    await asyncio.sleep(delay)
    victim = FAILBACK_NODE if rng.random() < 0.5 else str(standby)
    fault = Injected("restart_racing_failback",
                     f"{FAILBACK_VS} {standby}->{FAILBACK_NODE}, kill {victim}",
                     time.monotonic(), duration=delay)
    await world.kill_agent(victim)
    return fault
