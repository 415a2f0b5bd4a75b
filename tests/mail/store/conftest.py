"""Fixtures of the mail store tests: one mounted database with three mailboxes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clustermail.mail.store import MailboxDatabase
from tests.support.mail_data import USERS


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
