"""Quota usage counts each message's stored MIME structure (the analysis kept for
ENVELOPE and BODYSTRUCTURE) as well as its size, on a real database file: a message built
to have a large structure pays for it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from clustermail.mail.store import MailboxDatabase, QuotaExceededError, QuotaLimits, mime
from tests.support.mail_data import USERS, message

A, B, _ = USERS


def many_parts(parts: int = 40) -> bytes:
    """A multipart message whose structure is larger than its text parts."""
    head = (
        "From: sender@example.test\r\nTo: alice@example.test\r\nSubject: parts\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
    )
    body = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\npart {n}\r\n" for n in range(parts))
    return (head + body + "--b--\r\n").encode()


def stored_structure_bytes(path: Path) -> dict[int, int]:
    """Body size → structure bytes, read from the database file itself."""
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT size, length(CAST(structure AS BLOB)) FROM body"))


def charge(raw: bytes) -> int:
    return len(raw) + len(mime.analyze(raw).to_json().encode())


def test_usage_counts_size_and_structure(db: MailboxDatabase, db_path: Path) -> None:
    raw = many_parts()
    db.deliver_sync(raw, [A])
    structure = stored_structure_bytes(db_path)[len(raw)]
    assert structure > 0
    assert db.quota(A).used_bytes == len(raw) + structure == charge(raw)
    assert db.quota(A).used_messages == 1
    db.copy_sync(A, "INBOX", [1], "Archive")  # each copy counts (the body is shared)
    assert db.quota(A).used_bytes == 2 * charge(raw)
    db.move_sync(A, "Archive", [1], "Trash")
    assert db.quota(A).used_bytes == 2 * charge(raw)
    db.set_flags_sync(A, "INBOX", [1], ["\\Deleted"])
    db.expunge_sync(A, "INBOX")
    db.set_flags_sync(A, "Trash", [1], ["\\Deleted"])
    db.expunge_sync(A, "Trash")
    assert (db.quota(A).used_bytes, db.quota(A).used_messages) == (0, 0)
    assert not db.check_sync().problems  # check computes usage the same way


def test_a_message_whose_structure_does_not_fit_is_refused(db: MailboxDatabase) -> None:
    first, second = message(1, 500), many_parts()
    db.deliver_sync(first, [A])
    used = db.quota(A).used_bytes
    # room for the second message's bytes, not for its bytes and its structure
    db.set_quota_sync(A, QuotaLimits(prohibit_send_receive=used + charge(second) - 1))
    assert used + len(second) < used + charge(second) - 1
    refused = db.deliver_sync(second, [A]).recipients[0]
    assert not refused.delivered and refused.code == "5.2.2"
    assert f"{used} + {charge(second)} bytes" in refused.reason
    with pytest.raises(QuotaExceededError):
        db.append_sync(A, "INBOX", second)
    # a copy counts its structure too: one byte short of that is refused
    db.set_quota_sync(A, QuotaLimits(prohibit_send_receive=2 * used - 1))
    with pytest.raises(QuotaExceededError):
        db.copy_sync(A, "INBOX", [1], "Archive")
    db.set_quota_sync(A, QuotaLimits(prohibit_send_receive=2 * used))
    db.copy_sync(A, "INBOX", [1], "Archive")
    assert db.quota(A).used_bytes == 2 * used
    # exactly at the limit is allowed, as before
    db.set_quota_sync(A, QuotaLimits(prohibit_send_receive=2 * used + charge(second)))
    assert db.deliver_sync(second, [A]).recipients[0].delivered
    assert db.quota(A).used_bytes == 2 * used + charge(second)
    assert db.deliver_sync(second, [B]).recipients[0].delivered  # B: no quota


def test_a_database_written_before_is_counted_again_at_mount(
    db: MailboxDatabase, db_path: Path
) -> None:
    raw = many_parts()
    db.deliver_sync(raw, [A])
    db.dismount()
    with sqlite3.connect(db_path) as conn:  # as an older version left it: bytes only
        conn.execute("UPDATE mailbox SET used_bytes = ? WHERE name = ?", (len(raw), A))
        conn.execute("DELETE FROM meta WHERE key = 'usage_counts_structure'")
    db.mount(2)
    assert db.quota(A).used_bytes == charge(raw)
    db.dismount()
    with sqlite3.connect(db_path) as conn:  # counted once: a later mount leaves it alone
        conn.execute("UPDATE mailbox SET used_bytes = 7 WHERE name = ?", (A,))
    db.mount(3)
    assert db.quota(A).used_bytes == 7


def test_a_delivery_charges_what_the_stored_body_holds(db: MailboxDatabase, db_path: Path) -> None:
    """Delivery takes each copy's charge from the stored body row (one statement with its
    INSERT): a body already stored with another structure (written by an earlier analysis)
    is charged as stored, so usage stays what check computes, for every recipient."""
    raw = many_parts(5)
    db.deliver_sync(raw, [A])
    with sqlite3.connect(db_path) as conn:  # as an earlier version of the analysis left it
        conn.execute("UPDATE body SET structure = structure || '          '")
        conn.execute("UPDATE mailbox SET used_bytes = used_bytes + 10 WHERE name = ?", (A,))
    stored = stored_structure_bytes(db_path)[len(raw)]
    assert stored == charge(raw) - len(raw) + 10
    db.create_folder_sync(B, "Filed")
    result = db.deliver_sync(raw, [A, B], "Filed")  # A has no such folder: INBOX gets it
    assert [(r.mailbox, r.folder, r.uid) for r in result.delivered] == [
        (A, "INBOX", 2), (B, "Filed", 1)
    ]
    assert db.quota(A).used_bytes == 2 * (len(raw) + stored)
    assert db.quota(B).used_bytes == len(raw) + stored
    assert not db.check_sync().problems
