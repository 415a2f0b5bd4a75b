"""The durability rule of flag changes, on real SQLite files and real processes: a batch of
flag changes only is committed without an fsync of its own (atomic, ordered, it survives a
crash of the process) and is fsynced within ``FLUSH_AFTER`` or by the next durable commit;
every other batch (APPEND, delivery, ...) is fsynced before it is answered. With a
transaction log, the log is fsynced before anyone copies it and before the WAL restarts,
so that log and file never disagree about a change after a crash."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import clustermail
from clustermail.mail.store import MailboxDatabase, MailStore, schema
from clustermail.mail.store import writer as writer_module
from clustermail.mail.store.flags import FLAGGED, RECENT, SEEN
from clustermail.mail.store.translog.log import DatabaseLog, read_records
from clustermail.mail.store.translog.records import Kind, Record
from clustermail.mail.store.translog.replay import replay
from clustermail.mail.store.writer import GroupCommitWriter, Tx
from tests.mail.backup.support import A, msg, new_store

FULL, NORMAL = 2, 1  # PRAGMA synchronous values


def synchronous(tx: Tx) -> int:
    return int(tx.conn.execute("PRAGMA synchronous").fetchone()[0])


def flags_in_file(path: Path, uid: int, mailbox: str = A) -> int:
    """The flags of a message (\\Recent aside) read by another connection than the writer's."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT m.flags FROM message m JOIN folder f ON f.id = m.folder_id JOIN mailbox x "
            "ON x.id = f.mailbox_id WHERE x.name = ? AND f.name = 'INBOX' AND m.uid = ?",
            (mailbox, uid)).fetchone()
    finally:
        conn.close()
    assert row is not None
    return int(row[0]) & ~RECENT


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def no_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flag changes stay unsynced until a durable commit, a reader or the close."""
    monkeypatch.setattr(writer_module, "FLUSH_AFTER", 3600.0)


# ------------------------------------------------------------------ without a log


def bare_writer(path: Path) -> tuple[GroupCommitWriter, sqlite3.Connection]:
    conn = schema.connect(path, create=True)
    conn.execute("INSERT INTO mount (id, epoch, mounted_at, owner) VALUES (1, 1, 0, 't')")
    conn.execute("CREATE TABLE t (x INTEGER)")
    return GroupCommitWriter(conn, path, 1), conn


def insert(tx: Tx) -> None:
    tx.conn.execute("INSERT INTO t VALUES (1)")


def insert_and_fail(tx: Tx) -> None:
    insert(tx)
    raise ValueError("rolled back to its savepoint")


def test_each_kind_of_batch_commits_under_its_own_synchronous_setting(tmp_path: Path) -> None:
    writer, conn = bare_writer(tmp_path / "w.sqlite")
    try:
        assert writer.submit(synchronous, durable=False).result() == NORMAL
        assert writer.submit(synchronous).result() == FULL
        # A flag change queued with a durable job shares its batch and its fsync.
        gate, running = threading.Event(), threading.Event()

        def hold(tx: Tx) -> None:
            running.set()
            gate.wait(10)

        first = writer.submit(hold)
        assert running.wait(10)
        relaxed = writer.submit(synchronous, durable=False)
        durable = writer.submit(synchronous)
        gate.set()
        first.result()
        assert relaxed.result() == FULL and durable.result() == FULL
        assert writer.stats.relaxed_commits == 1
    finally:
        writer.close()
        conn.close()


@pytest.mark.parametrize("then", ["durable write", "failed durable write", "nothing"])
def test_only_a_durable_commit_that_wrote_covers_earlier_flag_changes(
    tmp_path: Path, no_flush: None, then: str
) -> None:
    writer, conn = bare_writer(tmp_path / "w.sqlite")
    try:
        writer.submit(insert, durable=False).result()
        if then == "durable write":
            writer.submit(insert).result()
        elif then == "failed durable write":
            with pytest.raises(ValueError):
                writer.submit(insert_and_fail).result()  # committed nothing: fsynced nothing
    finally:
        writer.close()  # fsyncs what is still unsynced
        conn.close()
    assert writer.stats.flushes == (0 if then == "durable write" else 1)


def test_flag_changes_are_visible_at_once_and_fsynced_soon_after(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    db = MailboxDatabase(path)
    db.mount(1)
    try:
        db.create_mailbox_sync(A)
        uid = db.append_sync(A, "INBOX", msg("one")).uid
        commits = db.stats.commits
        assert db.stats.relaxed_commits == 0  # APPEND is durable before its answer
        db.set_flags_sync(A, "INBOX", [uid], ["\\Flagged"])
        assert db.stats.commits == commits + 1 and db.stats.relaxed_commits == 1
        assert flags_in_file(path, uid) & FLAGGED
        wait_for(lambda: db.stats.flushes == 1, "the flush of the flag change")
    finally:
        db.dismount()


_CHILD = """
import sys
from pathlib import Path
from clustermail.mail.store import MailboxDatabase, MailStore
from clustermail.mail.store import writer
writer.FLUSH_AFTER = 3600.0  # nothing fsynced after the flag change: only the kill ends it
A = "alice@example.test"
kind, root = sys.argv[1], Path(sys.argv[2])
if kind == "plain":
    db = MailboxDatabase(root / "db.sqlite")
    db.mount(1)
    db.create_mailbox_sync(A)
else:
    store = MailStore(root, create=False)
    store.mount(2)
    db = store.database("SG1", "DB1")
