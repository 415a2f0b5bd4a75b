"""The owner's backups in a child process of their own (:mod:`.child`), paced.

In a thread of the resource host a backup's compression and hashing share the host's CPU
and GIL with the deliveries; in a child at a lower CPU priority, paced to
:data:`DEFAULT_MAX_RATE`, they leave the deliveries their core (docs/decisions.md).

Every wait on the child is bounded from here: it must write a line at least every
:data:`SILENCE` seconds (it sends a heartbeat every second), and stopping it is SIGTERM,
at most :data:`TERM_GRACE` seconds to remove its partial set, then SIGKILL, by PID, and
reaped. A set the child was writing when it was killed is removed here. Cancelling the
caller (the mail store goes offline) stops the child the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clustermail.cluster import procutil
from clustermail.mail.backup import sets
from clustermail.mail.backup.child import NICENESS, BackupSpec
from clustermail.mail.backup.create import Progress
from clustermail.mail.backup.sets import BackupError, BackupSet

#: The module the child runs.
CHILD_MODULE = "clustermail.mail.backup.child"
#: The default pace of an owner's backups (``backup_max_rate``, MB/s): bytes/s.
DEFAULT_MAX_RATE = 50e6
#: Seconds without a line from the child before it is taken for hung and stopped.
SILENCE = 30.0
#: Seconds the child gets after SIGTERM before SIGKILL.
TERM_GRACE = 5.0
#: Seconds to wait for the kernel to end the child after SIGKILL (it always does).
KILL_WAIT = 5.0
#: Seconds to wait for the child's exit after its last line.
EXIT_WAIT = 10.0
_STDERR_KEPT = 2000


@dataclass(frozen=True, slots=True)
class ChildBackup:
    """Runs backups in a child process; ``max_rate`` in bytes/s (None: unpaced)."""

    max_rate: float | None = DEFAULT_MAX_RATE
    niceness: int = NICENESS
    level: int = sets.LEVEL
    log: Callable[[str], None] | None = None

    async def __call__(
        self, root: Path, backups: Path, *, virtual_server: str, incremental: bool,
        storage_groups: Sequence[str] | None, queue: Path | None, epoch: int | None,
        progress: Progress | None,
    ) -> tuple[BackupSet, int]:
        """The completed set and the PID of the process that made it; BackupError with a
        clear message when it could not."""
        spec = BackupSpec(
            root=str(root), backups=str(backups), virtual_server=virtual_server,
            incremental=incremental,
            storage_groups=None if storage_groups is None else list(storage_groups),
            queue=None if queue is None else str(queue), epoch=epoch,
            max_rate=self.max_rate, level=self.level, niceness=self.niceness)
        return await run_child(spec, progress, self.log)


def _partials(backups: Path, virtual_server: str) -> set[str]:
    """The partial sets of this virtual server in ``backups`` (by name)."""
    pattern = re.compile(rf"\.{re.escape(virtual_server)}-\d{{8}}T\d{{6}}Z-"
                         rf"(full|incremental)(-\d+)?{re.escape(sets.PARTIAL)}")
    try:
        return {n for n in os.listdir(backups) if pattern.fullmatch(n)}
    except OSError:
        return set()


async def run_child(spec: BackupSpec, progress: Progress | None,
                    log: Callable[[str], None] | None = None) -> tuple[BackupSet, int]:
    backups = Path(spec.backups)
    before = _partials(backups, spec.virtual_server)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", CHILD_MODULE, "--parent-pid", str(os.getpid()),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=1 << 24)
    except OSError as exc:
        raise BackupError(f"cannot start the backup process: {exc}") from None
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    if log is not None:
        pace = f"{spec.max_rate / 1e6:g} MB/s" if spec.max_rate else "unpaced"
        log(f"backup of {spec.virtual_server} runs in process {proc.pid} ({pace}, "
            f"nice +{spec.niceness})")
    errors = asyncio.create_task(_tail(proc.stderr))
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it died at once:
            proc.stdin.write(spec.to_line())  # its exit status and last words say why
            await proc.stdin.drain()
        outcome = await _follow(proc, proc.stdout, progress)
        try:
            async with asyncio.timeout(EXIT_WAIT):
                await proc.wait()
        except TimeoutError:
            raise BackupError(f"the backup process {proc.pid} did not exit after its "
                              f"result: stopped it") from None
        if outcome is None:
            raise BackupError(
                f"the backup process {proc.pid} ended (exit status {proc.returncode}) "
                "without a result" + _said(await _stderr(errors)))
        if outcome.get("event") == "failed":
            raise BackupError(str(outcome.get("error") or "the backup process failed"))
        try:
            done = BackupSet.from_json(outcome["set"], Path(str(outcome["path"])))
            return done, int(outcome["pid"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupError(f"the backup process {proc.pid} wrote a bad result: "
                              f"{exc!r}") from None
    except BaseException:
        try:
            await stop(proc)
        finally:  # also when cancelled again mid-stop (stop() then SIGKILLs and reaps)
            if proc.returncode is not None:  # it is gone: what it left is ours to remove
                for name in _partials(backups, spec.virtual_server) - before:
                    shutil.rmtree(backups / name, ignore_errors=True)
                    if log is not None:
                        log(f"removed the partial backup set {name} of a stopped backup "
                            "process")
            elif log is not None:
                log(f"the backup process {proc.pid} did not end after SIGKILL")
        raise
    finally:
        proc.stdin.close()
        errors.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await errors


async def _follow(proc: asyncio.subprocess.Process, stdout: asyncio.StreamReader,
                  progress: Progress | None) -> dict[str, Any] | None:
    """Reads the child's lines until its result (returned) or the end of its output."""
    while True:
        try:
            async with asyncio.timeout(SILENCE):
                line = await stdout.readline()
        except TimeoutError:
            raise BackupError(f"the backup process {proc.pid} wrote nothing for "
                              f"{SILENCE:.0f} s: stopped it") from None
        except ValueError:  # a line beyond the limit
            raise BackupError(f"the backup process {proc.pid} wrote a line too long to "
                              "read") from None
        if not line:
            return None
        try:
            event = json.loads(line)
            kind = event["event"]
        except (ValueError, TypeError, KeyError):
            raise BackupError(f"the backup process {proc.pid} wrote {line[:200]!r}, not a "
                              "JSON event") from None
        if kind in ("done", "failed"):
            return dict(event)
        if kind == "progress" and progress is not None:
            try:
                what, done, total = str(event["what"]), int(event["done"]), int(event["total"])
            except (KeyError, TypeError, ValueError):
                continue  # progress is a courtesy
            progress(what, done, total)


