"""The keeper of a private etcd member: the member never outlives `up` or its keeper.
A stand-in program (``sleep``) plays the member; the processes are real."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clustermail.cluster.proctree import ProcRef, descendants

TIMEOUT = 20.0


@pytest.fixture
def owner() -> Iterator[subprocess.Popen[bytes]]:
    """Stands for `up`."""
    proc = subprocess.Popen(["sleep", "120"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _keeper(owner: int, tmp_path: Path) -> tuple[subprocess.Popen[bytes], ProcRef]:
    keeper = subprocess.Popen(
        [sys.executable, "-m", "clustermail.admin.local_etcd_keeper", "--stop-with", str(owner),
         "--data", str(tmp_path), "--log", str(tmp_path / "member.log"), "--", "sleep", "120"])
    deadline = time.monotonic() + TIMEOUT
    while not (children := descendants(keeper.pid)):
        assert time.monotonic() < deadline, "the keeper started no member"
        time.sleep(0.02)
    member = ProcRef.of(children[0])
    assert member is not None
    return keeper, member


def _gone(ref: ProcRef) -> bool:
    deadline = time.monotonic() + TIMEOUT
    while ref.alive():
        if time.monotonic() > deadline:
            ref.kill(signal.SIGKILL)
            return False
        time.sleep(0.02)
    return True


def test_the_member_stops_when_up_is_gone(tmp_path: Path,
                                          owner: subprocess.Popen[bytes]) -> None:
    keeper, member = _keeper(owner.pid, tmp_path)
    owner.kill()
    owner.wait()
    assert _gone(member)
    keeper.wait(TIMEOUT)


def test_the_member_stops_with_its_keeper(tmp_path: Path,
                                          owner: subprocess.Popen[bytes]) -> None:
    keeper, member = _keeper(owner.pid, tmp_path)
    keeper.send_signal(signal.SIGTERM)
    assert keeper.wait(TIMEOUT) is not None
    assert _gone(member)


def test_the_member_dies_with_a_killed_keeper(tmp_path: Path,
                                              owner: subprocess.Popen[bytes]) -> None:
    keeper, member = _keeper(owner.pid, tmp_path)
    keeper.kill()
    keeper.wait()
    assert _gone(member)


def test_no_member_without_an_owner(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "clustermail.admin.local_etcd_keeper", "--stop-with", "999999999",
         "--data", str(tmp_path), "--log", str(tmp_path / "member.log"), "--", "sleep", "120"],
        capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 1 and "no such process" in done.stderr
