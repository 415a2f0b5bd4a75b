"""Reading SQLite's write-ahead log of a database in WAL mode (https://sqlite.org/walformat.html).

The transaction log copies the frames each commit appended to the WAL. Where the committed
frames end is read from the wal-index header in the ``-shm`` file (``mxFrame``, kept by SQLite
for every connection, valid once a commit has returned), not guessed from the WAL file: frames
beyond it may be left over from a rolled-back or torn transaction. The header has two copies
that a writer updates one after the other; a read is trusted only when both agree.

Applying frames to a database file is what a checkpoint does: each page image is written at
``(pgno - 1) * page_size`` and a commit frame truncates the file to its database size.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

WAL_HEADER = 32
FRAME_HEADER = 24
_SHM_HEADER = struct.Struct("=IIIBBHII8s8s8s")  # one WalIndexHdr (48 bytes), native order
_FRAME = struct.Struct(">II8s")  # pgno, database size in pages after a commit (else 0), salts


class WalFormatError(Exception):
    """The WAL or its index does not say what the transaction log expects."""


@dataclass(frozen=True, slots=True)
class WalIndex:
    """The committed end of the WAL as the wal-index header records it."""

    salts: bytes  # 8 bytes as in the WAL header: they change when the WAL restarts
    max_frame: int  # frames 1..max_frame are committed
    page_size: int
    db_pages: int
    #: Frames already copied into the database file (nBackfill). When it reaches
    #: ``max_frame`` a new reader may read the file alone and a writer may restart the WAL.
    backfilled: int = 0


def wal_path(database: str | os.PathLike[str]) -> str:
    return os.fspath(database) + "-wal"


def shm_path(database: str | os.PathLike[str]) -> str:
    return os.fspath(database) + "-shm"


def read_index(shm_fd: int, attempts: int = 100) -> WalIndex | None:
    """The wal-index header, or None when the index is not initialised (no WAL yet)."""
    for _ in range(attempts):
        data = os.pread(shm_fd, 2 * _SHM_HEADER.size + 4, 0)
        if len(data) < 2 * _SHM_HEADER.size + 4:
            return None
        first, second = data[: _SHM_HEADER.size], data[_SHM_HEADER.size : 2 * _SHM_HEADER.size]
        (backfilled,) = struct.unpack_from("=I", data, 2 * _SHM_HEADER.size)
        if first != second:
            continue  # a writer is between the two copies: read again
        _version, _unused, _change, is_init, _big, size, max_frame, pages, _ck, salts, _ = (
            _SHM_HEADER.unpack(first)
        )
        if not is_init:
            return None
        return WalIndex(salts, max_frame, 65536 if size == 1 else size, pages, backfilled)
    raise WalFormatError("the wal-index header kept changing while it was read")


def frame_offset(frame: int, page_size: int) -> int:
    """Offset of frame ``frame`` (1-based) in the WAL file."""
    return WAL_HEADER + (frame - 1) * (FRAME_HEADER + page_size)


def read_frames(wal_fd: int, first: int, last: int, index: WalIndex) -> tuple[bytes, int]:
    """The raw frames ``first..last`` (headers included) and how many of them are commit
    frames. Every frame must carry the index's salts and the last one must end a commit."""
    if last < first:
        return b"", 0
    size = FRAME_HEADER + index.page_size
    length = (last - first + 1) * size
    data = os.pread(wal_fd, length, frame_offset(first, index.page_size))
    if len(data) != length:
        raise WalFormatError(
            f"the WAL is shorter than its index says (frames {first}..{last} wanted)"
        )
    commits = 0
    db_pages = 0
    for offset in range(0, length, size):
        _pgno, db_pages, salts = _FRAME.unpack_from(data, offset)
        if salts != index.salts:
            raise WalFormatError(f"frame {first + offset // size} has other salts than the WAL")
        commits += db_pages != 0
    if db_pages == 0:
        raise WalFormatError(f"frame {last} does not end a transaction")
    return data, commits


def iter_frames(data: bytes, page_size: int) -> Iterator[tuple[int, int, memoryview]]:
    """(pgno, database pages after the commit or 0, page image) of raw frames."""
    size = FRAME_HEADER + page_size
    view = memoryview(data)
    if len(data) % size:
        raise WalFormatError(f"{len(data)} bytes are not whole frames of {page_size}-byte pages")
    for offset in range(0, len(data), size):
        pgno, db_pages, _salts = _FRAME.unpack_from(data, offset)
        yield pgno, db_pages, view[offset + FRAME_HEADER : offset + size]


def apply_frames(fd: int, data: bytes, page_size: int) -> int:
    """Write the frames' pages into a database file (as a checkpoint does); returns the
    database size in pages after the last commit. The caller fsyncs."""
    pages = 0
    for pgno, db_pages, page in iter_frames(data, page_size):
        if pgno < 1:
            raise WalFormatError(f"frame for page {pgno}")
        os.pwrite(fd, page, (pgno - 1) * page_size)
        if db_pages:
            os.ftruncate(fd, db_pages * page_size)
            pages = db_pages
    return pages
