"""One database's transaction log: a directory of segment files, appended under a lock.

The lock (``flock`` on ``<log>/lock``) is the database's write lock for everything that
logs: a writer holds it from before ``BEGIN IMMEDIATE`` until its record is fsynced, so
commits reach the log in commit order even with several processes writing (an admin
command beside the resource host), and nobody can restart the WAL over frames not yet
copied. The lock file also holds where the log ends (segment, offset; rewritten after each
append, not fsynced): a process that finds it different from what it knows, or a segment
longer than that, reads the records after it, and cuts off a record torn by a crash.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from clustermail.fsutil import fsync_dir
from clustermail.mail.store.translog.errors import LogError
from clustermail.mail.store.translog.records import (
    SEGMENT_HEADER_SIZE,
    Kind,
    Located,
    LogFormatError,
    Record,
    check_segment,
    read_segment,
    scan,
    segment_header,
    segment_name,
    segments,
)

SEGMENT_BYTES = 64 * 1024 * 1024
LOCK_FILE = "lock"
_STATE = struct.Struct(">QQI")  # segment's first txn, end offset, CRC-32 of both


@dataclass(frozen=True, slots=True)
class Tail:
    """Where the log ends and what its last record said."""

    segment: int | None  # first txn of the last segment (None: empty log)
    end: int  # offset after the last valid record of that segment
    txn: int | None  # the last record's txn (None: empty log)
    kind: Kind | None
    salts: bytes
    end_frame: int
    time: float


EMPTY = Tail(None, 0, None, None, b"", 0, 0.0)


def _tail_after(segment: int, located: Located) -> Tail:
    r = located.record
    return Tail(segment, located.end, r.txn, r.kind, r.salts, r.end_frame, r.time)




class DatabaseLog:
    def __init__(self, directory: Path, db_id: bytes, *, sync: bool = True) -> None:
        self.directory = directory
        self.db_id = db_id
        self._sync = sync
        self._thread_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._seg_fd: int | None = None
        self._tail = EMPTY
        self._held = False
        #: Records appended with ``sync=False`` and not yet fsynced (this process's only).
        self.unsynced = False
        self.syncs = 0  # fdatasyncs of appended records (tests count them)

    # ------------------------------------------------------------------ locking

    def lock(self) -> None:
        """Take the database's log lock (threads of this process, then other processes)
        and bring the tail up to date."""
        self._thread_lock.acquire()
        try:
            if self._lock_fd is None:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._held = True
            try:
                self._refresh()
            except BaseException:
                self.unlock()
                raise
        except BaseException:
            if not self._held:
                self._thread_lock.release()
            raise

    def unlock(self) -> None:
        if self._held:
            self._held = False
            assert self._lock_fd is not None
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            self._thread_lock.release()

    def __enter__(self) -> DatabaseLog:
        """The lock for a reader that copies records elsewhere (backups, roll-forward): the
        log is fsynced first, so that nothing read from it can be lost in a power cut after
        being copied (another process may have appended without fsync, see ``append``)."""
        self.lock()
        try:
            self.sync(always=True)
        except BaseException:
            self.unlock()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlock()

    def close(self) -> None:
        for fd in (self._seg_fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._seg_fd = self._lock_fd = None
        self._tail = EMPTY

    @property
    def tail(self) -> Tail:
        """The end of the log as of the last lock (current while the lock is held)."""
        return self._tail

    # ------------------------------------------------------------------ appending

    def append(self, *records: Record, sync: bool = True) -> None:
        """Append records durably (fsync before returning). The caller holds the lock.

        ``sync=False`` (flag changes, see the writer) leaves the fsync to the next durable
        append, :meth:`sync` or a reader's lock: the records are written in order, and a
        power cut keeps a prefix of them (a torn or missing record ends the log)."""
        if not self._held:
            raise LogError("append without the log lock")
        for record in records:
            if record.db_id != self.db_id:
                raise LogError("a record of another database")
            data = record.encode()
            tail = self._tail
            try:
                if tail.segment is None or (
                    tail.end > SEGMENT_HEADER_SIZE and tail.end + len(data) > SEGMENT_BYTES
                ):
                    self._new_segment(record.txn, data)
                    segment, end = record.txn, SEGMENT_HEADER_SIZE + len(data)
                else:
                    assert self._seg_fd is not None
                    os.pwrite(self._seg_fd, data, tail.end)
                    if self._sync and sync:
                        os.fdatasync(self._seg_fd)
                        self.syncs += 1
                        self.unsynced = False
                    elif self._sync:
                        self.unsynced = True
                    segment, end = tail.segment, tail.end + len(data)
            except OSError as exc:
                raise LogError(f"cannot write the transaction log in {self.directory}: {exc}") \
                    from None
            self._tail = Tail(segment, end, record.txn, record.kind, record.salts,
                              record.end_frame, record.time)
            self._write_state()

    def sync(self, *, always: bool = False) -> None:
        """Fsync the records appended with ``sync=False`` (``always``: whoever wrote them).
        The caller holds the lock."""
        if not self._held:
            raise LogError("sync without the log lock")
        if not (self.unsynced or always) or not self._sync or self._seg_fd is None:
            return
        try:
            os.fdatasync(self._seg_fd)
        except OSError as exc:
            raise LogError(f"cannot fsync the transaction log in {self.directory}: {exc}") \
                from None
        self.syncs += 1
        self.unsynced = False

    def _new_segment(self, first_txn: int, data: bytes) -> None:
        if self._seg_fd is not None and self._sync:
            os.fdatasync(self._seg_fd)  # records left unsynced come before the new segment's
            self.unsynced = False
        path = self.directory / segment_name(first_txn)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, segment_header(self.db_id) + data)
            if self._sync:
                os.fsync(fd)
                fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            raise
        if self._seg_fd is not None:
            os.close(self._seg_fd)
        self._seg_fd = fd

    def _write_state(self) -> None:
        assert self._lock_fd is not None
        seg = self._tail.segment or 0
        body = struct.pack(">QQ", seg, self._tail.end)
        os.pwrite(self._lock_fd, _STATE.pack(seg, self._tail.end, zlib.crc32(body)), 0)

    # ------------------------------------------------------------------ the tail

    def _read_state(self) -> tuple[int, int] | None:
        assert self._lock_fd is not None
        data = os.pread(self._lock_fd, _STATE.size, 0)
        if len(data) != _STATE.size:
            return None
        seg, end, crc = _STATE.unpack(data)
        if zlib.crc32(struct.pack(">QQ", seg, end)) != crc:
            return None
        return seg, end

    def _open_segment(self, first_txn: int) -> None:
        if self._seg_fd is not None:
            os.close(self._seg_fd)
            self._seg_fd = None
        path = self.directory / segment_name(first_txn)
        self._seg_fd = os.open(path, os.O_RDWR)
        if check_segment(self._seg_fd, path, self.db_id) is None:
            raise LogFormatError(f"{path}: torn segment header")

    def _refresh(self) -> None:
        """Bring ``_tail`` to the real end of the log (under the lock)."""
        state = self._read_state()
        tail = self._tail
        try:
            if state is not None and tail.segment == state[0] and self._seg_fd is not None:
                size = os.fstat(self._seg_fd).st_size
                if state[1] == tail.end and size == tail.end:
                    return  # nobody appended since we did
                if state[1] >= tail.end:
                    self._tail = self._scan_from(tail.segment, tail)
                    return
            self._tail = self._load()
        except (OSError, LogFormatError) as exc:
            self._tail = EMPTY
            raise LogError(f"cannot read the transaction log in {self.directory}: {exc}") \
                from None

    def _scan_from(self, segment: int, tail: Tail) -> Tail:
        """Records after ``tail`` in the open segment; a torn rest is cut off."""
        assert self._seg_fd is not None
        for located in scan(self._seg_fd, tail.end, payloads=False):
            tail = _tail_after(segment, located)
        if os.fstat(self._seg_fd).st_size > tail.end:
            os.ftruncate(self._seg_fd, tail.end)  # a record torn by a crash: never acknowledged
            if self._sync:
                os.fsync(self._seg_fd)
        return tail

    def _load(self) -> Tail:
        """The tail from the segment files alone (a new process, or a stale state)."""
        files = segments(self.directory)
        while files:
            last = files[-1]
            first_txn = int(last.name.split(".")[0])
            self._open_segment_or_drop(last, first_txn)
            if self._seg_fd is None:
                files.pop()  # a segment whose first record was torn: it never held one
                continue
            start = Tail(first_txn, SEGMENT_HEADER_SIZE, None, None, b"", 0, 0.0)
            tail = self._scan_from(first_txn, start)
            if tail.txn is None:
                os.close(self._seg_fd)
                self._seg_fd = None
                last.unlink()
                files.pop()
                continue
            return tail
        return EMPTY

    def _open_segment_or_drop(self, path: Path, first_txn: int) -> None:
        try:
            self._open_segment(first_txn)
        except LogFormatError:
            if os.path.getsize(path) >= SEGMENT_HEADER_SIZE:
                raise
            if self._seg_fd is not None:
                os.close(self._seg_fd)
                self._seg_fd = None
            path.unlink()

    # ------------------------------------------------------------------ reading

    def records(self, after: int | None = None, *, payloads: bool = True) -> Iterator[Record]:
        """Complete records in order; with ``after``, from the one that holds transaction
        ``after + 1`` on (records wholly at or before ``after`` are skipped)."""
        return read_records(self.directory, self.db_id, after, payloads=payloads)

    def truncate(self, upto_txn: int) -> list[Path]:
        """Delete the segments whose records are all at or before ``upto_txn`` (never the
        last one). The caller holds the lock; returns what it deleted."""
        if not self._held:
            raise LogError("truncate without the log lock")
        files = segments(self.directory)
        gone = []
        for this, nxt in itertools.pairwise(files):
            if int(nxt.name.split(".")[0]) <= upto_txn + 1:
                this.unlink()
                gone.append(this)
        if gone and self._sync:
            fsync_dir(self.directory)
        return gone


def read_records(
    directory: Path, db_id: bytes | None, after: int | None = None, *, payloads: bool = True
) -> Iterator[Record]:
    """The records of a log directory in order (see :meth:`DatabaseLog.records`)."""
    files = segments(directory)
    for i, path in enumerate(files):
        if (after is not None and i + 1 < len(files)
                and int(files[i + 1].name.split(".")[0]) <= after):
            continue  # every record of this segment is before ``after``
        try:
            for located in read_segment(path, db_id, payloads=payloads):
                r = located.record
                if after is None or r.txn > after or r.txn == r.prev_txn == after:
                    yield r  # (a record at after..after: uncounted commits after it)
        except FileNotFoundError:
            continue  # truncated meanwhile: its records are in a full backup
