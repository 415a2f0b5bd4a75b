"""Recent flag changes answered from memory (flag_log): the same answer as the change log
in the database, whatever kind of write came in between, and the database asked whenever
memory cannot be sure."""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from clustermail.mail.store import MailboxDatabase, folders, messages, schema
from clustermail.mail.store.errors import FencedError
from clustermail.mail.store.flag_log import FlagLog
from clustermail.mail.store.types import FlagChange, FolderChanges
from clustermail.mail.store.writer import GroupCommitWriter, Tx
from tests.support.mail_data import USERS, message

A = USERS[0]
TIMEOUT = 10.0


def change(uid: int, flags: int, modseq: int) -> FlagChange:
    return FlagChange(uid, flags, None, modseq)


def test_consecutive_flag_changes_are_answered_latest_first_in_uid_order() -> None:
    log = FlagLog()
    log.record(1, 7, 11, [change(5, 1, 11)])
    log.record(1, 7, 12, [change(3, 2, 12), change(5, 4, 12)])
    log.record(1, 7, 13, [change(9, 8, 13)])
    assert log.since(1, 7, 10, 13) == [change(3, 2, 12), change(5, 4, 12), change(9, 8, 13)]
    assert log.since(1, 7, 12, 13) == [change(9, 8, 13)]
    assert log.since(1, 7, 13, 13) == []
    # a reader whose folder row predates the last record does not see it
    assert log.since(1, 7, 10, 12) == [change(3, 2, 12), change(5, 4, 12)]


def test_anything_memory_cannot_vouch_for_goes_to_the_database() -> None:
    log = FlagLog(keep=3)
    for modseq in range(11, 15):
        log.record(1, 7, modseq, [change(modseq, 1, modseq)])
    assert log.since(1, 7, 10, 14) is None  # modseq 11 fell out of memory
    assert log.since(1, 7, 11, 14) is not None
    assert log.since(1, 7, 11, 15) is None  # 15 was another kind of write
    assert log.since(1, 8, 11, 14) is None  # another UIDVALIDITY: another folder
    assert log.since(2, 7, 11, 14) is None
    log.record(1, 7, 17, [change(1, 1, 17)])  # 15 and 16 went elsewhere: start over
    assert log.since(1, 7, 13, 17) is None
    assert log.since(1, 7, 16, 17) == [change(1, 1, 17)]
    log.clear()
    assert log.since(1, 7, 16, 17) is None


def test_latest_answers_a_reader_that_saw_every_other_commit() -> None:
    log = FlagLog(keep=3)
    assert log.latest(7, 10) == (10, [])  # nothing recorded: the folder did not change
    log.record(1, 7, 11, [change(5, 1, 11)])
    log.record(1, 7, 12, [change(5, 4, 12)])
    assert log.latest(7, 10) == (12, [change(5, 4, 12)])
    assert log.latest(7, 12) == (12, [])
    assert log.latest(7, 15) == (15, [])  # the reader is ahead (it read the database)
    for modseq in range(13, 16):
        log.record(1, 7, modseq, [change(modseq, 1, modseq)])
    assert log.latest(7, 11) is None  # 12 fell out of memory
    assert log.latest(7, 12) == (15, [change(m, 1, m) for m in (13, 14, 15)])


def test_memory_stays_bounded_and_says_when_it_forgets_a_folder() -> None:
    forgotten: list[int] = []
    log = FlagLog(folders=2, on_forget=lambda: forgotten.append(1))
    log.record(1, 7, 11, [change(5, 1, 11)])
    log.record(2, 8, 21, [change(5, 1, 21)])
    log.record(1, 7, 12, [change(6, 1, 12)])  # folder 7 used last: 8 goes first
    assert forgotten == []
    log.record(3, 9, 31, [change(5, 1, 31)])
    assert forgotten == [1]
    assert log.since(2, 8, 20, 21) is None and log.since(1, 7, 10, 12) is not None


