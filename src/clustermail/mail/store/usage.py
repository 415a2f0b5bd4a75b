"""What a message costs its mailbox's quota: its size plus the bytes of its stored MIME
structure (the analysis kept per message for ENVELOPE/BODYSTRUCTURE). A message built to
have a large structure pays for it, so the structure cap is not a free way to fill the disk.
Every write that adds or removes messages charges the same amount through here."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

# The marker of a database whose usage counters include structure bytes; a database written
# before that is counted again once, at mount.
COUNTED_KEY = "usage_counts_structure"

# Real usage per mailbox (bytes, messages), as check and the one-time recount compute it.
REAL_USAGE = (
    "SELECT m.id, m.name, m.used_bytes, m.used_messages, "
    "coalesce(sum(x.size + x.structure_bytes), 0), count(x.size) "
    "FROM mailbox m LEFT JOIN (SELECT f.mailbox_id, g.size, "
    "length(CAST(b.structure AS BLOB)) AS structure_bytes FROM message g "
    "JOIN folder f ON f.id = g.folder_id JOIN body b ON b.id = g.body_id) x "
    "ON x.mailbox_id = m.id GROUP BY m.id"
)


def charge(size: int, structure: str) -> int:
    """The bytes one message counts for: its size plus its stored structure."""
    return size + len(structure.encode())


def charges(conn: sqlite3.Connection, messages: Iterable[tuple[int, int]]) -> int:
    """The bytes the (body id, size) messages count for, their structures read in one query."""
    entries = list(messages)
    if not entries:
        return 0
    ids = json.dumps(sorted({b for b, _ in entries}))
    lengths = dict(
        conn.execute(
            "SELECT id, length(CAST(structure AS BLOB)) FROM body "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (ids,),
        ).fetchall()
    )
    return sum(size + int(lengths.get(body_id, 0)) for body_id, size in entries)


def ensure_counted(conn: sqlite3.Connection) -> None:
    """Inside the mount transaction: set every mailbox's usage to its real value once, when
    the database was written before structure bytes counted."""
    if conn.execute("SELECT 1 FROM meta WHERE key = ?", (COUNTED_KEY,)).fetchone():
        return
    conn.executemany(
        "UPDATE mailbox SET used_bytes = ?, used_messages = ? WHERE id = ?",
        [(used, count, mid) for mid, _, _, _, used, count in conn.execute(REAL_USAGE)],
    )
    conn.execute("INSERT INTO meta (key, value) VALUES (?, '1')", (COUNTED_KEY,))
