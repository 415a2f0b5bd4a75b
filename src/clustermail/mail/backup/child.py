"""The process an owner's backup runs in: ``python -m clustermail.mail.backup.child``.

Compression and hashing are CPU work; in a thread of the resource host they share its
core and its GIL with the deliveries. Here they get a process of their own, at a lower
CPU priority, paced to the owner's ``backup_max_rate``. The parent side is
:mod:`.process`; they speak JSON lines:

* stdin: one line, the :class:`BackupSpec`; then nothing. End of file on stdin means the
  parent is gone: the backup stops (as on SIGTERM).
* stdout: ``{"event": "started", "pid": N}``, then ``progress`` lines (at most every
  :data:`PROGRESS_EVERY` s) and ``alive`` lines (every :data:`HEARTBEAT` s, whatever the
  copy does), and last ``done`` (the set's manifest and path) or ``failed`` (a message
  for a person).

SIGTERM stops the backup: the partial set is removed and the logs are left as they were
(a full set truncates them only once it is in place). Exit status 0 after ``done``, 1
after ``failed``, 143 when stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from clustermail.cluster import procutil
from clustermail.mail.backup import sets
from clustermail.mail.backup.create import create_backup
from clustermail.mail.store.errors import StoreError

#: Seconds between ``alive`` lines: the parent stops a child silent for much longer.
HEARTBEAT = 1.0
#: Seconds between two ``progress`` lines (the parent publishes every 0.5 s).
PROGRESS_EVERY = 0.1
#: How much the child lowers its CPU priority (``nice``): deliveries come first.
NICENESS = 10
STOPPED = 143


@dataclass(frozen=True, slots=True)
class BackupSpec:
    """What :func:`~clustermail.mail.backup.create.create_backup` is called with."""

    root: str
    backups: str
    virtual_server: str
    incremental: bool
    storage_groups: list[str] | None
    queue: str | None
    epoch: int | None
    max_rate: float | None  # bytes/s; None: unpaced
    level: int = sets.LEVEL
    niceness: int = NICENESS

    def to_line(self) -> bytes:
        return json.dumps(asdict(self)).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> BackupSpec:
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            groups = data.get("storage_groups")
            rate = data.get("max_rate")
            return cls(
                root=str(data["root"]), backups=str(data["backups"]),
                virtual_server=str(data["virtual_server"]),
                incremental=bool(data["incremental"]),
                storage_groups=None if groups is None else [str(g) for g in groups],
                queue=None if data.get("queue") is None else str(data["queue"]),
                epoch=None if data.get("epoch") is None else int(data["epoch"]),
                max_rate=None if rate is None else float(rate),
                level=int(data.get("level", sets.LEVEL)),
                niceness=int(data.get("niceness", NICENESS)),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"not a backup spec ({exc!r})") from None


class Stopped(BaseException):
    """SIGTERM, or the parent gone: unwinds the copy (the partial set is removed)."""


class _Out:
    """Lines to stdout from the copy and the heartbeat thread, one whole line at a time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_progress = 0.0
        self.what = ""
        self.sent: tuple[str, int, int] | None = None

    def send(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}) + "\n"
        with self.lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    def progress(self, what: str, done: int, total: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if (what, done, total) == self.sent:
            return
        if force or what != self.what or now - self.last_progress >= PROGRESS_EVERY:
            self.what, self.last_progress, self.sent = what, now, (what, done, total)
            self.send("progress", what=what, done=done, total=total)


def _on_term(_sig: int, _frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one never cuts the cleanup
    raise Stopped


def _watch_parent(out: _Out) -> None:
    """Heartbeats until stdin closes (the parent is gone), then stops the backup."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(HEARTBEAT):
            out.send("alive")

    def stdin() -> None:
        while sys.stdin.buffer.read(65536):
            pass
        done.set()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=beat, daemon=True, name="heartbeat").start()
    threading.Thread(target=stdin, daemon=True, name="parent watch").start()


def run(spec: BackupSpec, out: _Out) -> int:
    with_niceness(spec.niceness)
    last: list[Any] = []

    def progress(what: str, done: int, total: int) -> None:
        last[:] = [what, done, total]
        out.progress(what, done, total)

    done = create_backup(
        Path(spec.root), Path(spec.backups), virtual_server=spec.virtual_server,
        incremental=spec.incremental, storage_groups=spec.storage_groups,
        queue=None if spec.queue is None else Path(spec.queue), epoch=spec.epoch,
        progress=progress, level=spec.level, max_rate=spec.max_rate)
    if last:
        out.progress(*last, force=True)
    out.send("done", pid=os.getpid(), set=done.to_json(), path=str(done.path))
    return 0


def with_niceness(niceness: int) -> None:
    if niceness > 0:
        with contextlib.suppress(OSError):  # not allowed here: the pace keeps it gentle
            os.nice(niceness)


def main(argv: list[str]) -> int:
    parent = int(argv[argv.index("--parent-pid") + 1]) if "--parent-pid" in argv else None
    signal.signal(signal.SIGTERM, _on_term)
    out = _Out()
    try:
        if parent is not None:  # killed with its parent, even by SIGKILL
            procutil.set_parent_death_signal(signal.SIGTERM, expected_parent=parent)
        out.send("started", pid=os.getpid())
        spec = BackupSpec.from_line(sys.stdin.buffer.readline())
        _watch_parent(out)
        return run(spec, out)
    except Stopped:
        out.send("failed", error="the backup was stopped")
        return STOPPED
    except (StoreError, OSError, ValueError) as exc:
        out.send("failed", error=str(exc) or repr(exc))
        return 1
    except Exception as exc:  # a message for the request, never a traceback
        out.send("failed", error=f"internal error in the backup process: {exc!r}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
