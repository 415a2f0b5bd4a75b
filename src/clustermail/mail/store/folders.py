"""Folders of a mailbox: hierarchy, UIDVALIDITY, subscriptions, status. Functions take a
connection inside the caller's transaction."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from clustermail.mail.store import flags, names
from clustermail.mail.store.errors import (
    FolderExistsError,
    FolderNotFoundError,
    InvalidFolderNameError,
    MailboxNotFoundError,
)
from clustermail.mail.store.types import FolderInfo, FolderStatus

UIDVALIDITY_MAX = 2**32 - 1


@dataclass(frozen=True, slots=True)
class FolderRow:
    id: int
    mailbox_id: int
    name: str
    special_use: str | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int


COLUMNS = "f.id, f.mailbox_id, f.name, f.special_use, f.uidvalidity, f.uidnext, f.highestmodseq"


def next_uidvalidity(conn: sqlite3.Connection, now: float) -> int:
    """A per-database counter seeded from the clock: never reused, even after a folder is
    deleted and created again, or the database is restored from an older copy."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'uidvalidity_next'").fetchone()
    value = max(int(row[0]) if row else 1, int(now), 1)
    if value > UIDVALIDITY_MAX:  # year 2106: wrap to 1 and rely on the UNIQUE constraint
        value = 1
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('uidvalidity_next', ?)", (str(value + 1),)
    )
    return value


def insert(
    conn: sqlite3.Connection, mailbox_id: int, name: str, special_use: str | None, now: float
) -> int:
    cur = conn.execute(
        "INSERT INTO folder (mailbox_id, name, special_use, uidvalidity) VALUES (?, ?, ?, ?)",
        (mailbox_id, name, special_use, next_uidvalidity(conn, now)),
    )
    return int(cur.lastrowid or 0)


def find(conn: sqlite3.Connection, mailbox: str, folder: str) -> FolderRow | None:
    r = conn.execute(
        f"SELECT {COLUMNS} FROM folder f JOIN mailbox m ON m.id = f.mailbox_id "
        "WHERE m.name = ? AND f.name = ?",
        (mailbox, folder),
    ).fetchone()
    return None if r is None else FolderRow(*r)


def find_in(conn: sqlite3.Connection, mailbox_id: int, folder: str) -> FolderRow | None:
    """Like find, for a caller that already has the mailbox id (delivery's hot path)."""
    r = conn.execute(
        f"SELECT {COLUMNS} FROM folder f WHERE f.mailbox_id = ? AND f.name = ?",
        (mailbox_id, folder),
    ).fetchone()
    return None if r is None else FolderRow(*r)


def get(conn: sqlite3.Connection, mailbox: str, folder: str) -> FolderRow:
    """The folder, or MailboxNotFoundError / FolderNotFoundError saying which is missing."""
    name = names.normalize(folder)
    row = find(conn, mailbox, name)
    if row is None:
        if conn.execute("SELECT 1 FROM mailbox WHERE name = ?", (mailbox,)).fetchone() is None:
            raise MailboxNotFoundError(mailbox)
        raise FolderNotFoundError(mailbox, name)
    return row


def mailbox_id(conn: sqlite3.Connection, mailbox: str) -> int:
    r = conn.execute("SELECT id FROM mailbox WHERE name = ?", (mailbox,)).fetchone()
    if r is None:
        raise MailboxNotFoundError(mailbox)
    return int(r[0])


def create(conn: sqlite3.Connection, mailbox: str, folder: str, now: float) -> FolderRow:
    """Create a folder and any missing superior folders (RFC 3501 CREATE)."""
    name = names.normalize(folder)
    mid = mailbox_id(conn, mailbox)
    if find(conn, mailbox, name) is not None:
        raise FolderExistsError(mailbox, name)
    levels = name.split(names.DELIMITER)
    for depth in range(1, len(levels) + 1):
        path = names.DELIMITER.join(levels[:depth])
        if find(conn, mailbox, path) is None:
            insert(conn, mid, path, None, now)
    return get(conn, mailbox, name)