def test_memory_is_bounded_by_the_changes_kept_not_only_the_commits() -> None:
    """A client setting the flags of whole large folders again and again: a commit too
    large is not kept (and readers are told, as for a forgotten folder), a folder keeps
    at most half of all the changes, and the folders together at most all of them."""
    forgotten: list[int] = []
    log = FlagLog(on_forget=lambda: forgotten.append(1), changes=64)
    log.record(1, 7, 11, [change(u, 1, 11) for u in range(1, 4)])
    assert log.since(1, 7, 10, 11) is not None
    log.record(1, 7, 12, [change(u, 1, 12) for u in range(1, 6)])  # 5 > 64 // 16
    assert forgotten == [1]
    assert log.since(1, 7, 10, 12) is None and log.latest(7, 10) == (10, [])
    for modseq in range(13, 25):  # 3 changes each: 36 > 64 // 2
        log.record(1, 7, modseq, [change(u, 1, modseq) for u in range(1, 4)])
    assert log._total <= 32
    assert log.since(1, 7, 12, 24) is None  # its oldest went first
    assert log.since(1, 7, 14, 24) is not None
    for folder in range(2, 6):  # other folders: the least recently changed goes
        for modseq in range(1, 5):
            log.record(folder, 100 + folder, modseq, [change(u, 1, modseq) for u in (1, 2, 3)])
    assert log._total <= 64
    assert log.since(1, 7, 14, 24) is None and len(forgotten) > 1
    assert log.since(5, 105, 0, 4) is not None


def test_a_forgotten_folder_sends_readers_to_the_database(tmp_path: Path) -> None:
    """With room for one folder, a STORE in another makes the database forget the first:
    a reader of the first that looked before must read the database, not take its folder
    for unchanged."""
    (tmp_path / "d").mkdir()
    db = MailboxDatabase(tmp_path / "d" / "db.sqlite")
    db._flag_log = FlagLog(folders=1, on_forget=db._flag_log_forgot)
    db.mount(1)
    try:
        db.create_mailbox_sync(A)
        db.deliver_sync(message(1), [A])
        db.deliver_sync(message(2), [A], "Archive")
        inbox = db.changes_since(A, "INBOX", 0)
        seen = db.change_count
        db.set_flags_sync(A, "INBOX", [1], ["\\Seen"], "add")
        db.set_flags_sync(A, "Archive", [1], ["\\Seen"], "add")  # INBOX forgotten
        assert db.flag_changes_since(inbox.uidvalidity, inbox.highestmodseq, seen) is None
        assert len(db.changes_since(A, "INBOX", inbox.highestmodseq).changed) == 1
    finally:
        db.dismount()


def reference(db_path: Path, mailbox: str, folder: str, modseq: int) -> FolderChanges:
    """What the change log in the file says, read on a connection of its own."""
    conn = schema.connect(db_path, create=False)
    try:
        conn.execute("BEGIN")
        return messages.changes_since(conn, folders.get(conn, mailbox, folder), modseq)
    finally:
        conn.close()


def test_changes_since_matches_the_database_through_every_kind_of_write(
    db: MailboxDatabase, db_path: Path
) -> None:
    rnd = random.Random(5)
    for n in range(30):
        db.deliver_sync(message(n), [A])
    db.claim_recent_sync(A, "INBOX")
    answered = db._flag_log.answered
    start = db.changes_since(A, "INBOX", 0)
    marks = [start.highestmodseq]
    uidvalidity, uidnext = start.uidvalidity, [start.uidnext]
    readers = [{"modseq": start.highestmodseq, "seen": db.change_count} for _ in range(3)]
    fast = [0]
    for step in range(300):
        uids = list(db.list_messages(A, "INBOX").uids)
        x = rnd.random()
        if x < 0.75 and uids:
            picked = rnd.sample(uids, rnd.randint(1, min(3, len(uids))))
            flag = rnd.choice(["\\Seen", "\\Flagged", "\\Deleted", "$Label1", "$Label2"])
            db.set_flags_sync(A, "INBOX", picked, [flag], rnd.choice(["add", "remove", "set"]))
        elif x < 0.85:
            db.deliver_sync(message(1000 + step), [A])
        elif x < 0.92:
            db.expunge_sync(A, "INBOX")
        elif x < 0.96 and uids:
            db.move_sync(A, "INBOX", [rnd.choice(uids)], "Archive")
        else:
            db.claim_recent_sync(A, "INBOX")
        top = db.changes_since(A, "INBOX", 0).highestmodseq
        marks.append(top)
        for since in {*rnd.sample(marks, min(4, len(marks))), top - 1, top - 5}:
            assert db.changes_since(A, "INBOX", since) == reference(db_path, A, "INBOX", since)
        # readers as an IMAP session is one: they look now and then, as it syncs
        for reader in readers:
            if rnd.random() < 0.5:
                continue
            count = db.change_count
            want = reference(db_path, A, "INBOX", reader["modseq"])
            got = db.flag_changes_since(uidvalidity, reader["modseq"], reader["seen"])
            if got is None:
                got = (want.highestmodseq, want.changed)
            else:
                fast[0] += 1
                assert want.expunged == [] and want.uidnext == uidnext[0]
            assert got == (want.highestmodseq, want.changed)
            reader.update(modseq=got[0], seen=count)
        uidnext[0] = reference(db_path, A, "INBOX", 0).uidnext
    assert db._flag_log.answered > answered + 100  # memory did answer most of them
    assert fast[0] > 100


