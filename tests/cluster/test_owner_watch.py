"""A node agent started by `up` stops when `up` is gone, and is killed if it will not."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from clustermail.cluster import owner_watch
from clustermail.cluster.proctree import ProcRef

# An "agent" that follows its owner (the middle process) and says when told to stop;
# with "stubborn" it ignores SIGTERM, so only the grace period's SIGKILL ends it.
AGENT = """
import signal, sys, time
from clustermail.cluster import owner_watch
if sys.argv[2] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *a: (print("stopping", flush=True), sys.exit(0)))
child = __import__("subprocess").Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
owner_watch.stop_with(int(sys.argv[1]), grace=1.0)
time.sleep(60)
"""


def start_agent(owner: int, mode: str) -> tuple[subprocess.Popen[str], int]:
    agent = subprocess.Popen([sys.executable, "-c", AGENT, str(owner), mode],
                             stdout=subprocess.PIPE, text=True)
    assert agent.stdout is not None
    return agent, int(agent.stdout.readline())


def wait_gone(ref: ProcRef, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while ref.alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    return not ref.alive()


@pytest.mark.parametrize("mode", ["graceful", "stubborn"])
def test_the_agent_stops_when_its_owner_dies(mode: str) -> None:
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    agent, child = start_agent(owner.pid, mode)
    child_ref = ProcRef.of(child)
    assert child_ref is not None
    try:
        time.sleep(0.2)
        assert agent.poll() is None  # the owner lives: nothing happens
        owner.kill()
        owner.wait()
        assert agent.wait(timeout=10) is not None
        if mode == "graceful":
            assert agent.stdout is not None and agent.stdout.readline().strip() == "stopping"
            assert agent.returncode == 0
        else:  # SIGTERM ignored: killed after the grace period, its child with it
            assert agent.returncode == -9
            assert wait_gone(child_ref, 5)
    finally:
        for p in (owner, agent):
            p.kill()
            p.wait()
        child_ref.kill()


def test_an_owner_that_does_not_exist_is_refused() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with pytest.raises(owner_watch.OwnerWatchError, match="no such process"):
        owner_watch.stop_with(gone.pid)
    with pytest.raises(owner_watch.OwnerWatchError):
        owner_watch.stop_with(1)
