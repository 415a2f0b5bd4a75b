"""CPU time of benchmarked servers from /proc: user + system seconds of given processes,
the worker processes of a Dovecot master (its ``imap`` or ``pop3`` children), and the
pinning of processes to chosen CPUs."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system seconds of every thread of ``pids`` (a process that ended: 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def main_and_other_threads(pid: int) -> tuple[float, float]:
    """(the main thread's, the other threads') user + system seconds: an event loop's
    thread apart from the writer and other threads of a server process."""
    main = other = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # a thread that just ended
        if int(tid) == pid:
            main += int(fields[11]) + int(fields[12])
        else:
            other += int(fields[11]) + int(fields[12])
    return main / TICK, other / TICK


def thread_on_cpu(native_id: int | None) -> float:
    """Seconds a thread of this process has spent on a CPU (the scheduler's count, in
    nanoseconds: finer than the clock ticks of ``stat``); 0 for a thread that ended or
    never started (``Thread.native_id`` None)."""
    if native_id is None:
        return 0.0
    try:
        return int(Path(f"/proc/self/task/{native_id}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and every process below it, with those of the children
    each has reaped (a Postfix master's short-lived workers, a Dovecot master's ended
    sessions): user + system, and the reaped children's user + system."""
    parents: dict[int, int] = {}
    spent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        parents[int(entry)] = int(fields[1])
        spent[int(entry)] = sum(int(f) for f in fields[11:15])
    below: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        below.setdefault(parent, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += spent.get(pid, 0)
        todo += below.get(pid, [])
    return total / TICK


def children(parent: int, name: str) -> list[int]:
    """Processes called ``name`` whose parent is ``parent`` (a Dovecot master)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if comm == name and int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            out.append(int(entry))
    return out


def master_pid(run_dir: Path) -> int:
    """The PID Dovecot's master writes once it runs (it may answer on its port first)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return int((run_dir / "master.pid").read_text().strip())
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no Dovecot master.pid in {run_dir}") from None
            time.sleep(0.05)


def pin(pids: list[int], cpus: set[int]) -> None:
    """Every thread of the processes may run on ``cpus`` only (0 in ``pids``: the caller's
    thread)."""
    for pid in pids:
        if pid == 0:
            os.sched_setaffinity(0, cpus)
            continue
        try:
            threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue  # ended meanwhile
        for tid in threads:
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                os.sched_setaffinity(tid, cpus)
