"""STORE of system flags alone takes a shorter path (one UPDATE … RETURNING instead of
reading the rows first): it must change exactly what the general path changes, report the
same messages and modseqs, and keep the folder index true."""

from __future__ import annotations

import random
from pathlib import Path

from clustermail.mail.store import MailboxDatabase, folders, messages, schema
from tests.support.mail_data import USERS, message

A = USERS[0]
FLAGS = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"]
#: UNCHANGEDSINCE above every modseq: no message is held back, but the general path runs
ALWAYS = 2**62


def table(path: Path) -> list[tuple[int, int, str | None, int]]:
    conn = schema.connect(path, create=False)
    try:
        row = folders.get(conn, A, "INBOX")
        return [(r[0], r[2], r[3], r[6]) for r in messages.rows(conn, row)]
    finally:
        conn.close()


def test_system_flag_stores_change_what_the_general_path_changes(tmp_path: Path) -> None:
    dbs = []
    for name in ("short", "general"):
        (tmp_path / name).mkdir()
        db = MailboxDatabase(tmp_path / name / "db.sqlite")
        db.mount(1)
        db.create_mailbox_sync(A)
        for n in range(40):
            db.deliver_sync(message(n), [A])
        db.claim_recent_sync(A, "INBOX")
        for n in range(41, 45):  # some messages keep \Recent
            db.deliver_sync(message(n), [A])
        dbs.append(db)
    short, general = dbs
    rnd = random.Random(3)
    try:
        for _ in range(400):
            uids = rnd.sample(range(1, 50), rnd.choice([1, 1, 2, 5]))  # some do not exist
            mode = rnd.choice(["add", "remove", "set"])
            if rnd.random() < 0.2:  # keywords: both take the general path
                names = [rnd.choice(["$Work", "$Home"])]
                for db in dbs:
                    db.set_flags_sync(A, "INBOX", uids, names, mode)  # type: ignore[arg-type]
                continue
            names = rnd.sample(FLAGS, rnd.randint(0, 2))
            got = short.set_flags_sync(A, "INBOX", uids, names, mode)  # type: ignore[arg-type]
            want = general.set_flags_sync(
                A, "INBOX", uids, names, mode, unchanged_since=ALWAYS  # type: ignore[arg-type]
            )
            assert got == want
        assert table(short.path) == table(general.path)
        first, second = (db.list_messages(A, "INBOX") for db in dbs)  # the folder index
        assert list(first.flags) == list(second.flags)
        assert list(first.modseqs) == list(second.modseqs)
        for db in dbs:
            report = db.check_sync()
            assert report.ok, report.problems
    finally:
        for db in dbs:
            db.dismount()
