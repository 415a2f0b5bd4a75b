"""Deleted-item retention: expunged messages stay recoverable for the database's retention
window (Exchange's "keep deleted items for N days"), then are purged."""

from __future__ import annotations

import sqlite3

from clustermail.mail.store import bodies, folders, messages
from clustermail.mail.store.types import RecoveredMessage

DAY = 86400.0


def recover(
    conn: sqlite3.Connection, mailbox: str, since: float | None, now: float
) -> list[RecoveredMessage]:
    """Put deleted items (deleted at or after ``since``) back into their original folders,
    recreated if needed, with new UIDs. Their body references move back to messages."""
    mid = folders.mailbox_id(conn, mailbox)
    items = conn.execute(
        "SELECT id, folder_name, body_id, flags, keywords, internaldate, size FROM deleted_item "
        "WHERE mailbox_id = ? AND deleted_at >= ? ORDER BY folder_name, id",
        (mid, since if since is not None else float("-inf")),
    ).fetchall()
    recovered: list[RecoveredMessage] = []
    by_folder: dict[str, list[tuple[int, int, int, str | None, int, int]]] = {}
    for item_id, folder_name, *rest in items:
        by_folder.setdefault(folder_name, []).append((item_id, *rest))
    for folder_name, group in by_folder.items():
        folder = folders.find(conn, mailbox, folder_name) or folders.create(
            conn, mailbox, folder_name, now
        )
        uids, _ = messages.insert(conn, folder, [(b, f, k, d, s) for _, b, f, k, d, s in group])
        recovered += [RecoveredMessage(folder.name, folder.uidvalidity, uid) for uid in uids]
        conn.executemany("DELETE FROM deleted_item WHERE id = ?", [(g[0],) for g in group])
    return recovered


def purge(conn: sqlite3.Connection, now: float, retention_days: float) -> int:
    """Delete the items whose retention window has passed; returns how many."""
    cutoff = now - retention_days * DAY
    items = conn.execute(
        "SELECT id, body_id FROM deleted_item WHERE deleted_at < ?", (cutoff,)
    ).fetchall()
    conn.executemany("DELETE FROM deleted_item WHERE id = ?", [(i,) for i, _ in items])
    bodies.release(conn, [b for _, b in items])
    return len(items)


def count(conn: sqlite3.Connection, mailbox: str) -> int:
    mid = folders.mailbox_id(conn, mailbox)
    return int(
        conn.execute("SELECT count(*) FROM deleted_item WHERE mailbox_id = ?", (mid,)).fetchone()[0]
    )