async def stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (the child removes its partial set), SIGKILL after :data:`TERM_GRACE`, by
    PID; returns once reaped or after :data:`KILL_WAIT`. Cancelled meanwhile, it SIGKILLs
    at once and still waits up to :data:`KILL_WAIT` for the reap before the cancel goes
    on."""
    if proc.returncode is not None:
        return
    try:
        if not procutil.is_stopped(proc.pid):
            procutil.kill_pid(proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TERM_GRACE):
                    await proc.wait()
        if proc.returncode is None:
            procutil.kill_pid(proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_WAIT):
                    await proc.wait()
    except BaseException:
        if proc.returncode is None:
            procutil.kill_pid(proc.pid, signal.SIGKILL)
            # Cancelled mid-stop (a second cancel): the stop still finishes — the kernel
            # ends a SIGKILLed process at once — so what it left can be removed.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(KILL_WAIT):
                    await proc.wait()
        raise


async def _tail(stream: asyncio.StreamReader) -> bytes:
    kept = b""
    while chunk := await stream.read(65536):
        kept = (kept + chunk)[-_STDERR_KEPT:]
    return kept


async def _stderr(task: asyncio.Task[bytes]) -> str:
    try:
        async with asyncio.timeout(1.0):
            return (await task).decode(errors="replace").strip()
    except (TimeoutError, asyncio.CancelledError):
        return ""


def _said(text: str) -> str:
    return f"; it said: {text.splitlines()[-1]}" if text else ""


__all__ = ["CHILD_MODULE", "DEFAULT_MAX_RATE", "ChildBackup", "run_child", "stop"]