def test_a_folder_made_again_never_sees_the_old_folders_changes(
    db: MailboxDatabase, db_path: Path
) -> None:
    db.create_folder_sync(A, "Work")
    db.deliver_sync(message(1), [A], "Work")
    db.set_flags_sync(A, "Work", [1], ["\\Seen"], "add")
    db.delete_folder_sync(A, "Work")
    db.create_folder_sync(A, "Work")
    db.deliver_sync(message(2), [A], "Work")
    db.set_flags_sync(A, "Work", [1], ["\\Flagged"], "add")
    for since in range(4):
        assert db.changes_since(A, "Work", since) == reference(db_path, A, "Work", since)


@pytest.fixture
def writer(tmp_path: Path) -> tuple[GroupCommitWriter, sqlite3.Connection]:
    path = tmp_path / "w.sqlite"
    conn = schema.connect(path, create=True)
    conn.execute("INSERT INTO mount (id, epoch, mounted_at, owner) VALUES (1, 1, 0, 't')")
    conn.execute("CREATE TABLE t (x INTEGER UNIQUE)")
    return GroupCommitWriter(conn, path, 1), conn


def test_commit_hooks_run_after_the_commit_only_for_jobs_that_kept_their_writes(
    writer: tuple[GroupCommitWriter, sqlite3.Connection],
) -> None:
    w, conn = writer
    ran: list[str] = []
    entered, release = threading.Event(), threading.Event()

    def hold(tx: Tx) -> None:
        entered.set()
        assert release.wait(TIMEOUT)

    def job(name: str, fail: bool) -> Callable[[Tx], str]:
        def apply(tx: Tx) -> str:
            tx.conn.execute("INSERT INTO t VALUES (?)", (len(name),))
            tx.committed.append(lambda: ran.append(name))
            if fail:
                raise ValueError(name)
            return name

        return apply

    try:
        holder = w.submit(hold)
        assert entered.wait(TIMEOUT)
        # one batch: a job failing first (bare), one kept, one failing in its savepoint
        futures = [w.submit(job(n, n.startswith("bad"))) for n in ("bad1", "ok", "bad22")]
        release.set()
        holder.result(TIMEOUT)
        assert futures[1].result(TIMEOUT) == "ok"
        for f in (futures[0], futures[2]):
            with pytest.raises(ValueError):
                f.result(TIMEOUT)
        assert ran == ["ok"]

        def answered_after_hook(tx: Tx) -> bool:
            tx.committed.append(lambda: ran.append("hook"))
            return True

        # the hook runs before the caller is answered
        assert w.submit(answered_after_hook).result(TIMEOUT) and ran[-1] == "hook"

        def fenced_batch(tx: Tx) -> None:
            tx.committed.append(lambda: ran.append("never"))
            tx.conn.execute("UPDATE mount SET epoch = 2")  # COMMIT still happens...

        w.submit(fenced_batch).result(TIMEOUT)
        ran.clear()
        # ... but the next transaction is fenced: its hooks never run
        with pytest.raises(FencedError):
            w.submit(job("after", False)).result(TIMEOUT)
        assert ran == []
    finally:
        w.close()
        conn.close()


def test_after_commit_hears_which_commits_were_flag_changes_alone(tmp_path: Path) -> None:
    """What the database's readers rely on to skip the folder row: a batch of flag
    changes (durable=False) whose hooks all ran; anything else, or a failed hook, not."""
    path = tmp_path / "w.sqlite"
    conn = schema.connect(path, create=True)
    conn.execute("INSERT INTO mount (id, epoch, mounted_at, owner) VALUES (1, 1, 0, 't')")
    conn.execute("CREATE TABLE t (x INTEGER)")
    heard: list[bool] = []

    def after_commit(size: int, flag_only: bool) -> bool:
        heard.append(flag_only)
        return False

    def write(tx: Tx) -> None:
        tx.conn.execute("INSERT INTO t VALUES (1)")

    def write_with_failing_hook(tx: Tx) -> None:
        tx.conn.execute("INSERT INTO t VALUES (2)")
        def hook() -> None:
            raise RuntimeError("hook fails")

        tx.committed.append(hook)

    w = GroupCommitWriter(conn, path, 1, after_commit=after_commit)
    try:
        w.submit(write, durable=False).result(TIMEOUT)
        w.submit(write).result(TIMEOUT)
        w.submit(write_with_failing_hook, durable=False).result(TIMEOUT)
        assert heard == [True, False, False]
    finally:
        w.close()
        conn.close()