uid = db.append_sync(A, "INBOX", b"Subject: k\\r\\n\\r\\nk\\r\\n").uid
db.set_flags_sync(A, "INBOX", [uid], ["\\\\Flagged", "\\\\Seen"])
s = db.stats
print(uid, s.relaxed_commits, s.flushes, flush=True)
sys.stdin.read()
"""


def run_and_kill(kind: str, root: Path) -> tuple[int, int, int]:
    """A child that appends a message, flags it and is SIGKILLed once it said so."""
    env = dict(os.environ, PYTHONPATH=f"{Path(clustermail.__file__).parents[1]}")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, kind, str(root)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None
        uid, relaxed, flushes = (int(x) for x in child.stdout.readline().split())
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    return uid, relaxed, flushes


def test_unsynced_flag_changes_survive_a_killed_process(tmp_path: Path) -> None:
    uid, relaxed, flushes = run_and_kill("plain", tmp_path)
    assert (relaxed, flushes) == (1, 0)  # killed with the flag change never fsynced
    path = tmp_path / "db.sqlite"
    assert flags_in_file(path, uid) == FLAGGED | SEEN
    db = MailboxDatabase(path)
    db.mount(2)
    try:
        assert db.list_messages(A, "INBOX").flags[0] & ~RECENT == FLAGGED | SEEN
    finally:
        db.dismount()


# ------------------------------------------------------------------ with a transaction log


def log_dir(root: Path) -> Path:
    return root / "_logs" / "SG1" / "DB1"


def assert_log_is_a_chain(root: Path) -> list[Record]:
    records = list(read_records(log_dir(root), None))
    assert all(r.kind is not Kind.GAP for r in records)
    assert [r.prev_txn for r in records[1:]] == [r.txn for r in records[:-1]]
    return records


def test_flag_changes_are_logged_unsynced_and_fsynced_by_the_next_durable_commit(
    tmp_path: Path, no_flush: None
) -> None:
    root = tmp_path / "mail"
    store = new_store(root)
    try:
        db = store.database("SG1", "DB1")
        journal = db.journal
        assert journal is not None
        syncs = journal.log.syncs
        db.deliver_sync(msg("a"), [A])
        assert journal.log.syncs == syncs + 1 and not journal.unsynced
        db.set_flags_sync(A, "INBOX", [1], ["\\Flagged"])
        assert journal.log.syncs == syncs + 1 and journal.unsynced  # written, not fsynced
        assert assert_log_is_a_chain(root)  # in the log already, in order
        db.deliver_sync(msg("b"), [A])  # one fsync makes both durable
        assert journal.log.syncs == syncs + 2 and not journal.unsynced
        assert db.stats.flushes == 0
    finally:
        store.dismount()


def test_the_writer_fsyncs_logged_flag_changes_within_flush_after(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    store = new_store(root)
    try:
        db = store.database("SG1", "DB1")
        journal = db.journal
        assert journal is not None
        db.deliver_sync(msg("a"), [A])
        syncs = journal.log.syncs
        db.set_flags_sync(A, "INBOX", [1], ["\\Flagged"])
        wait_for(lambda: db.stats.flushes == 1, "the flush of the flag change")
        assert journal.log.syncs == syncs + 1 and not journal.unsynced
    finally:
        store.dismount()


def test_a_reader_of_the_log_fsyncs_it_first(tmp_path: Path, no_flush: None) -> None:
    """A backup copies only what a power cut cannot take back from the log."""
    root = tmp_path / "mail"
    store = new_store(root)
    try:
        db = store.database("SG1", "DB1")
        journal = db.journal
        assert journal is not None
        db.deliver_sync(msg("a"), [A])
        db.set_flags_sync(A, "INBOX", [1], ["\\Seen"])
        assert journal.unsynced
        reader = DatabaseLog(log_dir(root), journal.log.db_id)
        with reader:
            assert reader.syncs == 1
        reader.close()
    finally:
        store.dismount()


def test_the_log_is_fsynced_before_the_wal_restarts_over_its_frames(
    tmp_path: Path, no_flush: None
) -> None:
    root = tmp_path / "mail"
    store = new_store(root)
    try:
        db = store.database("SG1", "DB1")
        journal = db.journal
        assert journal is not None
        db.deliver_sync(msg("a"), [A])
        db.set_flags_sync(A, "INBOX", [1], ["\\Seen"])
        syncs = journal.log.syncs
        other = sqlite3.connect(db.path)
        try:
            busy, _, _ = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            other.close()
        assert busy == 0  # wholly checkpointed: the next write restarts the WAL
        db.set_flags_sync(A, "INBOX", [1], ["\\Flagged"])
        assert journal.log.syncs == syncs + 1  # the earlier change's record, before the restart
        assert journal.unsynced  # and this one's record, not yet
    finally:
        store.dismount()
    records = assert_log_is_a_chain(root)
    out = tmp_path / "rebuilt.sqlite"
    report = replay(out, records, start_txn=None, db_id=records[0].db_id)
    assert report.stopped is None
    assert flags_in_file(out, 1) == SEEN | FLAGGED


def test_a_killed_process_leaves_its_unsynced_flag_changes_in_file_and_log(
    tmp_path: Path,
) -> None:
    root = tmp_path / "mail"
    new_store(root).dismount()
    uid, relaxed, flushes = run_and_kill("logged", root)
    assert (relaxed, flushes) == (1, 0)
    store = MailStore(root)
    store.mount(3)  # logs what the file has and its log lacks, if anything
    try:
        db = store.database("SG1", "DB1")
        assert db.list_messages(A, "INBOX").flags[0] & ~RECENT == FLAGGED | SEEN
    finally:
        store.dismount()
    records = assert_log_is_a_chain(root)
    out = tmp_path / "rebuilt.sqlite"
    replay(out, records, start_txn=None, db_id=records[0].db_id)
    assert flags_in_file(out, uid) == FLAGGED | SEEN
