"""bench/proc_cpu.py: the CPU of a process tree, with what its processes have reaped."""

from __future__ import annotations

import subprocess
import sys

from bench.proc_cpu import cpu_seconds, tree_cpu

_BURN = """
import sys, time
t = time.process_time()
while time.process_time() - t < 0.3:
    pass
print("burnt", flush=True)
sys.stdin.read()
"""
#: starts a grandchild that burns 0.3 s of CPU; after "reap", waits for it to end
_CHILD = f"""
import subprocess, sys
p = subprocess.Popen([sys.executable, "-c", {_BURN!r}], stdin=subprocess.PIPE)
assert sys.stdin.readline() == "reap\\n"
p.communicate(b"")
print("reaped", flush=True)
sys.stdin.read()
"""


def test_tree_cpu_counts_the_processes_below_and_those_they_reaped() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline() == b"burnt\n"  # the grandchild's, still running
        assert cpu_seconds([child.pid]) < 0.25 <= tree_cpu(child.pid)
        child.stdin.write(b"reap\n")
        child.stdin.flush()
        assert child.stdout.readline() == b"reaped\n"  # the grandchild has ended
        assert cpu_seconds([child.pid]) < 0.25 <= tree_cpu(child.pid)
    finally:
        child.communicate(b"", timeout=30)
