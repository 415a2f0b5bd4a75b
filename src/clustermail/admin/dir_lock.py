"""Who uses a data directory: flock lock files that name their holder.

`clustermail up` holds ``DATA/up.lock`` and every node agent holds
``DATA/run/NODE.lock`` for as long as it runs. The kernel drops a lock with its
holder, whatever kills it, so a lock that is held always means a live process;
the file's content says which (``PID what``), so the message that refuses a
second start can say what to stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

UP_LOCK = "up.lock"
NODE_LOCKS = "run"
#: Tries to take a lock before calling it held.
ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Holder:
    """The live process holding a lock: its PID (0 if unknown) and what it is."""

    pid: int
    what: str


class LockHeld(Exception):
    def __init__(self, path: Path, holder: Holder) -> None:
        super().__init__(f"{path} is held by {holder.what} (pid {holder.pid})")
        self.path = path
        self.holder = holder


def up_lock_path(data_dir: Path) -> Path:
    return data_dir / UP_LOCK


def node_lock_path(data_dir: Path, node: str) -> Path:
    return data_dir / NODE_LOCKS / f"{node}.lock"


class DirLock:
    """An exclusive flock on ``path``, held until :meth:`release` or the process ends.

    The file descriptor is close-on-exec, so the processes we start do not
    inherit the lock and keep it after we are gone."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> DirLock:
        """Takes the lock or raises :class:`LockHeld` naming its holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            for attempt in range(ATTEMPTS):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    # Perhaps only a reader's brief shared lock (see holder()).
                    if attempt == ATTEMPTS - 1:
                        raise LockHeld(self.path, _holder_of(self.path)
                                       or Holder(0, "another process")) from None
                    time.sleep(0.02)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.what}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(path: Path) -> Holder | None:
    """The live holder of the lock at ``path``, or None if nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder_of(path) or Holder(0, "another process")
        return None  # we could lock it, so nobody holds it
    finally:
        os.close(fd)  # also drops our shared lock


def node_holders(data_dir: Path) -> dict[str, Holder]:
    """The node agents running on ``data_dir`` now: node name → holder."""
    found: dict[str, Holder] = {}
    folder = data_dir / NODE_LOCKS
    with contextlib.suppress(OSError):
        for path in sorted(folder.glob("*.lock")):
            held = holder(path)
            if held is not None:
                found[path.stem] = held
    return found


def _holder_of(path: Path) -> Holder | None:
    """What the file says of its holder; if it says nothing yet (the holder has
    just locked it), the PID from /proc/locks."""
    with contextlib.suppress(OSError, ValueError):
        pid_text, _, what = path.read_text().strip().partition(" ")
        if pid_text:
            return Holder(int(pid_text), what or "a process")
    pid = _pid_from_proc_locks(path)
    return Holder(pid, "a process") if pid else None


def _pid_from_proc_locks(path: Path) -> int | None:
    try:
        st = os.stat(path)
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    # "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF": device as major:minor:inode.
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == want:
            with contextlib.suppress(ValueError):
                return int(fields[4])
    return None
