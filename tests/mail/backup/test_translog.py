"""Transaction logs on real SQLite files: written and fsynced before the acknowledgement,
torn records ignored, replay idempotent, lost databases refused at mount."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import clustermail
from clustermail.mail.backup import create_backup, reset_database, restore_database
from clustermail.mail.store import MailStore, StoreError
from clustermail.mail.store.translog.errors import DatabaseLostError, LogError
from clustermail.mail.store.translog.log import DatabaseLog, read_records
from clustermail.mail.store.translog.records import Kind, segments
from clustermail.mail.store.translog.replay import replay
from tests.mail.backup.support import A, integrity, msg, new_store, tags

CHILD = Path(__file__).with_name("child.py")


def log_dir(root: Path) -> Path:
    return root / "_logs" / "SG1" / "DB1"


def db_file(root: Path) -> Path:
    return root / "SG1" / "DB1.sqlite"


def lose(root: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(db_file(root)) + suffix).unlink(missing_ok=True)


def test_every_logged_change_is_in_the_log_in_order(tmp_path: Path) -> None:
    store = new_store(tmp_path / "mail")
    db = store.database("SG1", "DB1")
    for i in range(20):
        db.deliver_sync(msg(f"m{i}"), [A])
    db.set_flags_sync(A, "INBOX", [1, 2], ["\\Seen", "\\Deleted"])
    db.expunge_sync(A, "INBOX")
    db.create_folder_sync(A, "Projects")
    records = list(read_records(log_dir(tmp_path / "mail"), None))
    assert records[0].kind is Kind.BASE and records[0].txn == 0
    assert all(r.kind is Kind.FRAMES for r in records[1:])
    assert [r.prev_txn for r in records[1:]] == [r.txn for r in records[:-1]]  # a chain
    store.dismount()


def test_restore_from_the_log_alone_gives_back_every_change(tmp_path: Path) -> None:
    """A new database's log starts with the whole empty file: no backup is needed."""
    root = tmp_path / "mail"
    store = new_store(root)
    db = store.database("SG1", "DB1")
    for i in range(50):
        db.deliver_sync(msg(f"m{i}", 3000), [A])
    want = tags(db)
    records = list(read_records(log_dir(root), None))
    out = tmp_path / "rebuilt.sqlite"
    report = replay(out, records, start_txn=None, db_id=records[0].db_id)
    assert report.stopped is None and report.applied == len(records)
    assert integrity(out) == "ok" and tags(out) == want
    store.dismount()


