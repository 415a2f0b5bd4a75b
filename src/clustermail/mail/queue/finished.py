"""The relay queue's record of finished recipients, kept beside the transaction logs.

``restore VS --all`` puts the queue back as it was in the backup, and rolls the databases
forward with whatever logs survive. A recipient the queue finished after the backup
(delivered into a database, relayed to another virtual server or the smart host, or
failed for good and bounced) would then be attempted again: delivered twice. So every
queue transaction that finishes recipients first appends them here, fsynced, and the
restore drops from the restored queue every recipient this record names (by queue id,
address and route; queue ids are random and never reused).

It lives in ``_queue/`` beside the first storage group's log directory (``<store>/_logs/``
by default, or that group's ``log_path`` on another disk), so it survives exactly when the
logs do: with the logs lost too, the databases go back to the backup as well and the
queue's second attempt is the only delivery. One JSON object per line (``q`` queue id,
``a`` address, ``r`` route, ``t`` time); a torn last line is ignored. The file is rotated
past :data:`MAX_BYTES` (one older file kept), which bounds it at a few million recipients.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from clustermail.fsutil import fsync_dir
from clustermail.mail.store import layout as layout_mod
from clustermail.mail.store.errors import StoreError

log = logging.getLogger(__name__)

FINISHED_DIR = "_queue"  # not a valid storage group name: never mistaken for one
FINISHED_FILE = "finished.jsonl"
MAX_BYTES = 128 * 1024 * 1024

#: (queue id, address, route) of a recipient the queue is done with.
Finished = tuple[str, str, str]


def finished_dir(store_root: Path) -> Path | None:
    """Where the record lives for the mail store at ``store_root`` (None: no layout)."""
    try:
        layout = layout_mod.load(store_root)
    except StoreError:
        return None
    if layout is None or not layout.storage_groups:
        return None
    return layout_mod.log_path(store_root, layout.storage_groups[0]).parent / FINISHED_DIR


class FinishedLog:
    """Appends finished recipients (from the queue's writer thread), durably."""

    def __init__(self, directory: Path, *, sync: bool = True) -> None:
        self.directory = directory
        self.path = directory / FINISHED_FILE
        self.sync = sync
        self._fd: int | None = None
        self._lock = threading.Lock()

    def append(self, done: Iterable[Finished], now: float) -> None:
        lines = "".join(json.dumps({"q": q, "a": a, "r": r, "t": round(now, 3)}) + "\n"
                        for q, a, r in done)
        if not lines:
            return
        with self._lock:
            try:
                fd = self._open()
                os.write(fd, lines.encode())
                if self.sync:
                    os.fdatasync(fd)
                if os.fstat(fd).st_size > MAX_BYTES:
                    self._rotate()
            except OSError as exc:
                # Not a reason to fail the queue's own commit (that would deliver twice
                # now); only a later restore --all could repeat these.
                log.warning("cannot record finished queue recipients in %s: %s", self.path,
                            exc)
                self._close()

    def _open(self) -> int:
        if self._fd is None:
            new = not self.directory.exists()
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if new:
                fsync_dir(self.directory.parent)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def _rotate(self) -> None:
        self._close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        fsync_dir(self.directory)

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            self._close()


def read_finished(directory: Path) -> Iterator[Finished]:
    """Every recipient recorded (older file first); damaged lines are skipped."""
    for path in (directory / (FINISHED_FILE + ".1"), directory / FINISHED_FILE):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            try:
                d = json.loads(line)
                yield str(d["q"]), str(d["a"]), str(d["r"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line (a crash mid-write)


def drop_finished(conn: sqlite3.Connection, directory: Path | None) -> int:
    """Deletes from a restored queue the recipients the record says were finished (and
    the messages left without recipients); returns how many recipients went."""
    if directory is None:
        return 0
    dropped = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        for queue_id, address, route in read_finished(directory):
            dropped += conn.execute(
                "DELETE FROM recipient WHERE address = ? AND route = ? AND message IN "
                "(SELECT id FROM message WHERE queue_id = ?)", (address, route, queue_id),
            ).rowcount
        # Messages left without recipients (queue.store's drop_empty, which imports us).
        conn.execute("DELETE FROM message WHERE id NOT IN (SELECT DISTINCT message FROM recipient)")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return dropped


def merge_live(conn: sqlite3.Connection, live: Path) -> int:
    """Copies into a restored queue the messages of the queue file it replaces that the
    backup lacks (accepted after the backup, or while the virtual server ran on an empty
    disk): acknowledged mail is never dropped with the old file. Returns how many."""
    if not live.exists():
        return 0
    conn.execute("ATTACH DATABASE ? AS live", (f"file:{live}?mode=ro",))
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            new = conn.execute(
                "SELECT id, queue_id FROM live.message WHERE queue_id NOT IN "
                "(SELECT queue_id FROM main.message)").fetchall()
            for old_id, queue_id in new:
                conn.execute(
                    "INSERT INTO main.message (queue_id, message_id, sender, size, arrived, "
                    "is_dsn, delay_notified, body) SELECT queue_id, message_id, sender, size, "
                    "arrived, is_dsn, delay_notified, body FROM live.message WHERE id = ?",
                    (old_id,))
                conn.execute(
                    "INSERT INTO main.recipient (message, address, route, attempts, "
                    "next_attempt, last_error) SELECT (SELECT id FROM main.message WHERE "
                    "queue_id = ?), address, route, attempts, next_attempt, last_error "
                    "FROM live.recipient WHERE message = ?", (queue_id, old_id))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("DETACH DATABASE live")
    return len(new)


__all__ = ["FINISHED_DIR", "FinishedLog", "drop_finished", "finished_dir", "merge_live",
           "read_finished"]
