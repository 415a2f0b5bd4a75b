"""Single-instance storage of message bytes: one ``body`` row per distinct message per
database (keyed by SHA-256), shared by every copy through a reference count."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from clustermail.mail.store import mime, usage
from clustermail.mail.store.errors import MessageTooLargeError


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """A message ready to store: CRLF-normalized bytes, digest and the cached MIME analysis
    (computed outside the write transaction)."""

    raw: bytes
    digest: bytes
    structure: str  # MessageStructure JSON

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def charged(self) -> int:
        """The bytes it counts for in a mailbox's quota (size plus stored structure)."""
        return usage.charge(len(self.raw), self.structure)


def check_size(size: int, limit: int) -> None:
    if size > limit:
        raise MessageTooLargeError(size, limit)


def prepare(raw: bytes, max_bytes: int) -> PreparedMessage:
    """Normalize and analyze a message; MessageTooLargeError above ``max_bytes``. Any bytes
    are accepted otherwise: no headers, broken MIME and 8-bit junk are stored as they are."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError(f"a message is bytes, not {type(raw).__name__}")
    check_size(len(raw), max_bytes)
    data = mime.normalize_newlines(bytes(raw))
    check_size(len(data), max_bytes)
    _, structure = mime.analyze_with_json(data)
    return PreparedMessage(data, hashlib.sha256(data).digest(), structure)


def add(conn: sqlite3.Connection, message: PreparedMessage, refs: int = 1) -> int:
    """The body id of ``message``, stored now if this database does not hold it yet, with
    ``refs`` more references."""
    return add_charged(conn, message, refs)[0]


def add_charged(
    conn: sqlite3.Connection, message: PreparedMessage, refs: int = 1
) -> tuple[int, int]:
    """:func:`add`, also returning what one copy of the stored body charges a quota (see
    usage.charge): read from the stored row, which an earlier delivery of the same bytes
    may have written, in the same statement (delivery's hot path)."""
    row = conn.execute(
        "INSERT INTO body (digest, size, refcount, structure, raw) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (digest) DO UPDATE SET refcount = refcount + excluded.refcount "
        "RETURNING id, length(CAST(structure AS BLOB))",
        (message.digest, message.size, refs, message.structure, message.raw),
    ).fetchone()
    return int(row[0]), message.size + int(row[1])


def reference(conn: sqlite3.Connection, body_ids: Iterable[int]) -> None:
    counts: dict[int, int] = {}
    for body_id in body_ids:
        counts[body_id] = counts.get(body_id, 0) + 1
    conn.executemany(
        "UPDATE body SET refcount = refcount + ? WHERE id = ?", [(n, b) for b, n in counts.items()]
    )


def release(conn: sqlite3.Connection, body_ids: Iterable[int]) -> None:
    """Drop one reference per id; a body nobody references any more is deleted."""
    counts: dict[int, int] = {}
    for body_id in body_ids:
        counts[body_id] = counts.get(body_id, 0) + 1
    conn.executemany(
        "UPDATE body SET refcount = refcount - ? WHERE id = ?", [(n, b) for b, n in counts.items()]
    )
    conn.executemany("DELETE FROM body WHERE id = ? AND refcount <= 0", [(b,) for b in counts])
