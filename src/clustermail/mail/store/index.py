"""The folder index: a packed copy of each message's listing columns (uid, flags, size,
modseq, internal date) in chunks of CHUNK_ENTRIES, so listing a folder reads a few hundred
blobs instead of building a Python tuple per message (100 000 rows as tuples take ~100 ms
here; the packed index takes a few ms). The ``message`` table stays the truth: every write of
those columns goes through this module too, ``check`` compares both, and ``rebuild`` derives
the index again from the table.

Chunk layout (little-endian, n entries): uids u32[n] | flags u32[n] | sizes u32[n] |
modseqs u64[n] | internal dates i64[n].
"""

from __future__ import annotations

import bisect
import enum
import sqlite3
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

CHUNK_ENTRIES = 120  # 3 360 bytes: one chunk stays inside one 4 KiB page
_CODES = ("I", "I", "I", "Q", "q")
_WIDTHS = (4, 4, 4, 8, 8)
ENTRY_BYTES = sum(_WIDTHS)
assert [array(c).itemsize for c in _CODES] == list(_WIDTHS)
_SWAP = sys.byteorder != "little"


class MessageSummary(NamedTuple):
    uid: int
    flags: int
    size: int
    modseq: int
    internaldate: int


Row = tuple[int, int, int, int, int]  # (uid, flags, size, modseq, internaldate)


