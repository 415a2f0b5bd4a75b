"""Stopping the processes of the local cluster: a stop that always finishes.

Each node agent gets SIGTERM (its graceful stop: virtual servers offline, lease
revoked). An agent still running after the stop timeout is SIGKILLed with its
process group (its resource hosts) and every process below it; then whatever
resource host or resource process the cluster's status named is SIGKILLed
too, with its process group, if it is still the same process. Processes are
named by PID and start time (:class:`~clustermail.cluster.proctree.ProcRef`),
so a late kill never hits a newcomer that got a reused PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from clustermail.cluster.proctree import ProcRef, descendants

#: How long stragglers get to die after SIGKILL (they always do; this bounds the wait).
KILL_WAIT = 5.0
#: How long resource hosts get to follow their stopped agent before they are killed.
HOST_WAIT = 3.0


@dataclass
class Processes:
    """What the local cluster runs: node agents by name, and what they started."""

    agents: dict[str, ProcRef] = field(default_factory=dict)
    #: Resource hosts and resource processes named by the cluster's status.
    others: dict[str, ProcRef] = field(default_factory=dict)

    def add_agent(self, name: str, pid: int) -> None:
        if pid not in {r.pid for r in self.agents.values()}:
            ref = ProcRef.of(pid)
            if ref is not None:
                self.agents[name] = ref

    def add_other(self, what: str, pid: int) -> None:
        ref = ProcRef.of(pid)
        if ref is not None:
            self.others[what] = ref


async def _wait_gone(refs: list[ProcRef], timeout: float) -> list[ProcRef]:
    deadline = time.monotonic() + timeout
    alive = [r for r in refs if r.alive()]
    while alive and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        alive = [r for r in alive if r.alive()]
    return alive


async def stop_processes(
    procs: Processes, say: Callable[[str], None], timeout: float, *, reap: Callable[[], None]
) -> list[str]:
    """Stops ``procs`` within about ``timeout`` + :data:`KILL_WAIT` seconds; returns
    what could not be stopped (nothing, unless a process is not ours to kill).
    ``reap`` collects exited children of ours, so they do not linger as zombies."""
    for name, ref in procs.agents.items():
        with contextlib.suppress(ProcessLookupError):
            os.kill(ref.pid, signal.SIGTERM)
            say(f"stopping {name} (pid {ref.pid})…")
    deadline = time.monotonic() + timeout
    agents = list(procs.agents.items())
    while time.monotonic() < deadline and any(r.alive() for _, r in agents):
        reap()
        await asyncio.sleep(0.05)
    stragglers = [(n, r) for n, r in agents if r.alive()]
    below: list[ProcRef] = []
    for name, ref in stragglers:
        # Everything it started, found before the kill orphans it.
        below += [r for p in descendants(ref.pid) if (r := ProcRef.of(p)) is not None]
        say(f"{name} (pid {ref.pid}) did not stop within {timeout:g} s: killing it and its "
            "resource hosts")
        ref.kill(signal.SIGKILL)
    for ref in below:
        ref.kill(signal.SIGKILL)
    reap()
    # Resource hosts die with their agent (parent-death signal); give them a moment.
    others = await _wait_gone(list(procs.others.values()), HOST_WAIT if not stragglers else 0)
    for ref in others:
        ref.kill(signal.SIGKILL)
    left = await _wait_gone([r for _, r in agents] + below + others, KILL_WAIT)
    reap()
    return [f"pid {r.pid}" for r in left]
