"""A consistent copy of a database while it serves.

One read transaction pins a state of the database: SQLite keeps every page of that state
either in the database file or in the WAL frames up to the transaction's mark, and a
checkpoint never writes past a reader's mark. (When every frame is already in the file,
the reader reads the file alone, a checkpoint cannot write to it, and the WAL is not read:
a writer may restart it meanwhile.) The copy reads the file in page order and
takes each page from the newest WAL frame at or below the mark when there is one — what a
reader would see — so writers keep committing meanwhile (WAL readers block nobody).

For a logged database the read transaction starts under its log lock: no logged commit is
then between its COMMIT and its log record, so the database's own change counter read in
that transaction is exactly the log position the copy corresponds to.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from clustermail.mail.store.errors import StoreError
from clustermail.mail.store.translog import files, wal
from clustermail.mail.store.translog.journal import database_id, database_txn
from clustermail.mail.store.translog.log import DatabaseLog

CHUNK_PAGES = 256
Progress = Callable[[int], None]  # bytes copied since the last call


class SnapshotError(StoreError):
    """A database could not be copied consistently."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    size: int  # bytes of the database image
    sha256: str  # of the image
    txn: int  # the database's change counter in the image (0 for unlogged files)
    db_id: bytes | None
    highest_modseq: int | None


def open_readonly(path: Path) -> sqlite3.Connection:
    """A connection that cannot checkpoint (read-only): closing it never folds WAL frames
    the log has not copied yet into the file."""
    if not path.exists():
        raise SnapshotError(f"{path}: no such database file")
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False, timeout=10.0)
    except sqlite3.Error as exc:
        raise SnapshotError(f"cannot open {path}: {exc}") from None


def _wal_pages(path: Path, index: wal.WalIndex) -> dict[int, int]:
    """pgno -> offset of the newest frame at or below the index's mark."""
    newest: dict[int, int] = {}
    if index.max_frame == 0:
        return newest
    fd = files.open_shared(wal.wal_path(path))
    frame = wal.FRAME_HEADER + index.page_size
    step = max(1, (4 << 20) // frame)  # frames per read: the WAL is read in 4 MiB pieces
    for low in range(1, index.max_frame + 1, step):
        high = min(index.max_frame, low + step - 1)
        base = wal.frame_offset(low, index.page_size)
        data = os.pread(fd, (high - low + 1) * frame, base)
        for k in range(high - low + 1):
            head = data[k * frame : k * frame + wal.FRAME_HEADER]
            if len(head) < wal.FRAME_HEADER or head[8:16] != index.salts:
                raise SnapshotError(
                    f"{path}: WAL frame {low + k} is not the one its index describes")
            newest[struct.unpack_from(">I", head)[0]] = base + k * frame + wal.FRAME_HEADER
    return newest


def take(
    path: Path, out: IO[bytes], *, dblog: DatabaseLog | None = None,
    progress: Progress | None = None, modseq: bool = True,
) -> Snapshot:
    """Write a consistent image of the database at ``path`` to ``out``."""
    conn = open_readonly(path)
    try:
        with dblog if dblog is not None else nullcontext():
            conn.execute("BEGIN")
            try:
                conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # pins the state
                index = wal.read_index(files.open_shared(wal.shm_path(path)))
            except (sqlite3.Error, OSError, wal.WalFormatError) as exc:
                raise SnapshotError(f"cannot read {path}: {exc}") from None
        try:
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_schema WHERE name = 'meta'").fetchone() is not None
            txn = database_txn(conn) if has_meta else 0
            db_id = database_id(conn) if has_meta else None
            top = None
            if modseq and has_meta:
                top = int(conn.execute(
                    "SELECT coalesce(max(highestmodseq), 0) FROM folder").fetchone()[0])
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            return _copy(path, out, index, page_size, txn, db_id, top, progress)
        except sqlite3.Error as exc:
            raise SnapshotError(f"cannot read {path}: {exc}") from None
        finally:
            conn.execute("COMMIT")
    finally:
        conn.close()


def _copy(
    path: Path, out: IO[bytes], index: wal.WalIndex | None, page_size: int, txn: int,
    db_id: bytes | None, top: int | None, progress: Progress | None,
) -> Snapshot:
    db_fd = files.open_shared(path)
    if index is not None and index.max_frame > index.backfilled:
        if index.page_size != page_size:
            raise SnapshotError(f"{path}: page size {page_size}, WAL says {index.page_size}")
        pages = index.db_pages
        newest = _wal_pages(path, index)
        wal_fd = files.open_shared(wal.wal_path(path))
    else:  # everything is in the file (the WAL may restart under a reader of the file)
        size = os.fstat(db_fd).st_size // page_size
        pages = index.db_pages if index is not None and index.max_frame else size
        newest, wal_fd = {}, -1
    digest = hashlib.sha256()
    overlay = sorted(p for p in newest if p <= pages)
    i = 0
    for first in range(1, pages + 1, CHUNK_PAGES):
        last = min(pages, first + CHUNK_PAGES - 1)
        chunk = bytearray(os.pread(db_fd, (last - first + 1) * page_size,
                                   (first - 1) * page_size))
        chunk.extend(b"\0" * ((last - first + 1) * page_size - len(chunk)))
        while i < len(overlay) and overlay[i] <= last:
            pgno = overlay[i]
            start = (pgno - first) * page_size
            chunk[start : start + page_size] = os.pread(wal_fd, page_size, newest[pgno])
            i += 1
        out.write(chunk)
        digest.update(chunk)
        if progress is not None:
            progress(len(chunk))
    return Snapshot(pages * page_size, digest.hexdigest(), txn, db_id, top)