def list_all(conn: sqlite3.Connection, mailbox: str) -> list[FolderInfo]:
    mid = mailbox_id(conn, mailbox)
    subscribed = {
        r[0] for r in conn.execute("SELECT name FROM subscription WHERE mailbox_id = ?", (mid,))
    }
    return [
        FolderInfo(name, special, name in subscribed, uidvalidity)
        for name, special, uidvalidity in conn.execute(
            "SELECT name, special_use, uidvalidity FROM folder WHERE mailbox_id = ? ORDER BY name",
            (mid,),
        )
    ]


def rename(
    conn: sqlite3.Connection, mailbox: str, old: str, new: str, now: float
) -> list[tuple[str, str]]:
    """Rename a folder and its inferiors; returns the (old, new) names. Renaming INBOX moves
    its messages into a new folder and leaves INBOX empty (RFC 3501 §6.3.5), which the
    caller does; here INBOX is refused."""
    old_name, new_name = names.normalize(old), names.normalize(new)
    src = get(conn, mailbox, old_name)
    if old_name == names.INBOX:
        raise InvalidFolderNameError("INBOX is renamed by moving its messages; use rename_inbox")
    if old_name == new_name or names.is_inferior(new_name, old_name):
        raise InvalidFolderNameError(f"cannot rename {old_name!r} to {new_name!r}")
    if find(conn, mailbox, new_name) is not None:
        raise FolderExistsError(mailbox, new_name)
    moved = [
        (name, names.renamed(name, old_name, new_name))
        for (name,) in conn.execute(
            "SELECT name FROM folder WHERE mailbox_id = ? AND (name = ? OR substr(name, 1, ?) = ?)",
            (src.mailbox_id, old_name, len(old_name) + 1, old_name + names.DELIMITER),
        ).fetchall()
    ]
    for _, after in moved:
        if find(conn, mailbox, after) is not None:
            raise FolderExistsError(mailbox, after)
    for before, after in moved:
        conn.execute(
            "UPDATE folder SET name = ? WHERE mailbox_id = ? AND name = ?",
            (after, src.mailbox_id, before),
        )
        conn.execute(
            "UPDATE OR IGNORE subscription SET name = ? WHERE mailbox_id = ? AND name = ?",
            (after, src.mailbox_id, before),
        )
    levels = new_name.split(names.DELIMITER)
    for depth in range(1, len(levels)):
        path = names.DELIMITER.join(levels[:depth])
        if find(conn, mailbox, path) is None:
            insert(conn, src.mailbox_id, path, None, now)
    return moved


def subscribe(conn: sqlite3.Connection, mailbox: str, folder: str, on: bool) -> None:
    """Subscriptions are names: they may name folders that do not exist (RFC 3501 §6.3.6)."""
    name = names.normalize(folder)
    mid = mailbox_id(conn, mailbox)
    if on:
        conn.execute(
            "INSERT OR IGNORE INTO subscription (mailbox_id, name) VALUES (?, ?)", (mid, name)
        )
    else:
        conn.execute("DELETE FROM subscription WHERE mailbox_id = ? AND name = ?", (mid, name))


def subscriptions(conn: sqlite3.Connection, mailbox: str) -> list[str]:
    mid = mailbox_id(conn, mailbox)
    return [
        r[0]
        for r in conn.execute(
            "SELECT name FROM subscription WHERE mailbox_id = ? ORDER BY name", (mid,)
        )
    ]


def status(conn: sqlite3.Connection, folder: FolderRow) -> FolderStatus:
    count, unseen, recent = conn.execute(
        "SELECT count(*), total((flags & ?) = 0), total((flags & ?) != 0) FROM message WHERE "
        "folder_id = ?",
        (flags.SEEN, flags.RECENT, folder.id),
    ).fetchone()
    return FolderStatus(
        count, int(recent), int(unseen), folder.uidnext, folder.uidvalidity, folder.highestmodseq
    )
