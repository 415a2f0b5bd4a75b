"""Framing of transaction-log records and segment files.

A database's log is a directory of segment files named after the first transaction they
hold (``00000000000000000042.log``). A segment starts with a small header (magic, format
version, database id) and holds records back to back::

    magic "CMLR" | kind u8 | version u8 | reserved u16 | database id (16 bytes)
    | txn u64 | prev_txn u64 | time f64 | page_size u32 | WAL salts (8) | first frame u32
    | end frame u32 | payload length u64 | CRC-32 of all of the above and the payload
    | payload

``txn`` is the database's transaction number after the record (``meta.log_txn``, counted by
every logged write transaction), ``prev_txn`` the one before: consecutive records chain, so a
missing one is seen. A record that is short or whose CRC does not match ends the log: it is a
write torn by a crash, never acknowledged (the writer answers only after the record's fsync).
"""

from __future__ import annotations

import enum
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RECORD_MAGIC = b"CMLR"
SEGMENT_MAGIC = b"CMLOGSEG"
VERSION = 1
_HEAD = struct.Struct(">4sBBH16sQQdI8sIIQ")
_CRC = struct.Struct(">I")
HEADER_SIZE = _HEAD.size + _CRC.size
_SEGMENT = struct.Struct(">8sI16s")
SEGMENT_HEADER_SIZE = _SEGMENT.size
SEGMENT_SUFFIX = ".log"


class Kind(enum.IntEnum):
    #: WAL frames of one or more committed transactions (``prev_txn + 1 .. txn``).
    FRAMES = 1
    #: The whole database file at ``txn`` (a new database: the log can rebuild it alone).
    BASE = 2
    #: The log does not hold the changes up to ``txn`` (they were lost before being logged,
    #: or a restore went back in time): roll-forward cannot cross it; from a copy of the
    #: database at ``txn`` or later it goes on.
    GAP = 3


class LogFormatError(Exception):
    """A segment that is not a transaction-log segment of the expected database."""


@dataclass(frozen=True, slots=True)
class Record:
    kind: Kind
    db_id: bytes
    txn: int
    prev_txn: int
    time: float
    page_size: int = 0
    salts: bytes = b"\0" * 8
    first_frame: int = 0
    end_frame: int = 0
    payload: bytes = b""

    def encode(self) -> bytes:
        head = _HEAD.pack(
            RECORD_MAGIC, self.kind, VERSION, 0, self.db_id, self.txn, self.prev_txn,
            self.time, self.page_size, self.salts, self.first_frame, self.end_frame,
            len(self.payload),
        )
        crc = zlib.crc32(self.payload, zlib.crc32(head))
        return head + _CRC.pack(crc) + self.payload


@dataclass(frozen=True, slots=True)
class Located:
    """A record's header fields and where its payload is in the segment."""

    record: Record  # payload left empty when scanned without payloads
    offset: int  # of the record
    end: int  # offset after it


def segment_name(first_txn: int) -> str:
    return f"{first_txn:020d}{SEGMENT_SUFFIX}"


def segment_header(db_id: bytes) -> bytes:
    return _SEGMENT.pack(SEGMENT_MAGIC, VERSION, db_id)


def segments(directory: Path) -> list[Path]:
    """The segment files of a log directory, oldest first."""
    try:
        names = sorted(
            p for p in os.listdir(directory)
            if p.endswith(SEGMENT_SUFFIX) and p[: -len(SEGMENT_SUFFIX)].isdigit()
        )
    except FileNotFoundError:
        return []
    return [directory / n for n in names]


def check_segment(fd: int, path: Path, db_id: bytes | None) -> bytes | None:
    """The database id of a segment; None for a segment whose header is torn (empty)."""
    data = os.pread(fd, SEGMENT_HEADER_SIZE, 0)
    if len(data) < SEGMENT_HEADER_SIZE:
        return None
    magic, version, seg_id = _SEGMENT.unpack(data)
    if magic != SEGMENT_MAGIC:
        raise LogFormatError(f"{path}: not a transaction-log segment")
    if version != VERSION:
        raise LogFormatError(f"{path}: log format version {version}, this program reads {VERSION}")
    if db_id is not None and seg_id != db_id:
        raise LogFormatError(
            f"{path}: the log of database {seg_id.hex()}, not of {db_id.hex()}"
        )
    return bytes(seg_id)


def scan(fd: int, start: int, *, payloads: bool) -> Iterator[Located]:
    """Records from ``start`` to the first torn or foreign one (or the end of the file)."""
    size = os.fstat(fd).st_size
    offset = start
    while offset + HEADER_SIZE <= size:
        head = os.pread(fd, HEADER_SIZE, offset)
        if len(head) < HEADER_SIZE:
            return
        fields = _HEAD.unpack_from(head)
        (magic, kind, version, _r, db_id, txn, prev, when, page_size, salts, first, end,
         length) = fields
        if magic != RECORD_MAGIC or version != VERSION or kind not in Kind._value2member_map_:
            return
        stop = offset + HEADER_SIZE + length
        if stop > size:
            return  # torn: the payload was not all written
        (crc,) = _CRC.unpack_from(head, _HEAD.size)
        payload = os.pread(fd, length, offset + HEADER_SIZE) if length else b""
        if len(payload) != length or zlib.crc32(payload, zlib.crc32(head[: _HEAD.size])) != crc:
            return
        record = Record(Kind(kind), bytes(db_id), txn, prev, when, page_size, bytes(salts),
                        first, end, payload if payloads else b"")
        yield Located(record, offset, stop)
        offset = stop


def read_segment(path: Path, db_id: bytes | None, *, payloads: bool = True) -> Iterator[Located]:
    fd = os.open(path, os.O_RDONLY)
    try:
        if check_segment(fd, path, db_id) is None:
            return
        yield from scan(fd, SEGMENT_HEADER_SIZE, payloads=payloads)
    finally:
        os.close(fd)
