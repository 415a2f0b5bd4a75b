"""Real processes: crash consistency under SIGKILL, fencing between two owners, identity
across processes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

import clustermail
from clustermail.mail.store import MailboxDatabase, check

CHILD = Path(__file__).with_name("store_child.py")
A, B = "alice@example.test", "bob@example.test"
KILLS = 200


def spawn(mode: str, db: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=f"{Path(clustermail.__file__).parents[1]}:{CHILD.parents[3]}")
    return subprocess.Popen(
        [sys.executable, str(CHILD), mode, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        bufsize=1,
    )


def lines(stream: IO[str]) -> Iterator[str]:
    for line in stream:
        yield line.rstrip("\n")


def test_crash_consistency_under_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "DB1.sqlite"
    db = MailboxDatabase(path)
    db.mount(1)
    db.create_mailbox_sync(A)
    db.create_mailbox_sync(B)
    db.dismount()
    rng = random.Random(1234)
    acked: dict[str, tuple[int, int]] = {}
    zygote = spawn("zygote", path)
    assert zygote.stdin is not None and zygote.stdout is not None
    out = lines(zygote.stdout)
    started = time.monotonic()
    try:
        for run in range(KILLS):
            zygote.stdin.write(f"run {run}\n")
            zygote.stdin.flush()
            pid = int(next(out).split()[1])
            assert next(out) == "ready"
            time.sleep(rng.uniform(0.005, 0.050))
            os.kill(pid, signal.SIGKILL)
            this_run: dict[str, tuple[int, int]] = {}
            for line in out:
                if line == f"exited {run}":
                    break
                ua, ub, tag = line.split()
                this_run[tag] = (int(ua), int(ub))
            acked.update(this_run)
            verify(path, acked, this_run)
    finally:
        zygote.kill()
        zygote.wait()
    assert len(acked) > KILLS  # the children really delivered between kills
    assert time.monotonic() - started < 100


def verify(
    path: Path, acked: dict[str, tuple[int, int]], this_run: dict[str, tuple[int, int]]
) -> None:
    db = MailboxDatabase(path, create=False)
    db.mount(1)
    try:
        report = check(db)
        assert report.ok, report.lines()
        uids_a = set(db.list_messages(A, "INBOX").uids)
        uids_b = set(db.list_messages(B, "INBOX").uids)
        assert all(ua in uids_a and ub in uids_b for ua, ub in acked.values())
        for tag, (ua, ub) in this_run.items():
            assert tag.encode() in db.fetch_raw(A, "INBOX", ua)
            assert tag.encode() in db.fetch_raw(B, "INBOX", ub)
    finally:
        db.dismount()


class Worker:
    def __init__(self, db: Path) -> None:
        self.proc = spawn("worker", db)

    def __call__(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().rstrip("\n")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[Worker, Worker]]:
    one, two = Worker(tmp_path / "DB1.sqlite"), Worker(tmp_path / "DB1.sqlite")
    yield one, two
    one.close()
    two.close()


def test_fencing_between_two_processes(workers: tuple[Worker, Worker]) -> None:
    old, new = workers
    assert old("mount 1") == "ok"
    assert old("create") == "ok"
    assert old("deliver") == "ok 1"
    validity = old("uidvalidity")
    assert new("mount 2") == "ok"
    assert new("uidvalidity") == validity  # same UIDVALIDITY in another process
    fenced = old("deliver")
    assert fenced.startswith("error FencedError")
    assert "fenced" in fenced and "epoch 1" in fenced and "epoch 2" in fenced
    assert old("deliver").startswith("error FencedError")  # stays fenced
    assert new("count") == "ok 1"  # the stale owner wrote nothing
    assert new("deliver") == "ok 2"  # and consumed no UID
    assert old("dismount") == "ok"
    refused = old("mount 1")
    assert refused.startswith("error MountRefusedError")
    assert "epoch 1 refused" in refused


def test_identity_across_processes(workers: tuple[Worker, Worker]) -> None:
    first, second = workers
    assert first("mount 5") == "ok"
    assert first("create") == "ok"
    validity = first("uidvalidity")
    assert first("deliver") == "ok 1"
    assert first("dismount") == "ok"
    assert second("mount 5") == "ok"  # same epoch: the same owner again
    assert second("uidvalidity") == validity
    assert second("deliver") == "ok 2"
