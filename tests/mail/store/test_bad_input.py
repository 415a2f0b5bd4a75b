"""Bad input gets a clear error and nothing is lost (safety rule 4)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from clustermail.mail.store import (
    DatabaseOpenError,
    MailboxDatabase,
    MessageTooLargeError,
    check,
)
from tests.support.mail_data import USERS

A = USERS[0]

MALFORMED = [
    b"",
    b"\r\n",
    b"no headers at all, just text\r\nand more\r\n",
    b"Subject: only a header",
    b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: message/rfc822\r\n\r\n",
    b"From: \xff\xfe\xfd <@@@>\r\nTo: ,,,;;;<<<>>>\r\n"
    b"Subject: \x00\x01\x02\r\n\r\n\xff\x00junk\r\rcr",
    b"Subject: lf only\nContent-Type: text/plain\n\nbody\n",
    b"X" * 100_000,
    b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
    + b"".join(b"--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n" for _ in range(500)),
]


@pytest.mark.parametrize("raw", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_messages_are_stored_cleanly(db: MailboxDatabase, raw: bytes) -> None:
    res = db.deliver_sync(raw, [A])
    uid = res.recipients[0].uid
    assert uid is not None
    stored = db.fetch_raw(A, "INBOX", uid)
    assert stored.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")
    structure = db.fetch_structure(A, "INBOX", uid)
    assert structure.size == len(stored)
    assert db.list_messages(A, "INBOX")[0].size == len(stored)


def test_message_over_the_limit_is_refused(db: MailboxDatabase) -> None:
    before = db.stats.commits
    with pytest.raises(MessageTooLargeError) as info:
        db.deliver_sync(b"X" * (50 * 1024 * 1024), [A])
    assert info.value.limit == 35 * 1024 * 1024
    assert "exceeds the maximum message size" in str(info.value)
    assert db.stats.commits == before
    assert db.status(A, "INBOX").messages == 0


async def test_async_delivery_over_the_limit(db: MailboxDatabase) -> None:
    db.update_settings_sync(max_message_bytes=1000)
    with pytest.raises(MessageTooLargeError):
        await db.deliver(b"X" * 2000, [A])
    with pytest.raises(MessageTooLargeError):
        await db.append(A, "INBOX", b"X" * 2000)


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a database at all\n" * 100,
        b"\x00" * 4096,
        b"SQLite format 3\x00" + b"\xff" * 200,
    ],
    ids=["text", "zeros", "bad-header"],
)
def test_corrupt_file_gives_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "DB1.sqlite"
    path.write_bytes(content)
    with pytest.raises(DatabaseOpenError) as info:
        MailboxDatabase(path).mount(1)
    assert str(path) in str(info.value)
    with pytest.raises(DatabaseOpenError):
        check(path)


def test_foreign_sqlite_file_and_missing_file(tmp_path: Path) -> None:
    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(DatabaseOpenError, match="not a clustermail mailbox database"):
        MailboxDatabase(foreign).mount(1)
    with pytest.raises(DatabaseOpenError, match="does not exist"):
        MailboxDatabase(tmp_path / "missing.sqlite", create=False).mount(1)


def test_damaged_pages_are_reported_not_raised(db: MailboxDatabase, db_path: Path) -> None:
    for n in range(300):
        db.deliver_sync(b"Subject: %d\r\n\r\n" % n + b"y" * 3000, [A])
    db.dismount()
    data = bytearray(db_path.read_bytes())
    page = 4096
    for p in range(3, len(data) // page, 4):
        data[p * page + 100 : p * page + 400] = b"\xa5" * 300
    db_path.write_bytes(bytes(data))
    report = check(db_path)
    assert not report.ok
    assert report.lines()[0].endswith("PROBLEMS FOUND")
