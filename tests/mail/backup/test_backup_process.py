"""Backups in a child process (:mod:`clustermail.mail.backup.process`): real child
processes on a real mail store; what they report, and that a stopped, killed or silent
child is reaped and leaves no partial set behind."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from clustermail.cluster import procutil
from clustermail.mail.backup import process, sets
from clustermail.mail.backup.sets import BackupError
from clustermail.mail.store import MailStore
from tests.mail.backup.support import A, msg, new_store
from tests.support.children import children_running

VS = "mail1"


@pytest.fixture
def store(tmp_path: Path) -> MailStore:
    s = new_store(tmp_path / "disk")
    db = s.database("SG1", "DB1")
    for i in range(6):  # about 1.5 MB: one progress report, then a long pause at 0.1 MB/s
        db.deliver_sync(msg(f"m{i}", 250_000), [A])
    return s


def _children() -> list[int]:
    """This process's backup child processes."""
    return children_running(process.CHILD_MODULE)


def _pending(pid: int, sig: int) -> bool:
    """Whether ``sig`` waits, undelivered, for the (stopped) process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("ShdPnd:"):
            return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    return False


async def _stopped(pid: int) -> None:
    """Until the SIGSTOP sent to ``pid`` took effect: a SIGTERM the stop sends while both
    are pending is delivered first, and the child would act on it."""
    async with asyncio.timeout(10):
        while not procutil.is_stopped(pid):
            await asyncio.sleep(0.01)


def _leftovers(backups: Path) -> list[str]:
    return sorted(n for n in os.listdir(backups) if n != ".lock") if backups.exists() else []


async def test_a_backup_runs_in_a_child_and_reports_its_progress(
        store: MailStore, tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    done, pid = await process.ChildBackup(max_rate=None)(
        store.disk, tmp_path / "sets", virtual_server=VS, incremental=False,
        storage_groups=None, queue=None, epoch=3, progress=lambda *p: seen.append(p))
    assert pid != os.getpid() and _children() == []  # its own process, reaped
    assert done.kind == "full" and done.epoch == 3 and done.path.is_dir()
    assert sets.load(done.path).to_json() == done.to_json()
    assert seen and seen[-1][0] == "SG1/DB1" and seen[-1][1] == seen[-1][2] > 0


async def _slow_backup(store: MailStore, backups: Path, log: list[str] | None = None
                       ) -> tuple[asyncio.Task[tuple[sets.BackupSet, int]], int]:
    """A backup paced to 0.1 MB/s, once it has reported progress; and its child's PID."""
    started = asyncio.Event()
    run = process.ChildBackup(max_rate=100_000, log=None if log is None else log.append)
    task = asyncio.create_task(run(
        store.disk, backups, virtual_server=VS, incremental=False, storage_groups=None,
        queue=None, epoch=3, progress=lambda *p: started.set()))
    async with asyncio.timeout(30):
        await started.wait()
    [pid] = _children()
    assert any(n.endswith(sets.PARTIAL) for n in _leftovers(backups))  # it is writing
    return task, pid


async def test_cancelling_stops_the_child_and_its_partial_set_goes(
        store: MailStore, tmp_path: Path) -> None:
    backups, log = tmp_path / "sets", list[str]()
    task, pid = await _slow_backup(store, backups, log)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 20)
    assert not Path(f"/proc/{pid}").exists()  # ended and reaped
    assert _leftovers(backups) == []
    assert log == [f"backup of mail1 runs in process {pid} (0.1 MB/s, nice +10)"]  # it
    # removed its partial set itself, on SIGTERM


async def test_a_second_cancel_mid_stop_still_ends_the_child_and_removes_its_set(
        store: MailStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A resource going offline cancelled a running backup twice (asyncio.gather ends at
    # its first cancelled child, and the caller then cancelled every task again): the
    # second cancel landed in the SIGTERM grace and left the child's partial set behind.
    backups, log = tmp_path / "sets", list[str]()
    task, pid = await _slow_backup(store, backups, log)
    # A child that is slow to act on SIGTERM: stopped, with the stop not told so (it
    # would SIGKILL a stopped child at once), the grace lasts until the second cancel.
    os.kill(pid, signal.SIGSTOP)
    await _stopped(pid)
    monkeypatch.setattr(procutil, "is_stopped", lambda _pid: False)
    task.cancel()
    async with asyncio.timeout(10):  # the stop has begun: its SIGTERM waits in the child
        while not _pending(pid, signal.SIGTERM):
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 20)
    assert not Path(f"/proc/{pid}").exists()  # SIGKILLed and reaped, not left running
    assert _leftovers(backups) == []  # removed here: the child could not
    assert "removed the partial backup set .mail1-" in log[-1]


async def test_a_child_that_cannot_act_on_sigterm_is_killed(
        store: MailStore, tmp_path: Path) -> None:
    backups, log = tmp_path / "sets", list[str]()
    task, pid = await _slow_backup(store, backups, log)
    os.kill(pid, signal.SIGSTOP)  # hung: no SIGTERM handler will run
    await _stopped(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 20)
    assert not Path(f"/proc/{pid}").exists()
    assert _leftovers(backups) == []  # removed here: the child could not
    assert "removed the partial backup set .mail1-" in log[-1]


async def test_a_silent_child_is_stopped(store: MailStore, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Not 1 s: a child still starting on a loaded machine can be silent for that long
    # (its heartbeat comes every second once it runs).
    monkeypatch.setattr(process, "SILENCE", 5.0)
    backups = tmp_path / "sets"
    task, pid = await _slow_backup(store, backups)
    os.kill(pid, signal.SIGSTOP)
    with pytest.raises(BackupError, match=rf"backup process {pid} wrote nothing for 5 s"):
        await asyncio.wait_for(task, 20)
    assert not Path(f"/proc/{pid}").exists() and _leftovers(backups) == []


async def test_a_child_killed_from_outside_is_a_clear_failure(
        store: MailStore, tmp_path: Path) -> None:
    backups = tmp_path / "sets"
    task, pid = await _slow_backup(store, backups)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(BackupError, match=rf"backup process {pid} ended \(exit status -9\) "
                                          "without a result"):
        await asyncio.wait_for(task, 20)
    assert _leftovers(backups) == []


async def test_the_childs_errors_are_the_backups_errors(store: MailStore,
                                                        tmp_path: Path) -> None:
    run = process.ChildBackup()
    with pytest.raises(BackupError, match="no mail store here"):
        await run(tmp_path / "nothing", tmp_path / "sets", virtual_server=VS,
                  incremental=False, storage_groups=None, queue=None, epoch=None,
                  progress=None)
    with pytest.raises(BackupError, match=r"no earlier backup of mail1.*take a full backup"):
        await run(store.disk, tmp_path / "sets", virtual_server=VS, incremental=True,
                  storage_groups=None, queue=None, epoch=None, progress=None)
    store.dismount()
    store.database("SG1", "DB1").path.unlink()
    with pytest.raises(BackupError, match=r"SG1/DB1: .* is missing: restore it before"):
        await run(store.disk, tmp_path / "sets", virtual_server=VS, incremental=False,
                  storage_groups=None, queue=None, epoch=None, progress=None)
    assert _children() == [] and _leftovers(tmp_path / "sets") == []
