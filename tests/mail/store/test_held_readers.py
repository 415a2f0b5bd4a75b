"""Readers keep one snapshot from one commit to the next (store/readers.py): a read after
a commit sees it, a read under way when the writer commits is not cut short and ends
its snapshot after, the WAL still restarts under reads, and dismount does not wait."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from clustermail.mail.store import MailboxDatabase
from clustermail.mail.store.readers import HeldReader
from tests.support.mail_data import USERS, message

A = USERS[0]


def _reader(db: MailboxDatabase) -> HeldReader:
    reader = db._read()
    assert isinstance(reader, HeldReader)
    return reader


def test_reads_between_commits_share_a_snapshot_and_a_commit_ends_it(db: MailboxDatabase) -> None:
    db.deliver_sync(message(1), [A])
    assert db.fetch_raw(A, "INBOX", 1) == message(1)
    reader = _reader(db)
    assert reader.conn.in_transaction  # held: the next read takes no lock
    assert db.folder_snapshot(A, "INBOX").uidnext == 2
    assert reader.conn.in_transaction
    db.deliver_sync(message(2), [A])  # answered only after the writer ended the snapshot
    assert not reader.conn.in_transaction
    assert db.fetch_raw(A, "INBOX", 2) == message(2)
    assert db.folder_snapshot(A, "INBOX").uidnext == 3


def test_a_commit_during_a_read_leaves_the_read_whole_and_ends_its_snapshot_after(
    db: MailboxDatabase,
) -> None:
    for n in (1, 2):
        db.deliver_sync(message(n), [A])
    inside, committed = threading.Event(), threading.Event()
    seen: list[int | None] = []
    readers: list[HeldReader] = []

    def visit(uid: int, raw: bytes | None) -> None:
        seen.append(uid)
        if uid == 1:  # the writer commits while this scan holds its snapshot
            inside.set()
            assert committed.wait(10)

    def scan() -> None:
        db.scan_raw(A, "INBOX", 1, 100, visit, limit=1 << 20)
        readers.append(_reader(db))

    scanner = threading.Thread(target=scan)
    scanner.start()
    assert inside.wait(10)
    db.deliver_sync(message(3), [A])  # does not wait for the scan (release never blocks)
    committed.set()
    scanner.join(10)
    assert not scanner.is_alive()
    assert seen == [1, 2]  # the scan's own snapshot, not cut by the commit
    # The scanning thread's snapshot ended when its read did (marked stale by the commit).
    assert not readers[0].conn.in_transaction and not readers[0].stale


def _wal_frames(path: Path) -> int:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames)
    finally:
        conn.close()


def test_the_wal_restarts_while_a_reader_holds_snapshots(db: MailboxDatabase) -> None:
    # A snapshot taken before a checkpoint holds a WAL read mark; unless the writer ends
    # it before its next write, the WAL cannot restart and grows with every commit.
    db.deliver_sync(message(0), [A])
    one_commit = _wal_frames(db.path)
    for n in range(1, 60):
        db.deliver_sync(message(n), [A])
        db.fetch_raw(A, "INBOX", n)  # held past the checkpoint below
        _wal_frames(db.path)  # checkpoints everything the reader's mark allows
    assert _reader(db).conn.in_transaction
    assert _wal_frames(db.path) <= one_commit  # 7-10 frames here; without it, 400+


def test_dismount_does_not_wait_for_a_held_snapshot(db_path: Path) -> None:
    db_path.parent.mkdir()
    database = MailboxDatabase(db_path)
    database.mount(1)
    database.create_mailbox_sync(A)
    database.deliver_sync(message(1), [A])
    database.fetch_raw(A, "INBOX", 1)
    started = time.monotonic()
    database.dismount()
    assert time.monotonic() - started < 2.0  # TRUNCATE would wait its 10 s busy timeout
    wal = db_path.with_name(db_path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
