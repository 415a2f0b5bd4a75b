"""The recovery storage group: databases restored beside the live ones for administrators
(never mounted by the mail store resource, never served, never delivered to), and the merge
of a mailbox's messages from there back into its live mailbox.

The merge adds what the live mailbox lacks: a message is identified by the SHA-256 of its
bytes (the store keeps it for single-instance storage), so a message still in the live
mailbox — in any folder — is not copied again, and running the merge twice adds nothing.
Flags, keywords and internal dates are kept; \\Recent is not carried over; UIDs are the live
folder's new ones.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

from clustermail.mail.backup.restore import RECOVERY_DIR, recovery_path
from clustermail.mail.backup.sets import BackupError
from clustermail.mail.store import flags, names
from clustermail.mail.store.database import MailboxDatabase
from clustermail.mail.store.types import AppendResult

BATCH = 200


@dataclass
class MergeReport:
    mailbox: str
    copied: int = 0
    skipped: int = 0  # already in the live mailbox
    folders_created: list[str] = field(default_factory=list)
    per_folder: dict[str, int] = field(default_factory=dict)


def _source(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise BackupError(f"no recovery database at {path}: restore one with --recovery first")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


async def merge_mailbox(
    live: MailboxDatabase,
    recovery_db: Path,
    mailbox: str,
    *,
    folder: str | None = None,
    since: float | None = None,
) -> MergeReport:
    """Copy ``mailbox``'s messages from a recovery database into the mounted live database
    (``folder``: only that folder and its subfolders; ``since``: internal date at or after)."""
    report = MergeReport(mailbox)
    have = set(await asyncio.to_thread(_live_digests, live, mailbox))
    existing = {f.name for f in await asyncio.to_thread(live.list_folders, mailbox)}
    conn = _source(recovery_db)
    try:
        row = conn.execute("SELECT id FROM mailbox WHERE name = ?", (mailbox,)).fetchone()
        if row is None:
            raise BackupError(f"the recovery database {recovery_db} has no mailbox {mailbox}")
        wanted = None if folder is None else names.normalize(folder)
        source_folders = conn.execute(
            "SELECT id, name FROM folder WHERE mailbox_id = ? ORDER BY name", (row[0],)
        ).fetchall()
        for fid, fname in source_folders:
            if wanted is not None and fname != wanted and not fname.startswith(wanted + "/"):
                continue
            pending: list[Awaitable[AppendResult]] = []
            query = (
                "SELECT m.flags, m.keywords, m.internaldate, b.digest, b.raw FROM message m "
                "JOIN body b ON b.id = m.body_id WHERE m.folder_id = ?"
                + (" AND m.internaldate >= ?" if since is not None else "")
                + " ORDER BY m.uid"
            )
            args: tuple[object, ...] = (fid,) if since is None else (fid, int(since))
            for mask, keywords, date, digest, raw in conn.execute(query, args):
                if bytes(digest) in have:
                    report.skipped += 1
                    continue
                if fname not in existing:
                    await live.create_folder(mailbox, fname)
                    existing.add(fname)
                    report.folders_created.append(fname)
                flag_names = flags.flag_names(mask & ~flags.RECENT, keywords)
                pending.append(live.append(mailbox, fname, bytes(raw), flag_names=flag_names,
                                           internaldate=int(date)))
                have.add(bytes(digest))
                if len(pending) >= BATCH:
                    report.copied += len(await asyncio.gather(*pending))
                    pending = []
            done = len(await asyncio.gather(*pending))
            report.copied += done
            if done or pending:
                report.per_folder[fname] = report.per_folder.get(fname, 0) + done
    finally:
        conn.close()
    return report


def _live_digests(live: MailboxDatabase, mailbox: str) -> list[bytes]:
    return live.mailbox_digests(mailbox)


def drop_recovery(root: Path, storage_group: str | None = None) -> list[Path]:
    """Delete the recovery storage group (or one of its groups); returns what went."""
    base = root / RECOVERY_DIR
    target = base / storage_group if storage_group else base
    if not target.exists():
        return []
    gone = sorted(target.rglob("*.sqlite")) if target.is_dir() else [target]
    shutil.rmtree(target)
    return gone


__all__ = ["MergeReport", "drop_recovery", "merge_mailbox", "recovery_path"]
