"""This test process's own child processes, found through /proc."""

from __future__ import annotations

import os
from pathlib import Path


def children_running(module: str) -> list[int]:
    """PIDs of this process's children whose command line names ``module``."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        if ppid == os.getpid() and module.encode() in cmdline:
            found.append(int(entry))
    return found
