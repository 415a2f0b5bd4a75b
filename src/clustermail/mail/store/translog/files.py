"""Raw read access to files that SQLite has open in this process (a database, its WAL and
its wal-index), without breaking SQLite's locks.

POSIX record locks belong to the process and the file: closing *any* descriptor of a file
drops every lock the process holds on it, including those of its SQLite connections. A
closed descriptor of a mounted database let another process believe it was the last user,
checkpoint and delete the WAL under the writer (writes then went to an unlinked file). So
descriptors opened here are kept for the life of the process, one per file (device, inode),
and only those of files no longer linked anywhere are closed.
"""

from __future__ import annotations

import os
import threading

_fds: dict[tuple[int, int], int] = {}
_lock = threading.Lock()


def open_shared(path: str | os.PathLike[str]) -> int:
    """A read-only descriptor of ``path`` that must never be closed by the caller."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino)
    with _lock:
        fd = _fds.get(key)
        if fd is not None:
            return fd
        fd = os.open(path, os.O_RDONLY)
        if os.fstat(fd).st_ino != st.st_ino:  # replaced between the stat and the open
            os.close(fd)  # never seen by SQLite here: no lock of ours on it
            return open_shared(path)
        _fds[key] = fd
        return fd


def prune() -> None:
    """Close the descriptors of files deleted since (SQLite holds no lock on those)."""
    with _lock:
        for key, fd in list(_fds.items()):
            try:
                gone = os.fstat(fd).st_nlink == 0
            except OSError:
                gone = True
            if gone:
                del _fds[key]
                os.close(fd)
