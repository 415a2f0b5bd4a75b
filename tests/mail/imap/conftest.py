"""Fixtures of the IMAP server tests: a database with two mailboxes, a server on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clustermail.mail.store import MailboxDatabase
from tests.support.imap_server import USERS, ServerThread


@pytest.fixture
def db(tmp_path: Path) -> Iterator[MailboxDatabase]:
    (tmp_path / "SG1").mkdir()
    database = MailboxDatabase(tmp_path / "SG1" / "DB1.sqlite")
    database.mount(1)
    for user in USERS:
        database.create_mailbox_sync(user)
    yield database
    database.dismount()


@pytest.fixture
def server(db: MailboxDatabase) -> Iterator[ServerThread]:
    srv = ServerThread(db, USERS)
    try:
        yield srv
    finally:
        srv.stop()
