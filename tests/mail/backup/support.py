"""Helpers of the backup tests: a mail store with one mailbox, messages, tags read back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from clustermail.mail.store import MailboxDatabase, MailStore

A = "alice@example.test"


def msg(tag: str, size: int = 0) -> bytes:
    return f"Subject: {tag}\r\nMessage-ID: <{tag}@t>\r\n\r\n{tag}\r\n".encode() + b"y" * size


def new_store(root: Path, epoch: int = 1) -> MailStore:
    store = MailStore(root)
    store.mount(epoch)
    store.database("SG1", "DB1").create_mailbox_sync(A)
    return store


def tags(db: MailboxDatabase | Path, folder: str = "INBOX", mailbox: str = A) -> list[str]:
    """The first body line of every message of a mailbox's folder (alice's by default;
    ``mailbox`` is what names it in the database), in UID order."""
    if isinstance(db, MailboxDatabase):
        listing = db.list_messages(mailbox, folder)
        return [_tag(db.fetch_raw(mailbox, folder, uid)) for uid in listing.uids]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT b.raw FROM message m JOIN folder f ON f.id = m.folder_id JOIN mailbox x "
            "ON x.id = f.mailbox_id JOIN body b ON b.id = m.body_id WHERE x.name = ? AND "
            "f.name = ? ORDER BY m.uid", (mailbox, folder)).fetchall()
    finally:
        conn.close()
    return [_tag(bytes(r[0])) for r in rows]


def _tag(raw: bytes) -> str:
    return raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n", 1)[0].decode()


def integrity(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()