def test_replay_twice_is_replay_once_and_any_earlier_suffix_converges(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    store = new_store(root)
    db = store.database("SG1", "DB1")
    for i in range(30):
        db.deliver_sync(msg(f"m{i}", 1000 * (i % 4)), [A])
        if i % 3 == 0:
            db.set_flags_sync(A, "INBOX", [i + 1], ["\\Flagged"])
    records = list(read_records(log_dir(root), None))
    db_id = records[0].db_id
    once = tmp_path / "once.sqlite"
    replay(once, records, start_txn=None, db_id=db_id)
    twice = tmp_path / "twice.sqlite"
    r1 = replay(twice, records, start_txn=None, db_id=db_id)
    r2 = replay(twice, records, start_txn=r1.txn, db_id=db_id)
    assert r2.applied == 0 and twice.read_bytes() == once.read_bytes()
    # A copy at change 20 with the log replayed from change 10 on: the same final file.
    mid = tmp_path / "mid.sqlite"
    head = [r for r in records if r.txn <= 20]
    replay(mid, head, start_txn=None, db_id=db_id)
    replay(mid, [r for r in records if r.txn > 10], start_txn=20, db_id=db_id)
    assert mid.read_bytes() == once.read_bytes()
    store.dismount()


def test_a_torn_last_record_is_ignored_and_cut_off(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    store = new_store(root)
    db = store.database("SG1", "DB1")
    db.deliver_sync(msg("kept"), [A])
    store.dismount()
    segment = segments(log_dir(root))[-1]
    good = segment.read_bytes()
    last = list(read_records(log_dir(root), None))[-1]
    torn = last.encode()[:-7]  # a crash in the middle of the write
    segment.write_bytes(good + torn)
    assert list(read_records(log_dir(root), None))[-1] == last
    bad_crc = bytearray(last.encode())
    bad_crc[-1] ^= 0xFF
    segment.write_bytes(good + bytes(bad_crc))
    assert list(read_records(log_dir(root), None))[-1] == last
    store = MailStore(root)
    store.mount(2)  # the next writer finds the tail and cuts the torn rest off
    store.database("SG1", "DB1").deliver_sync(msg("after"), [A])
    store.dismount()
    records = list(read_records(log_dir(root), None))
    assert [r.prev_txn for r in records[1:]] == [r.txn for r in records[:-1]]
    out = tmp_path / "out.sqlite"
    replay(out, records, start_txn=None, db_id=records[0].db_id)
    assert tags(out) == ["kept", "after"]


def test_the_log_is_fsynced_before_the_acknowledgement(tmp_path: Path) -> None:
    """A process delivering from 4 lanes is SIGKILLed at random moments; then the database
    file is deleted: last full backup + roll-forward gives back every acknowledged message."""
    root, backups = tmp_path / "mail", tmp_path / "backups"
    store = new_store(root)
    store.dismount()
    create_backup(root, backups, virtual_server="vs1")
    full = sorted(os.listdir(backups))[-1]
    env = dict(os.environ, PYTHONPATH=f"{Path(clustermail.__file__).parents[1]}:"
                                       f"{Path(__file__).parents[3]}")
    acked: list[str] = []
    rng = random.Random(7)
    for _ in range(5):
        child = subprocess.Popen([sys.executable, str(CHILD), str(root)], stdout=subprocess.PIPE,
                                 text=True, env=env)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + rng.uniform(0.2, 0.6)
        for line in child.stdout:
            acked.append(line.strip())
            if time.monotonic() > deadline:
                break
        os.kill(child.pid, signal.SIGKILL)
        acked += [line.strip() for line in child.stdout]  # acknowledged before the kill
        child.wait()
    assert len(acked) > 50
    lose(root)
    with pytest.raises(DatabaseLostError, match="is missing"):
        MailStore(root).mount(3)
    report = restore_database(root, backups, "SG1", "DB1", from_id=full)
    assert report.stopped is None and report.check == []
    store = MailStore(root)
    store.mount(3)
    have = set(tags(store.database("SG1", "DB1")))
    assert set(acked) <= have  # nothing acknowledged is missing
    store.dismount()


def test_a_missing_database_is_refused_with_what_to_do(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    store = new_store(root)
    store.database("SG1", "DB1").deliver_sync(msg("x"), [A])
    store.dismount()
    lose(root)
    with pytest.raises(DatabaseLostError) as err:
        MailStore(root).mount(2)
    text = err.value.describe("mail1")
    assert str(db_file(root)) in text and "is missing" in text
    assert "clustermail restore mail1 SG1/DB1 --from" in text
    assert "clustermail store reset mail1 SG1/DB1 --confirm" in text
    assert "last logged change" in text
    assert not db_file(root).exists()  # not re-created empty
    with pytest.raises(StoreError, match="--confirm"):
        reset_database(root, "SG1", "DB1", confirm=False)
    report = reset_database(root, "SG1", "DB1", confirm=True)
    assert any(".replaced-" in p.name for p in report.kept)  # the old log kept aside
    store = MailStore(root)
    store.mount(2)  # dial tone: a new empty database
    assert store.database("SG1", "DB1").list_mailboxes() == []
    store.dismount()


def test_another_file_in_its_place_is_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    new_store(a).dismount()
    new_store(b).dismount()
    shutil.copy(db_file(b), db_file(a))
    with pytest.raises(DatabaseLostError, match="holds another database"):
        MailStore(a).mount(2)


def test_a_file_behind_its_log_is_rolled_forward_at_mount(tmp_path: Path) -> None:
    """The WAL is fsynced by checkpoints, the log before every answer: a file that lost its
    last commits (power loss), or an older copy put in its place, catches up at mount."""
    root = tmp_path / "mail"
    store = new_store(root)
    store.database("SG1", "DB1").deliver_sync(msg("old"), [A])
    store.dismount()
    old = tmp_path / "old.sqlite"
    shutil.copy(db_file(root), old)
    store = MailStore(root)
    store.mount(2)
    for i in range(5):
        store.database("SG1", "DB1").deliver_sync(msg(f"new{i}"), [A])
    store.dismount()
    shutil.copy(old, db_file(root))
    store = MailStore(root)
    store.mount(3)
    db = store.database("SG1", "DB1")
    assert tags(db) == ["old"] + [f"new{i}" for i in range(5)]
    db.deliver_sync(msg("after"), [A])
    store.dismount()
    records = list(read_records(log_dir(root), None))
    assert [r.prev_txn for r in records[1:]] == [r.txn for r in records[:-1]]


def test_a_log_that_cannot_be_written_stops_writes_unacknowledged(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    store = new_store(root)
    db = store.database("SG1", "DB1")
    db.deliver_sync(msg("ok"), [A])
    journal = db.journal
    assert journal is not None
    journal.log._sync = True
    seg_fd = journal.log._seg_fd
    assert seg_fd is not None
    os.close(seg_fd)  # the log's disk goes away
    fd = os.open(os.devnull, os.O_RDONLY)  # hold the number: writes to it fail
    try:
        seen = db.change_count
        with pytest.raises(LogError):
            db.deliver_sync(msg("lost"), [A])
        # Committed before its log failed: in the file, and readers are told (an IMAP
        # session looks for news by the change count).
        assert db.change_count > seen
        assert len(db.list_messages(A, "INBOX")) == 2
        with pytest.raises(LogError):
            db.deliver_sync(msg("refused"), [A])  # no more writes once one failed
    finally:
        journal.log._seg_fd = None
        os.close(fd)
    store.dismount()


def test_log_records_survive_in_order_across_segments(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("clustermail.mail.store.translog.log.SEGMENT_BYTES", 64 * 1024)
    root = tmp_path / "mail"
    store = new_store(root)
    db = store.database("SG1", "DB1")
    for i in range(40):
        db.deliver_sync(msg(f"m{i}", 5000), [A])
    want = tags(db)
    store.dismount()
    assert len(segments(log_dir(root))) > 3
    records = list(read_records(log_dir(root), None))
    out = tmp_path / "out.sqlite"
    replay(out, records, start_txn=None, db_id=records[0].db_id)
    assert tags(out) == want
    with DatabaseLog(log_dir(root), records[0].db_id) as dblog:
        gone = dblog.truncate(records[-1].txn)
    assert gone and len(segments(log_dir(root))) == 1
