"""fetch_raw's one-statement read: the bytes as delivered, INBOX in any case, other
folders, and on a miss the same errors as before (which of mailbox, folder, message)."""

from __future__ import annotations

import pytest

from clustermail.mail.store import (
    FolderNotFoundError,
    MailboxDatabase,
    MailboxNotFoundError,
    MessageNotFoundError,
    NotMountedError,
)
from tests.support.mail_data import USERS, message

A, B = USERS[0], USERS[1]


def test_fetch_raw_hits_and_misses(db: MailboxDatabase) -> None:
    raw = message(1)
    db.deliver_sync(raw, [A])
    uid = db.append_sync(A, "Archive", message(2)).uid
    assert db.fetch_raw(A, "INBOX", 1) == raw
    assert db.fetch_raw(A, "inbox", 1) == raw
    assert db.fetch_raw(A, "Archive", uid) == message(2)
    with pytest.raises(MessageNotFoundError):
        db.fetch_raw(A, "INBOX", 2)
    with pytest.raises(MessageNotFoundError):
        db.fetch_raw(B, "INBOX", 1)  # another mailbox's message of that UID
    with pytest.raises(FolderNotFoundError):
        db.fetch_raw(A, "Nope", 1)
    with pytest.raises(MailboxNotFoundError):
        db.fetch_raw("nobody@example.test", "INBOX", 1)


def test_fetch_raw_after_expunge_and_dismount(db: MailboxDatabase) -> None:
    db.deliver_sync(message(1), [A])
    db.set_flags_sync(A, "INBOX", [1], ["\\Deleted"])
    db.expunge_sync(A, "INBOX")
    with pytest.raises(MessageNotFoundError):
        db.fetch_raw(A, "INBOX", 1)
    db.dismount()
    with pytest.raises(NotMountedError):
        db.fetch_raw(A, "INBOX", 1)
