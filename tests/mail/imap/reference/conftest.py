from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clustermail.mail.store import MailboxDatabase
from tests.mail.imap.reference import dovecot
from tests.mail.imap.reference.runner import PASSWORD, SCRIPTS
from tests.support.imap_server import ServerThread

SCRIPT_PATHS = sorted(SCRIPTS.glob("*.imap"))
USERS = [f"{p.stem}@example.test" for p in SCRIPT_PATHS]


@pytest.fixture(scope="session")
def reference_dovecot() -> Iterator[dovecot.Dovecot]:
    if not dovecot.available():
        pytest.skip("dovecot-imapd is not installed (scripts/install-system-deps.sh)")
    server = dovecot.Dovecot(USERS, PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def reference_ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    path: Path = tmp_path_factory.mktemp("imapref") / "DB1.sqlite"
    db = MailboxDatabase(path)
    db.mount(1)
    for user in USERS:
        db.create_mailbox_sync(user)
    server = ServerThread(db, USERS)
    try:
        yield server
    finally:
        server.stop()
        db.dismount()
