"""Messages in folders: insert, flags, copy, expunge, reads and the change log. Functions take
a connection inside the caller's transaction; every write keeps the message table, the
folder index, UIDNEXT/HIGHESTMODSEQ and quota usage in step."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

from clustermail.mail.store import bodies, flags, index, mailboxes, mime, usage
from clustermail.mail.store.errors import MessageNotFoundError
from clustermail.mail.store.folders import FolderRow
from clustermail.mail.store.types import CopyResult, FlagChange, FolderChanges, StoreResult

FlagMode = Literal["set", "add", "remove"]
# (body_id, flags, keywords, internaldate, size)
NewMessage = tuple[int, int, str | None, int, int]
# (uid, body_id, flags, keywords, internaldate, size, modseq)
StoredRow = tuple[int, int, int, str | None, int, int, int]

_IN_UIDS = "uid IN (SELECT value FROM json_each(?))"  # one parameter for any number of UIDs


def _uid_list(uids: Iterable[int]) -> str:
    return json.dumps(sorted({int(u) for u in uids}))


def insert(
    conn: sqlite3.Connection,
    folder: FolderRow,
    entries: Sequence[NewMessage],
    charged: int | None = None,
    last_chunk: index.LastChunk | index.ReadIt = index.READ_IT,
) -> tuple[list[int], int]:
    """Append messages with fresh UIDs (from UIDNEXT) under one new modseq; returns
    (uids, modseq). The caller has already counted the body references. ``charged``: what
    the entries charge the quota (usage.charges), and ``last_chunk`` the folder's last index
    chunk, when the caller already knows them."""
    first, modseq = folder.uidnext, folder.highestmodseq + 1
    uids = list(range(first, first + len(entries)))
    conn.executemany(
        "INSERT INTO message (folder_id, uid, body_id, flags, keywords, internaldate, size, "
        "modseq) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (folder.id, uid, b, f, k, d, s, modseq)
            for uid, (b, f, k, d, s) in zip(uids, entries, strict=True)
        ],
    )
    index.append(
        conn,
        folder.id,
        [(uid, f, s, modseq, d) for uid, (_, f, _, d, s) in zip(uids, entries, strict=True)],
        last_chunk,
    )
    conn.execute(
        "UPDATE folder SET uidnext = ?, highestmodseq = ? WHERE id = ?",
        (first + len(entries), modseq, folder.id),
    )
    if charged is None:
        charged = usage.charges(conn, ((e[0], e[4]) for e in entries))
    mailboxes.adjust_usage(conn, folder.mailbox_id, charged, len(entries))
    return uids, modseq


def rows(
    conn: sqlite3.Connection,
    folder: FolderRow,
    uids: Iterable[int] | None = None,
    *,
    deleted_only: bool = False,
) -> list[StoredRow]:
    sql = (
        "SELECT uid, body_id, flags, keywords, internaldate, size, modseq FROM message "
        "WHERE folder_id = ?"
    )
    args: list[object] = [folder.id]
    if uids is not None:
        sql += f" AND {_IN_UIDS}"
        args.append(_uid_list(uids))
    if deleted_only:
        sql += f" AND (flags & {flags.DELETED}) != 0"
    return conn.execute(sql + " ORDER BY uid", args).fetchall()


def set_flags(
    conn: sqlite3.Connection,
    folder: FolderRow,
    uids: Iterable[int],
    mask: int,
    keywords: frozenset[str],
    mode: FlagMode,
    unchanged_since: int | None = None,
    last_chunk: list[index.PatchedChunk] | None = None,
) -> StoreResult:
    """STORE: change flags of the given UIDs under one new modseq. Messages whose modseq is
    above ``unchanged_since`` (CONDSTORE) are left alone and reported as failed; messages
    whose flags do not change keep their modseq. ``last_chunk``: see ``index.update``."""
    mask &= ~flags.RECENT  # \\Recent is not a client-settable flag
    modseq = folder.highestmodseq + 1
    if not keywords and unchanged_since is None:
        changed = _set_system_flags(conn, folder.id, uids, mask, mode, modseq)
        if not changed:
            return StoreResult(folder.highestmodseq, [], [])
        index.update(conn, folder.id, {c.uid: (c.flags, modseq) for c in changed}, last_chunk)
        conn.execute("UPDATE folder SET highestmodseq = ? WHERE id = ?", (modseq, folder.id))
        return StoreResult(modseq, changed, [])
    changed = []
    failed: list[int] = []
    for uid, _, old, old_kw, _, _, old_modseq in rows(conn, folder, uids):
        if unchanged_since is not None and old_modseq > unchanged_since:
            failed.append(uid)
            continue
        kw = flags.decode_keywords(old_kw)
        if mode == "set":
            new, new_kw = (old & flags.RECENT) | mask, keywords
        elif mode == "add":
            new, new_kw = old | mask, kw | keywords
        else:
            new, new_kw = old & ~mask, kw - keywords
        encoded = flags.encode_keywords(new_kw)
        if new != old or encoded != old_kw:
            changed.append(FlagChange(uid, new, encoded, modseq))
    if not changed:
        return StoreResult(folder.highestmodseq, [], failed)
    conn.executemany(
        "UPDATE message SET flags = ?, keywords = ?, modseq = ? WHERE folder_id = ? AND uid = ?",
        [(c.flags, c.keywords, modseq, folder.id, c.uid) for c in changed],
    )
    index.update(conn, folder.id, {c.uid: (c.flags, modseq) for c in changed}, last_chunk)
    conn.execute("UPDATE folder SET highestmodseq = ? WHERE id = ?", (modseq, folder.id))
    return StoreResult(modseq, changed, failed)


def set_system_flags_unindexed(
    conn: sqlite3.Connection,
    folder_id: int,
    highestmodseq: int,
    uid: int,
    mask: int,
    mode: FlagMode,
) -> StoreResult:
    """:func:`set_flags` of one message's system flags in a folder whose HIGHESTMODSEQ is
    ``highestmodseq``, leaving its index entry and the folder's new HIGHESTMODSEQ to the
    caller (who writes them before the COMMIT)."""
    mask &= ~flags.RECENT
    modseq = highestmodseq + 1
    changed = _set_system_flags(conn, folder_id, [uid], mask, mode, modseq)
    return StoreResult(modseq if changed else highestmodseq, changed, [])


# STORE of system flags only (no keywords named, no UNCHANGEDSINCE): one UPDATE that
# changes the messages whose flags differ and returns them, where the general path reads
# the rows first. "set" also drops keywords, as the general path does.
_SYSTEM_FLAG_UPDATES: dict[FlagMode, tuple[str, str]] = {
    "add": ("flags = flags | :mask", "flags & :mask != :mask"),
    "remove": ("flags = flags & ~:mask", "flags & :mask != 0"),
    "set": (
        f"flags = (flags & {flags.RECENT}) | :mask, keywords = NULL",
        f"(flags != ((flags & {flags.RECENT}) | :mask) OR keywords IS NOT NULL)",
    ),
}


def _set_system_flags(
    conn: sqlite3.Connection,
    folder_id: int,
    uids: Iterable[int],
    mask: int,
    mode: FlagMode,
    modseq: int,
) -> list[FlagChange]:
    assignment, differs = _SYSTEM_FLAG_UPDATES[mode]
    wanted = sorted({int(u) for u in uids})
    uid_arg: int | str
    if len(wanted) == 1:
        where, uid_arg = "uid = :uids", wanted[0]
    else:
        where, uid_arg = "uid IN (SELECT value FROM json_each(:uids))", json.dumps(wanted)
    found = conn.execute(
        f"UPDATE message SET {assignment}, modseq = :modseq "
        f"WHERE folder_id = :folder AND {where} AND {differs} RETURNING uid, flags, keywords",
        {"mask": mask, "modseq": modseq, "folder": folder_id, "uids": uid_arg},
    ).fetchall()
    found.sort()
    return [FlagChange(uid, new, kw, modseq) for uid, new, kw in found]


def remove(
    conn: sqlite3.Connection,
    folder: FolderRow,
    victims: Sequence[StoredRow],
    now: float,
    retention_days: float,
    *,
    retain: bool,
) -> int:
    """Take messages out of a folder, logging their UIDs in the expunge log under one new
    modseq. With ``retain`` and a retention window they become recoverable deleted items
    (keeping their body reference); otherwise their bodies are released."""
    modseq = folder.highestmodseq + 1
    if not victims:
        return folder.highestmodseq
    conn.executemany(
        "DELETE FROM message WHERE folder_id = ? AND uid = ?", [(folder.id, r[0]) for r in victims]
    )
    conn.executemany(
        "INSERT OR REPLACE INTO expunged (folder_id, uid, modseq) VALUES (?, ?, ?)",
        [(folder.id, r[0], modseq) for r in victims],
    )
    index.remove(conn, folder.id, [r[0] for r in victims])
    conn.execute("UPDATE folder SET highestmodseq = ? WHERE id = ?", (modseq, folder.id))
    charged = usage.charges(conn, ((r[1], r[5]) for r in victims))  # before bodies go
    mailboxes.adjust_usage(conn, folder.mailbox_id, -charged, -len(victims))
    if retain and retention_days > 0:
        conn.executemany(
            "INSERT INTO deleted_item (mailbox_id, folder_name, body_id, flags, keywords, "
            "internaldate, size, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (folder.mailbox_id, folder.name, r[1], r[2] & ~flags.RECENT, r[3], r[4], r[5], now)
                for r in victims
            ],
        )
    else:
        bodies.release(conn, [r[1] for r in victims])
    return modseq


def copy(
    conn: sqlite3.Connection, src: FolderRow, dst: FolderRow, uids: Iterable[int]
) -> tuple[CopyResult, list[StoredRow]]:
    """COPY: the copies get new UIDs in ``dst`` (UIDPLUS) and \\Recent; bodies are shared."""
    found = rows(conn, src, uids)
    if not found:
        return CopyResult(dst.uidvalidity, [], []), []
    bodies.reference(conn, [r[1] for r in found])
    new_uids, _ = insert(conn, dst, [(r[1], r[2] | flags.RECENT, r[3], r[4], r[5]) for r in found])
    return CopyResult(dst.uidvalidity, [r[0] for r in found], new_uids), found


def claim_recent(conn: sqlite3.Connection, folder: FolderRow) -> list[int]:
    """UIDs that were \\Recent; the flag is cleared so only one session sees them as recent.
    \\Recent is not a CONDSTORE flag: modseqs stay."""
    found = conn.execute(
        f"SELECT uid, flags, modseq FROM message WHERE folder_id = ? AND (flags & {flags.RECENT}) "
        f"!= 0 ORDER BY uid",
        (folder.id,),
    ).fetchall()
    if found:
        conn.executemany(
            "UPDATE message SET flags = ? WHERE folder_id = ? AND uid = ?",
            [(f & ~flags.RECENT, folder.id, uid) for uid, f, _ in found],
        )
        index.update(conn, folder.id, {uid: (f & ~flags.RECENT, m) for uid, f, m in found})
    return [r[0] for r in found]


# --------------------------------------------------------------------------- reads


def recent_among(conn: sqlite3.Connection, folder: FolderRow, uids: Iterable[int]) -> list[int]:
    return [
        r[0]
        for r in conn.execute(
            f"SELECT uid FROM message WHERE folder_id = ? AND {_IN_UIDS} AND (flags & "
            f"{flags.RECENT}) != 0 ORDER BY uid",
            (folder.id, _uid_list(uids)),
        )
    ]


def raw(conn: sqlite3.Connection, folder: FolderRow, uid: int) -> bytes:
    row = conn.execute(
        "SELECT b.raw FROM message m JOIN body b ON b.id = m.body_id WHERE m.folder_id = ? AND "
        "m.uid = ?",
        (folder.id, uid),
    ).fetchone()
    if row is None:
        raise MessageNotFoundError(folder.name, uid)
    return bytes(row[0])


def raw_by_name(conn: sqlite3.Connection, mailbox: str, folder: str, uid: int) -> bytes | None:
    """:func:`raw` by mailbox and (normalized) folder name in one statement, so it needs
    no transaction of its own; None when the mailbox, folder or message is missing."""
    row = conn.execute(
        "SELECT b.raw FROM mailbox x JOIN folder f ON f.mailbox_id = x.id "
        "JOIN message m ON m.folder_id = f.id JOIN body b ON b.id = m.body_id "
        "WHERE x.name = ? AND f.name = ? AND m.uid = ?",
        (mailbox, folder, uid),
    ).fetchone()
    return None if row is None else bytes(row[0])


def raw_range(conn: sqlite3.Connection, folder: FolderRow, uid: int, start: int, end: int) -> bytes:
    """Bytes [start, end) of a message without reading the rest (IMAP partial fetch)."""
    row = conn.execute(
        "SELECT body_id FROM message WHERE folder_id = ? AND uid = ?", (folder.id, uid)
    ).fetchone()
    if row is None:
        raise MessageNotFoundError(folder.name, uid)
    with conn.blobopen("body", "raw", row[0], readonly=True) as blob:
        size = len(blob)
        start, end = max(0, min(start, size)), max(0, min(end, size))
        blob.seek(start)
        return blob.read(max(0, end - start))


def structure(conn: sqlite3.Connection, folder: FolderRow, uid: int) -> mime.MessageStructure:
    row = conn.execute(
        "SELECT b.structure FROM message m JOIN body b ON b.id = m.body_id WHERE m.folder_id = ? "
        "AND m.uid = ?",
        (folder.id, uid),
    ).fetchone()
    if row is None:
        raise MessageNotFoundError(folder.name, uid)
    return mime.MessageStructure.from_json(row[0])


def structures(
    conn: sqlite3.Connection, folder: FolderRow, first: int, last: int
) -> dict[int, mime.MessageStructure]:
    """The structures of the folder's messages with UIDs in ``first..last``: one range
    scan, not a lookup per message (a client's first FETCH 1:* ENVELOPE)."""
    return {
        uid: mime.MessageStructure.from_json(data)
        for uid, data in conn.execute(
            "SELECT m.uid, b.structure FROM message m JOIN body b ON b.id = m.body_id "
            "WHERE m.folder_id = ? AND m.uid BETWEEN ? AND ?",
            (folder.id, first, last),
        )
    }


def structure_texts(
    conn: sqlite3.Connection, folder: FolderRow, first: int, last: int
) -> list[tuple[int, str]]:
    """``(uid, structure JSON)`` of the folder's messages with UIDs in ``first..last``, in
    one range scan and unparsed: FETCH ENVELOPE reads just the envelope out of the text."""
    return conn.execute(
        "SELECT m.uid, b.structure FROM message m JOIN body b ON b.id = m.body_id "
        "WHERE m.folder_id = ? AND m.uid BETWEEN ? AND ?",
        (folder.id, first, last),
    ).fetchall()


def scan_raw(
    conn: sqlite3.Connection, folder: FolderRow, first: int, last: int, limit: int, prefix: bool
) -> Iterator[tuple[int, bytes | None]]:
    """``(uid, bytes)`` of the folder's messages with UIDs in ``first..last``, in UID order,
    in one range scan (SEARCH reads every message). A message over ``limit`` bytes gives
    its first ``limit`` bytes when ``prefix`` (read through the blob, not whole), else
    None."""
    rows = conn.execute(
        "SELECT m.uid, b.id, CASE WHEN b.size <= ? THEN b.raw END FROM message m "
        "JOIN body b ON b.id = m.body_id WHERE m.folder_id = ? AND m.uid BETWEEN ? AND ? "
        "ORDER BY m.uid",
        (limit, folder.id, first, last),
    )
    for uid, body_id, raw in rows:
        if raw is not None:
            yield uid, raw
        elif prefix:
            with conn.blobopen("body", "raw", body_id, readonly=True) as blob:
                yield uid, blob.read(limit)
        else:
            yield uid, None


def changes_since(conn: sqlite3.Connection, folder: FolderRow, modseq: int) -> FolderChanges:
    changed = [
        FlagChange(*r)
        for r in conn.execute(
            # INDEXED BY: for ORDER BY uid SQLite would otherwise walk the primary key, i.e.
            # every message of the folder (10 ms at 100 000), on each IMAP sync.
            "SELECT uid, flags, keywords, modseq FROM message INDEXED BY message_modseq "
            "WHERE folder_id = ? AND modseq > ? ORDER BY uid",
            (folder.id, modseq),
        )
    ]
    expunged = [
        r[0]
        for r in conn.execute(
            "SELECT uid FROM expunged WHERE folder_id = ? AND modseq > ? ORDER BY uid",
            (folder.id, modseq),
        )
    ]
    return FolderChanges(
        folder.uidvalidity, folder.highestmodseq, folder.uidnext, changed, expunged
    )