class Columns:
    """Five parallel arrays: the decoded form of one chunk or of a whole folder."""

    __slots__ = ("dates", "flags", "modseqs", "sizes", "uids")

    def __init__(self, parts: Sequence[bytes | memoryview] | None = None) -> None:
        arrays = [array(code) for code in _CODES]
        if parts is not None:
            for arr, part in zip(arrays, parts, strict=True):
                arr.frombytes(part)
                if _SWAP:
                    arr.byteswap()
        self.uids, self.flags, self.sizes, self.modseqs, self.dates = arrays

    @classmethod
    def decode(cls, data: bytes) -> Columns:
        return cls(_split(memoryview(data)))

    def encode(self) -> bytes:
        out = []
        for arr in (self.uids, self.flags, self.sizes, self.modseqs, self.dates):
            if _SWAP:
                arr = array(arr.typecode, arr)
                arr.byteswap()
            out.append(arr.tobytes())
        return b"".join(out)

    def __len__(self) -> int:
        return len(self.uids)

    def append(self, row: Row) -> None:
        uid, flags, size, modseq, date = row
        self.uids.append(uid)
        self.flags.append(flags)
        self.sizes.append(size)
        self.modseqs.append(modseq)
        self.dates.append(date)

    def position(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else None

    def row(self, i: int) -> MessageSummary:
        return MessageSummary(
            self.uids[i], self.flags[i], self.sizes[i], self.modseqs[i], self.dates[i]
        )

    def delete(self, positions: Iterable[int]) -> None:
        for i in sorted(positions, reverse=True):
            for arr in (self.uids, self.flags, self.sizes, self.modseqs, self.dates):
                del arr[i]


def _split(view: memoryview) -> list[memoryview]:
    n = len(view) // ENTRY_BYTES
    parts, offset = [], 0
    for width in _WIDTHS:
        parts.append(view[offset : offset + width * n])
        offset += width * n
    return parts


class FolderListing:
    """All messages of a folder in UID order, as parallel arrays (``uids``, ``flags``,
    ``sizes``, ``modseqs``, ``dates``) plus ``keywords`` (uid → space-joined keywords, only
    for messages that have some). Indexing gives a :class:`MessageSummary`."""

    __slots__ = ("columns", "keywords")

    def __init__(self, columns: Columns, keywords: dict[int, str]) -> None:
        self.columns = columns
        self.keywords = keywords

    @property
    def uids(self) -> array[int]:
        return self.columns.uids

    @property
    def flags(self) -> array[int]:
        return self.columns.flags

    @property
    def sizes(self) -> array[int]:
        return self.columns.sizes

    @property
    def modseqs(self) -> array[int]:
        return self.columns.modseqs

    @property
    def dates(self) -> array[int]:
        return self.columns.dates

    def __len__(self) -> int:
        return len(self.columns)

    def __getitem__(self, i: int) -> MessageSummary:
        return self.columns.row(i)

    def __iter__(self) -> Iterator[MessageSummary]:
        c = self.columns
        return map(MessageSummary, c.uids, c.flags, c.sizes, c.modseqs, c.dates)

    def position(self, uid: int) -> int | None:
        """Index (sequence number - 1) of a UID, or None."""
        return self.columns.position(uid)


# --------------------------------------------------------------------------- SQL side


def load(conn: sqlite3.Connection, folder_id: int) -> FolderListing:
    blobs = conn.execute(
        "SELECT data FROM folder_chunk WHERE folder_id = ? ORDER BY first_uid", (folder_id,)
    ).fetchall()
    per_column: list[list[memoryview]] = [[], [], [], [], []]
    for (data,) in blobs:
        for column, part in zip(per_column, _split(memoryview(data)), strict=True):
            column.append(part)
    columns = Columns([b"".join(parts) for parts in per_column])
    keywords = dict(
        conn.execute(
            "SELECT uid, keywords FROM message WHERE folder_id = ? AND keywords IS NOT NULL",
            (folder_id,),
        ).fetchall()
    )
    return FolderListing(columns, keywords)


class ReadIt(enum.Enum):
    """The caller does not know the folder's last chunk: :func:`append` reads it."""

    READ_IT = 0


READ_IT = ReadIt.READ_IT
#: The folder's last chunk, (id, data), as a caller read it in the same transaction; None:
#: the folder has no chunk.
LastChunk = tuple[int, bytes] | None
#: What the last chunk of a folder is, for a caller that reads it with other columns (one
#: statement less per delivery): the id and data of the chunk with the highest first_uid.
LAST_CHUNK_JOIN = (
    "LEFT JOIN folder_chunk c ON c.id = (SELECT id FROM folder_chunk "
    "WHERE folder_id = f.id ORDER BY first_uid DESC LIMIT 1)"
)


def append(
    conn: sqlite3.Connection,
    folder_id: int,
    rows: Sequence[Row],
    last_chunk: LastChunk | ReadIt = READ_IT,
) -> None:
    """Add rows whose UIDs are above every UID in the folder (UIDs only grow).
    ``last_chunk``: the folder's last chunk if the caller read it in this transaction
    (LAST_CHUNK_JOIN), else read here."""
    if not rows:
        return
    last = (
        conn.execute(
            "SELECT id, data FROM folder_chunk WHERE folder_id = ? ORDER BY first_uid DESC "
            "LIMIT 1",
            (folder_id,),
        ).fetchone()
        if last_chunk is READ_IT
        else last_chunk
    )
    i = 0
    if last is not None and len(last[1]) // ENTRY_BYTES < CHUNK_ENTRIES:
        chunk = Columns.decode(last[1])
        while i < len(rows) and len(chunk) < CHUNK_ENTRIES:
            chunk.append(rows[i])
            i += 1
        conn.execute("UPDATE folder_chunk SET data = ? WHERE id = ?", (chunk.encode(), last[0]))
    while i < len(rows):
        chunk = Columns()
        for row in rows[i : i + CHUNK_ENTRIES]:
            chunk.append(row)
        conn.execute(
            "INSERT INTO folder_chunk (folder_id, first_uid, data) VALUES (?, ?, ?)",
            (folder_id, rows[i][0], chunk.encode()),
        )
        i += CHUNK_ENTRIES


def _chunks_for(
    conn: sqlite3.Connection, folder_id: int, uids: Sequence[int]
) -> Iterator[tuple[int, Columns, list[int]]]:
    """(chunk id, decoded chunk, the sorted uids that fall into it) for sorted ``uids``."""
    i = 0
    while i < len(uids):
        found = conn.execute(
            "SELECT id, first_uid, data FROM folder_chunk WHERE folder_id = ? AND first_uid <= ? "
            "ORDER BY first_uid DESC LIMIT 1",
            (folder_id, uids[i]),
        ).fetchone()
        if found is None:
            i += 1
            continue
        chunk = Columns.decode(found[2])
        top = chunk.uids[-1] if len(chunk) else found[1]
        j = i
        while j < len(uids) and uids[j] <= top:
            j += 1
        yield found[0], chunk, list(uids[i : max(j, i + 1)])
        i = max(j, i + 1)


class PatchedChunk(NamedTuple):
    """A chunk's bytes as :func:`update` last wrote them (its caller keeps it for the next
    one-message update of the same folder, and vouches that nothing else wrote since)."""

    folder_id: int
    chunk_id: int
    data: bytearray


def update(
    conn: sqlite3.Connection,
    folder_id: int,
    changes: dict[int, tuple[int, int]],
    last: list[PatchedChunk] | None = None,
) -> None:
    """Set (flags, modseq) of the given UIDs. ``last`` (one-message updates): holds the chunk
    the previous update wrote, to patch again without reading it when it holds the UID;
    it is replaced by the chunk this update wrote (emptied when it wrote none)."""
    if len(changes) == 1 and not _SWAP:
        [(uid, (flags, modseq))] = changes.items()
        patched = _update_one(conn, folder_id, uid, flags, modseq, last[0] if last else None)
        if last is not None:
            last[:] = [] if patched is None else [patched]
        return
    if last is not None:
        last.clear()
    for chunk_id, chunk, uids in _chunks_for(conn, folder_id, sorted(changes)):
        for uid in uids:
            pos = chunk.position(uid)
            if pos is not None:
                chunk.flags[pos], chunk.modseqs[pos] = changes[uid]
        conn.execute("UPDATE folder_chunk SET data = ? WHERE id = ?", (chunk.encode(), chunk_id))


def _update_one(
    conn: sqlite3.Connection,
    folder_id: int,
    uid: int,
    flags: int,
    modseq: int,
    last: PatchedChunk | None,
) -> PatchedChunk | None:
    """:func:`update` of one message (a STORE's usual case), patched into the chunk's bytes
    in place rather than decoded and encoded again (little-endian hosts). A UID is in one
    chunk only, so a ``last`` chunk that holds it is the one the query would find."""
    if last is not None and last.folder_id == folder_id and (
        pos := _position(last.data, uid)
    ) is not None:
        chunk_id, data = last.chunk_id, last.data
    else:
        found = _chunk_holding(conn, folder_id, uid)
        if found is None:
            return None
        chunk_id, data, pos = found
    _set_entry(data, pos, flags, modseq)
    # (sqlite3 copies a bound buffer: the bytearray itself goes, and stays ours to patch)
    conn.execute("UPDATE folder_chunk SET data = ? WHERE id = ?", (data, chunk_id))
    return PatchedChunk(folder_id, chunk_id, data)


#: One message's entry can be patched in a chunk's bytes (little-endian hosts).
PATCHES_IN_PLACE = not _SWAP


def patch(
    conn: sqlite3.Connection,
    folder_id: int,
    chunks: dict[int, bytearray],
    uid: int,
    flags: int,
    modseq: int,
) -> int | None:
    """Set one message's (flags, modseq) in ``chunks`` (chunk id → its bytes, read here
    when the UID is in none of them yet) without writing them; the chunk's id, None if
    the UID is in no chunk. The caller writes the chunks it patched, and vouches that
    nothing else wrote them meanwhile (``PATCHES_IN_PLACE`` hosts only)."""
    held = next(
        ((cid, at) for cid, data in chunks.items() if (at := _position(data, uid)) is not None),
        None,
    )
    if held is not None:
        chunk_id, pos = held
        data = chunks[chunk_id]
    else:
        found = _chunk_holding(conn, folder_id, uid)
        if found is None or found[0] in chunks:  # (in a chunk held here: it is not there)
            return None
        chunk_id, data, pos = found
        chunks[chunk_id] = data
    _set_entry(data, pos, flags, modseq)
    return chunk_id


def _chunk_holding(
    conn: sqlite3.Connection, folder_id: int, uid: int
) -> tuple[int, bytearray, int] | None:
    """(id, bytes, position) of the stored chunk holding ``uid``; None if none does."""
    found = conn.execute(
        "SELECT id, data FROM folder_chunk WHERE folder_id = ? AND first_uid <= ? "
        "ORDER BY first_uid DESC LIMIT 1",
        (folder_id, uid),
    ).fetchone()
    if found is None:
        return None
    data = bytearray(found[1])
    pos = _position(data, uid)
    return None if pos is None else (found[0], data, pos)


def _set_entry(data: bytearray, pos: int, flags: int, modseq: int) -> None:
    """One entry's flags and modseq, in a chunk's encoded bytes."""
    n = len(data) // ENTRY_BYTES
    struct.pack_into("<I", data, 4 * n + 4 * pos, flags)  # after the uids
    struct.pack_into("<Q", data, 12 * n + 8 * pos, modseq)  # after uids, flags, sizes


def _position(data: bytearray, uid: int) -> int | None:
    """Where ``uid`` is in a chunk's encoded bytes, if it is there."""
    n = len(data) // ENTRY_BYTES
    with memoryview(data) as view, view[: 4 * n].cast("I") as uids:
        pos = bisect.bisect_left(uids, uid)
        return pos if pos < n and uids[pos] == uid else None


def remove(conn: sqlite3.Connection, folder_id: int, uids: Iterable[int]) -> None:
    for chunk_id, chunk, inside in _chunks_for(conn, folder_id, sorted(uids)):
        chunk.delete(p for p in map(chunk.position, inside) if p is not None)
        if len(chunk):
            conn.execute(
                "UPDATE folder_chunk SET data = ? WHERE id = ?", (chunk.encode(), chunk_id)
            )
        else:
            conn.execute("DELETE FROM folder_chunk WHERE id = ?", (chunk_id,))


def rebuild(conn: sqlite3.Connection, folder_id: int) -> None:
    conn.execute("DELETE FROM folder_chunk WHERE folder_id = ?", (folder_id,))
    rows = conn.execute(
        "SELECT uid, flags, size, modseq, internaldate FROM message WHERE folder_id = ? ORDER BY "
        "uid",
        (folder_id,),
    ).fetchall()
    append(conn, folder_id, rows)


def load_after(conn: sqlite3.Connection, folder_id: int, uid: int) -> Columns:
    """The entries with UIDs above ``uid``: the chunk holding ``uid`` and those after it."""
    blobs = conn.execute(
        "SELECT data FROM folder_chunk WHERE folder_id = ? AND first_uid >= coalesce("
        "(SELECT max(first_uid) FROM folder_chunk WHERE folder_id = ? AND first_uid <= ?), 0) "
        "ORDER BY first_uid",
        (folder_id, folder_id, uid),
    ).fetchall()
    out = Columns()
    for (data,) in blobs:
        chunk = Columns.decode(data)
        start = bisect.bisect_right(chunk.uids, uid)
        for i in range(start, len(chunk)):
            out.append(chunk.row(i))
    return out
