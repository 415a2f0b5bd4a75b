"""A storage group's own record of its databases, kept with its logs.

``<log path>/manifest.json`` lists each database the storage group has created: its id
(also stored in the database file), when it was created and the last change number seen
at a mount or dismount. It is what tells "never existed" (a new database: create it) from
"existed and is gone" (refuse to mount, say what to restore). It lives beside the logs, not
the database files, so losing the files does not lose the record of them.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from clustermail.fsutil import fsync_dir
from clustermail.mail.store.translog import files
from clustermail.mail.store.translog.errors import (
    DatabaseBehindLogError,
    DatabaseLostError,
    LogError,
)
from clustermail.mail.store.translog.journal import (
    ID_KEY,
    TXN_KEY,
    Journal,
    database_id,
    database_txn,
)
from clustermail.mail.store.translog.log import DatabaseLog

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True, slots=True)
class DatabaseEntry:
    name: str
    id: str  # hex
    created: float
    txn: int  # last change number seen at a mount or dismount
    updated: float


class StorageGroupLogs:
    """The log directory of one storage group: its manifest and one log per database."""

    def __init__(self, directory: Path, storage_group: str, *, sync: bool = True) -> None:
        self.directory = directory
        self.storage_group = storage_group
        self.sync = sync

    def log_dir(self, database: str) -> Path:
        return self.directory / database

    def open_log(self, database: str, db_id: bytes) -> DatabaseLog:
        return DatabaseLog(self.log_dir(database), db_id, sync=self.sync)

    # ------------------------------------------------------------------ the manifest

    def entries(self) -> dict[str, DatabaseEntry]:
        path = self.directory / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise LogError(f"{path}: unreadable storage group manifest ({exc})") from None
        try:
            if data.get("version") != MANIFEST_VERSION:
                raise ValueError(f'expected "version": {MANIFEST_VERSION}')
            return {name: DatabaseEntry(name=name, **fields)
                    for name, fields in data["databases"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LogError(f"{path}: unreadable storage group manifest ({exc})") from None

    def entry(self, database: str) -> DatabaseEntry | None:
        return self.entries().get(database)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / "manifest.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def update(self, change: Callable[[dict[str, DatabaseEntry]], None]) -> None:
        """Read, change and atomically rewrite the manifest under its lock."""
        with self._locked():
            entries = self.entries()
            change(entries)
            doc = {
                "version": MANIFEST_VERSION,
                "storage_group": self.storage_group,
                "databases": {
                    name: {k: v for k, v in asdict(e).items() if k != "name"}
                    for name, e in sorted(entries.items())
                },
            }
            path = self.directory / MANIFEST
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(json.dumps(doc, indent=2) + "\n")
                f.flush()
                if self.sync:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
            if self.sync:
                fsync_dir(self.directory)

    def record(self, database: str, db_id: bytes, txn: int) -> None:
        now = time.time()

        def change(entries: dict[str, DatabaseEntry]) -> None:
            old = entries.get(database)
            created = old.created if old is not None and old.id == db_id.hex() else now
            entries[database] = DatabaseEntry(database, db_id.hex(), created, txn, now)

        self.update(change)

    def forget(self, database: str) -> None:
        def change(entries: dict[str, DatabaseEntry]) -> None:
            entries.pop(database, None)

        self.update(change)

    # ------------------------------------------------------------------ at mount

    def check_file(self, database: str, path: Path) -> DatabaseEntry | None:
        """Before a database file is opened: DatabaseLostError if the manifest records it
        and the file is gone. Returns the entry (None: the storage group never had it)."""
        entry = self.entry(database)
        if entry is not None and not path.exists():
            raise DatabaseLostError(
                self.storage_group, database, path, "is missing",
                f"database {entry.id} (created {_when(entry.created)}, last logged change "
                f"{self._last_txn(database, entry)})",
            )
        return entry

    def _last_txn(self, database: str, entry: DatabaseEntry) -> int:
        last = entry.txn
        try:
            from clustermail.mail.store.translog.log import read_records

            for record in read_records(self.log_dir(database), bytes.fromhex(entry.id),
                                       entry.txn, payloads=False):
                last = record.txn
        except (OSError, LogError, ValueError):
            pass
        return last

    def open_journal(
        self, conn: sqlite3.Connection, database: str, path: Path, *, new: bool,
        entry: DatabaseEntry | None,
    ) -> tuple[Journal, bool]:
        """The journal of a database just opened for mounting, its log brought up to date
        with the file (a new database's log starts with the whole file). Returns the
        journal and whether the mount transaction must still store the database id."""
        found = database_id(conn)
        if entry is not None and found is not None and found.hex() != entry.id:
            raise DatabaseLostError(
                self.storage_group, database, path,
                f"holds another database ({found.hex()})", f"database {entry.id}",
            )
        if found is None and entry is not None and not new:
            raise DatabaseLostError(
                self.storage_group, database, path, "has no database id",
                f"database {entry.id}",
            )
        db_id = found or (bytes.fromhex(entry.id) if entry is not None else uuid.uuid4().bytes)
        files.prune()
        journal = Journal(self.open_log(database, db_id), path)
        now = time.time()
        try:
            journal.open_files()
            journal.acquire()
            try:
                if new:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                 (ID_KEY, db_id.hex()))
                    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, 0)",
                                 (TXN_KEY,))
                    conn.execute("COMMIT")
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                    if journal.log.tail.txn is not None:
                        journal.release()  # the log of an earlier file of that name
                        journal.close()
                        _set_aside(self.log_dir(database), "orphaned")
                        journal = Journal(self.open_log(database, db_id), path)
                        journal.open_files()
                        journal.acquire()
                    journal.base(now)
                    txn = 0
                else:
                    txn = journal.catch_up(conn, now)
            finally:
                journal.release()
            self.record(database, db_id, txn)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            journal.close()
            raise
        return journal, found is None and not new


def roll_forward(logs: StorageGroupLogs, database: str, behind: DatabaseBehindLogError) -> int:
    """Bring a dismounted file that is behind its log up to the log's end (no connection
    may be open on it: the WAL must be folded in and gone). Returns the new change number."""
    from clustermail.mail.store.translog.log import read_records
    from clustermail.mail.store.translog.replay import replay

    dblog = logs.open_log(database, behind.db_id)
    try:
        with dblog:
            report = replay(behind.path, read_records(dblog.directory, behind.db_id,
                                                      behind.txn),
                            start_txn=behind.txn, db_id=behind.db_id)
    finally:
        dblog.close()
    if report.txn != behind.logged:
        raise LogError(f"{behind}, and the log cannot bring it forward "
                       f"({report.stopped}): restore it from a backup")
    log.warning("%s: rolled forward from change %d to %d with its log", behind.path,
                behind.txn, report.txn)
    return report.txn or 0


def _set_aside(directory: Path, why: str) -> Path:
    """Rename a log directory out of the way (never deleted: it is evidence)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = directory.with_name(f"{directory.name}.{why}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = directory.with_name(f"{directory.name}.{why}-{stamp}-{n}")
    os.rename(directory, target)
    fsync_dir(directory.parent)
    return target


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def store_id(conn: sqlite3.Connection, db_id: bytes) -> None:
    """Inside the (logged) mount transaction of a database that had no id yet."""
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (ID_KEY, db_id.hex()))


__all__ = ["DatabaseEntry", "StorageGroupLogs", "database_txn", "roll_forward", "set_aside",
           "store_id"]
set_aside = _set_aside
