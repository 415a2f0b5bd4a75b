from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clustermail.mail.store import MailboxDatabase

USERS = ("alice@example.test", "bob@example.test", "carol@example.test")


def message(n: int = 0, size: int = 0, subject: str = "hello") -> bytes:
    head = f"From: sender@example.test\r\nTo: alice@example.test\r\nSubject: {subject} {n}\r\n"
    body = f"message number {n}\r\n" + "x" * size
    return (head + "\r\n" + body + "\r\n").encode()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "SG1" / "DB1.sqlite"


@pytest.fixture
def db(db_path: Path) -> Iterator[MailboxDatabase]:
    db_path.parent.mkdir()
    database = MailboxDatabase(db_path)
    database.mount(1)
    for user in USERS:
        database.create_mailbox_sync(user)
    yield database
    database.dismount()
