"""check/repair finds and fixes planted inconsistencies."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from clustermail.mail.store import MailboxDatabase, check
from tests.support.mail_data import USERS, message

A, B, _ = USERS


def plant(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for stmt in statements:
        conn.execute(stmt)
    conn.close()


def test_clean_database_is_clean(db: MailboxDatabase) -> None:
    db.deliver_sync(message(1), [A, B])
    report = check(db)
    assert report.ok and report.problems == [] and report.lines() == [f"check {db.path}: clean"]


def test_offline_check_finds_and_repairs(db: MailboxDatabase, db_path: Path) -> None:
    for n in range(5):
        db.deliver_sync(message(n), [A, B])
    db.dismount()
    plant(
        db_path,
        "UPDATE body SET refcount = 7 WHERE id = 1",  # wrong refcount
        "INSERT INTO body (digest, size, refcount, structure, raw) "
        "VALUES (x'00', 3, 1, '{}', x'616263')",  # orphan body
        "UPDATE folder SET uidnext = 2 "
        "WHERE id = (SELECT id FROM folder WHERE name = 'INBOX' LIMIT 1)",
        "UPDATE folder SET highestmodseq = 1 WHERE name = 'INBOX'",
        "UPDATE mailbox SET used_bytes = 1",
        "UPDATE body SET structure = 'not json' WHERE id = 2",
        "UPDATE folder_chunk SET data = x'' WHERE id = 1",
    )
    report = check(db_path)
    assert not report.ok
    text = "\n".join(report.problems)
    for needle in (
        "refcount 7 but 2 references",
        "orphan",
        "UIDNEXT",
        "HIGHESTMODSEQ",
        "usage says",
        "cached structure unusable",
        "listing index",
    ):
        assert needle in text, needle
    assert report.repairs == []
    fixed = check(db_path, repair=True)
    assert len(fixed.repairs) == len(fixed.problems)
    assert check(db_path).ok
    db.mount(1)
    assert db.fetch_structure(A, "INBOX", 2).envelope[1] == "hello 1"
    assert db.deliver_sync(message(9), [A]).recipients[0].uid == 6  # UIDNEXT was repaired
    assert db.quota(A).used_messages == 6
    assert check(db).ok


def test_repair_while_mounted(db: MailboxDatabase, db_path: Path) -> None:
    db.deliver_sync(message(1), [A])
    plant(db_path, "UPDATE body SET refcount = 0")
    report = check(db, repair=True)
    assert report.repairs == ["body 1: refcount set to 1"]
    assert check(db).ok
