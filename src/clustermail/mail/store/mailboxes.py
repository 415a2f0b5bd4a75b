"""Mailboxes (one per user; id is a stable string such as the address) and their quota
bookkeeping. Functions take a connection inside the caller's transaction."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from clustermail.mail.store import folders, index, names, quota
from clustermail.mail.store.errors import MailboxExistsError, MailboxNotFoundError
from clustermail.mail.store.quota import QuotaLimits
from clustermail.mail.store.types import DatabaseSettings, QuotaReport


@dataclass(frozen=True, slots=True)
class MailboxRow:
    id: int
    name: str
    used_bytes: int
    used_messages: int
    custom: bool
    custom_limits: QuotaLimits
    last_warning: float | None

    def limits(self, settings: DatabaseSettings) -> QuotaLimits:
        return self.custom_limits if self.custom else settings.quota


_COLUMNS = (
    "id, name, used_bytes, used_messages, quota_custom, quota_warning, quota_send, "
    "quota_send_receive, last_warning"
)


_COLUMNS_M = ", ".join(f"m.{c.strip()}" for c in _COLUMNS.split(","))


def _row(
    r: tuple[int, str, int, int, int, int | None, int | None, int | None, float | None],
) -> MailboxRow:
    return MailboxRow(r[0], r[1], r[2], r[3], bool(r[4]), QuotaLimits(r[5], r[6], r[7]), r[8])


def find(conn: sqlite3.Connection, name: str) -> MailboxRow | None:
    r = conn.execute(f"SELECT {_COLUMNS} FROM mailbox WHERE name = ?", (name,)).fetchone()
    return None if r is None else _row(r)


def find_with_folder(
    conn: sqlite3.Connection, name: str, folder: str
) -> tuple[MailboxRow, folders.FolderRow | None, index.LastChunk] | None:
    """The mailbox, its (normalized) ``folder`` and that folder's last index chunk, in one
    statement (delivery's hot path): None without the mailbox; (row, None, None) when it
    has no such folder."""
    r = conn.execute(
        f"SELECT {_COLUMNS_M}, {folders.COLUMNS}, c.id, c.data FROM mailbox m "
        f"LEFT JOIN folder f ON f.mailbox_id = m.id AND f.name = ? {index.LAST_CHUNK_JOIN} "
        "WHERE m.name = ?",
        (folder, name),
    ).fetchone()
    if r is None:
        return None
    if r[9] is None:
        return _row(r[:9]), None, None
    return _row(r[:9]), folders.FolderRow(*r[9:16]), None if r[16] is None else (r[16], r[17])


def get(conn: sqlite3.Connection, name: str) -> MailboxRow:
    row = find(conn, name)
    if row is None:
        raise MailboxNotFoundError(name)
    return row


def names_all(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM mailbox ORDER BY name")]


def create(conn: sqlite3.Connection, name: str, now: float, limits: QuotaLimits | None) -> None:
    """A mailbox with INBOX and the RFC 6154 special-use folders, all subscribed."""
    if not name or len(name) > 320:
        raise ValueError(f"invalid mailbox id {name!r}")
    if find(conn, name) is not None:
        raise MailboxExistsError(name)
    custom = limits is not None
    limits = limits or QuotaLimits()
    cur = conn.execute(
        "INSERT INTO mailbox (name, quota_custom, quota_warning, quota_send, quota_send_receive, "
        "created) VALUES (?, ?, ?, ?, ?, ?)",
        (name, custom, limits.warning, limits.prohibit_send, limits.prohibit_send_receive, now),
    )
    mailbox_id = int(cur.lastrowid or 0)
    for folder_name, special in names.SPECIAL_FOLDERS:
        folders.insert(conn, mailbox_id, folder_name, special, now)
        conn.execute(
            "INSERT INTO subscription (mailbox_id, name) VALUES (?, ?)", (mailbox_id, folder_name)
        )


def set_quota(conn: sqlite3.Connection, name: str, limits: QuotaLimits | None) -> None:
    """A mailbox override of all three limits, or None to use the database default."""
    row = get(conn, name)
    limits_or_none = limits or QuotaLimits()
    conn.execute(
        "UPDATE mailbox SET quota_custom = ?, quota_warning = ?, quota_send = ?, "
        "quota_send_receive = ? WHERE id = ?",
        (
            limits is not None,
            limits_or_none.warning,
            limits_or_none.prohibit_send,
            limits_or_none.prohibit_send_receive,
            row.id,
        ),
    )


def report(row: MailboxRow, settings: DatabaseSettings) -> QuotaReport:
    limits = row.limits(settings)
    return QuotaReport(
        row.used_bytes, row.used_messages, limits, quota.state(row.used_bytes, limits), row.custom
    )


def adjust_usage(conn: sqlite3.Connection, mailbox_id: int, size: int, count: int) -> None:
    conn.execute(
        "UPDATE mailbox SET used_bytes = used_bytes + ?, used_messages = used_messages + ? WHERE "
        "id = ?",
        (size, count, mailbox_id),
    )
