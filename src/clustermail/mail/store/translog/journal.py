"""The writer's side of the transaction log: after each commit, copy the WAL frames that the
commit appended into the database's log and fsync it, before the callers are answered.

Every logged write transaction also counts itself in the database (``meta.log_txn``), so
the database knows the number of its last committed change and the log's records chain by
it: whether the log holds every change up to the file's state is a comparison of two
numbers, at each commit and at each mount.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from clustermail.mail.store.translog import files, wal
from clustermail.mail.store.translog.errors import DatabaseBehindLogError, LogError
from clustermail.mail.store.translog.log import DatabaseLog
from clustermail.mail.store.translog.records import Kind, Record

log = logging.getLogger(__name__)

TXN_KEY = "log_txn"
ID_KEY = "database_id"


def database_txn(conn: sqlite3.Connection) -> int:
    """The number of the last logged transaction committed to the database (0: none)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (TXN_KEY,)).fetchone()
    return 0 if row is None else int(row[0])


def database_id(conn: sqlite3.Connection) -> bytes | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (ID_KEY,)).fetchone()
    return None if row is None else bytes.fromhex(str(row[0]))


class Journal:
    """Binds one mounted database (its WAL files) to its log."""

    def __init__(self, dblog: DatabaseLog, database: Path, clock_time: float = 0.0) -> None:
        self.log = dblog
        self.database = database
        self._wal_fd: int | None = None
        self._shm_fd: int | None = None
        self._txn: int | None = None

    def open_files(self) -> None:
        """Open the WAL and its index (they exist once a connection has read the file).
        The descriptors are shared and never closed (see ``files``)."""
        try:
            self._wal_fd = files.open_shared(wal.wal_path(self.database))
            self._shm_fd = files.open_shared(wal.shm_path(self.database))
        except OSError as exc:
            raise LogError(f"cannot open the WAL of {self.database}: {exc}") from None

    def close(self) -> None:
        self._wal_fd = self._shm_fd = None
        self.log.close()

    # ------------------------------------------------------------------ per transaction

    def acquire(self) -> None:
        self.log.lock()

    def release(self) -> None:
        self._txn = None
        self.log.unlock()

    def stamp(self, conn: sqlite3.Connection) -> int:
        """Count this transaction (inside it, just before COMMIT)."""
        row = conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, 1) ON CONFLICT (key) DO UPDATE "
            "SET value = CAST(value AS INTEGER) + 1 RETURNING value",
            (TXN_KEY,),
        ).fetchone()
        self._txn = int(row[0])
        return self._txn

    def ship(self, now: float, *, sync: bool = True) -> None:
        """After COMMIT, under the lock: append the new committed frames, fsynced unless
        ``sync`` is false (a flag change: fsynced by the next durable commit, :meth:`flush`,
        before the WAL can restart, or when a reader locks the log)."""
        if self._txn is None:
            raise LogError("ship without a counted transaction")
        self._ship_upto(self._txn, now, sync)
        if sync:
            self.log.sync()  # earlier unsynced records, when this commit logged nothing

    @property
    def unsynced(self) -> bool:
        """Records of this process are in the log but not yet fsynced."""
        return self.log.unsynced

    def before_write(self) -> None:
        """Inside the write transaction, before its first write, under the lock: when the
        WAL is wholly checkpointed, this transaction restarts it over frames whose records
        may not be fsynced yet; fsync them first, else a power cut could leave the file
        with changes (checkpointed and fsynced) that its log lost."""
        if not self.log.unsynced:
            return
        if self._shm_fd is None:
            self.open_files()
        assert self._shm_fd is not None
        try:
            index = wal.read_index(self._shm_fd)
        except (OSError, wal.WalFormatError) as exc:
            raise LogError(f"cannot read the WAL index of {self.database}: {exc}") from None
        if index is None or index.backfilled >= index.max_frame:
            self.log.sync()

    def flush(self) -> None:
        """Fsync what was logged unsynced (the writer, when idle or when it is due)."""
        self.log.lock()
        try:
            self.log.sync()
        finally:
            self.log.unlock()

    # ------------------------------------------------------------------ shipping

    def _ship_upto(self, txn: int, now: float, sync: bool = True) -> None:
        if self._wal_fd is None or self._shm_fd is None:
            self.open_files()
        assert self._wal_fd is not None and self._shm_fd is not None
        try:
            index = wal.read_index(self._shm_fd)
            tail = self.log.tail
            if index is None:
                data, commits, first = b"", 0, 1
            else:
                same = index.salts == tail.salts and tail.end_frame <= index.max_frame
                first = tail.end_frame + 1 if same else 1  # else the WAL restarted
                data, commits = wal.read_frames(self._wal_fd, first, index.max_frame, index)
        except (OSError, wal.WalFormatError) as exc:
            raise LogError(f"cannot read the WAL of {self.database}: {exc}") from None
        records: list[Record] = []
        db_id = self.log.db_id
        prev = tail.txn
        if prev is None or commits < txn - prev:
            # Fewer commits in the WAL than counted changes: some were checkpointed away
            # before being logged. More is fine: another program's uncounted commits,
            # logged with ours so that the log stays page-for-page true to the file.
            start = txn - commits
            if prev is not None and start < prev:
                raise LogError(
                    f"{self.database}: the database is at change {txn} but its log already "
                    f"holds changes up to {prev}"
                )
            if prev is not None:
                log.warning(
                    "%s: changes %d..%d were committed but never logged (lost from the WAL): "
                    "roll-forward stops there until the next full backup",
                    self.database, prev + 1, start,
                )
            records.append(Record(Kind.GAP, db_id, start, start if prev is None else prev, now))
            prev = start
        if commits:
            assert index is not None
            records.append(Record(
                Kind.FRAMES, db_id, txn, prev, now, index.page_size, index.salts, first,
                index.max_frame, data,
            ))
        if records:
            self.log.append(*records, sync=sync)

    def catch_up(self, conn: sqlite3.Connection, now: float) -> int:
        """At mount, under the lock: log what the database committed that its log lacks
        (a process killed between its commit and its log write); an empty log starts with
        a GAP at the database's present state. Returns the database's transaction number.
        DatabaseBehindLogError if the file is older than its log."""
        txn = database_txn(conn)
        tail = self.log.tail
        if tail.txn is None:
            self.start(txn, now)
        elif tail.txn > txn:
            raise DatabaseBehindLogError(self.database, self.log.db_id, txn, tail.txn)
        else:  # also when equal: another program may have written without counting
            self._ship_upto(txn, now)
        return txn

    def start(self, txn: int, now: float) -> None:
        """A GAP record at the database's present state: the log (re)starts here, every frame
        now in the WAL being part of that state."""
        self.open_files()
        assert self._shm_fd is not None
        try:
            index = wal.read_index(self._shm_fd)
        except (OSError, wal.WalFormatError) as exc:
            raise LogError(f"cannot read the WAL index of {self.database}: {exc}") from None
        salts, end = (index.salts, index.max_frame) if index is not None else (b"\0" * 8, 0)
        prev = self.log.tail.txn
        self.log.append(Record(Kind.GAP, self.log.db_id, txn, txn if prev is None else prev,
                               now, salts=salts, end_frame=end))

    def base(self, now: float) -> None:
        """Log the whole file as the log's first record (a new, checkpointed database)."""
        try:
            fd = files.open_shared(self.database)
            data = os.pread(fd, os.fstat(fd).st_size, 0)
        except OSError as exc:
            raise LogError(f"cannot read {self.database}: {exc}") from None
        self.log.append(Record(Kind.BASE, self.log.db_id, 0, 0, now, payload=data))
