"""Data directory locks: held while the holder lives, naming it; free once it is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clustermail.admin import dir_lock

HOLD = (
    "import sys, time; from pathlib import Path; from clustermail.admin import dir_lock; "
    "dir_lock.DirLock(Path(sys.argv[1]), sys.argv[2]).acquire(); print('held', flush=True); "
    "time.sleep(60)"
)


def hold_in_child(path: Path, what: str) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path), what],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_a_held_lock_names_its_holder_until_it_dies(tmp_path: Path) -> None:
    path = dir_lock.up_lock_path(tmp_path)
    assert dir_lock.holder(path) is None
    child = hold_in_child(path, "clustermail up")
    try:
        assert dir_lock.holder(path) == dir_lock.Holder(child.pid, "clustermail up")
        with pytest.raises(dir_lock.LockHeld) as caught:
            dir_lock.DirLock(path, "clustermail up").acquire()
        assert caught.value.holder.pid == child.pid
    finally:
        child.kill()  # the kernel drops the lock with its holder, whatever kills it
        child.wait()
    assert dir_lock.holder(path) is None
    with dir_lock.DirLock(path, "clustermail up"):
        assert path.read_text() == f"{os.getpid()} clustermail up\n"
    assert path.read_text() == ""


def test_node_holders_lists_the_running_agents(tmp_path: Path) -> None:
    child = hold_in_child(dir_lock.node_lock_path(tmp_path, "node2"), "node agent node2")
    try:
        dir_lock.node_lock_path(tmp_path, "node1").write_text("999999 stale\n")  # not held
        assert dir_lock.node_holders(tmp_path) == {
            "node2": dir_lock.Holder(child.pid, "node agent node2")}
    finally:
        child.kill()
        child.wait()
    assert dir_lock.node_holders(tmp_path) == {}


def test_a_holder_that_wrote_nothing_yet_is_found_in_proc_locks(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        held = dir_lock.holder(path)
        assert held is not None and held.pid == child.pid
    finally:
        child.kill()
        child.wait()
