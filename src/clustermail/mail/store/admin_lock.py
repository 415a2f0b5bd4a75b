"""The mail store's admin lock: a running mail_store resource and an administrator's
offline operation (a restore or reset run by `clustermail` beside an offline virtual
server) never use one disk at the same time.

The resource holds a shared ``flock`` on ``<root>/_admin.lock`` for as long as it is
online; the command takes it exclusively, without waiting, for the length of its work. The
kernel drops a lock with its process, so a killed command or resource host never leaves
the disk locked. (``flock`` is trusted on a local file system only — the disk of a virtual
server is mounted on one machine at a time.)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from clustermail.mail.store.errors import StoreError

LOCK_FILE = "_admin.lock"


class StoreBusyError(StoreError):
    """The other side holds the mail store's admin lock."""


def _open(root: Path) -> int:
    root.mkdir(parents=True, exist_ok=True)
    return os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 200).decode(errors="replace").strip()
    except OSError:
        return ""


def hold_shared(root: Path) -> int:
    """For the mail_store resource: a descriptor holding the shared lock (close it to
    release); StoreBusyError while an administrator's command holds it."""
    fd = _open(root)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _holder(fd)
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        raise StoreBusyError(
            f"{root}: an administrator's command works on this mail store"
            + (f" ({holder})" if holder else "") + "; it mounts when that is done") from None
    return fd


@contextlib.contextmanager
def exclusive(root: Path, holder: str) -> Iterator[None]:
    """For an admin command on an offline virtual server's disk; StoreBusyError while a
    mail_store resource has the store online."""
    fd = _open(root)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise StoreBusyError(
                f"{root}: the mail store is online in a running virtual server (or another "
                "command works on it)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


__all__ = ["LOCK_FILE", "StoreBusyError", "exclusive", "hold_shared"]
