"""STORE of system flags alone takes a shorter path (one UPDATE … RETURNING instead of
reading the rows first): it must change exactly what the general path changes, report the
same messages and modseqs, and keep the folder index true."""

from __future__ import annotations

import random
from pathlib import Path

from clustermail.mail.store import MailboxDatabase, folders, index, messages, schema
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


def test_one_message_index_update_patches_the_right_entry(tmp_path: Path) -> None:
    """index.update of a single UID (patched in place) across chunk boundaries, for a UID
    that is not there, and against updating the same UIDs two at a time (decoded)."""
    conn = schema.connect(tmp_path / "i.sqlite", create=True)
    try:
        rows = [(uid, 0, 100 + uid, 1, 0) for uid in range(1, 400) if uid % 7]  # gaps
        index.append(conn, 1, rows)
        index.append(conn, 2, rows)
        present = [r[0] for r in rows]
        picked = [1, 2, 119, 120, 121, 122, 240, 241, present[-1], 7, 400]  # 7, 400: absent
        for n, uid in enumerate(picked):
            index.update(conn, 1, {uid: (n + 1, 1000 + n)})
        for a, b in zip(picked[::2], [*picked[1::2], 10_000], strict=True):
            na, nb = picked.index(a), picked.index(b) if b in picked else 0
            index.update(conn, 2, {a: (na + 1, 1000 + na), b: (nb + 1, 1000 + nb)})
        one, two = index.load(conn, 1), index.load(conn, 2)
        assert list(one.uids) == present == list(two.uids)
        assert list(one.flags) == list(two.flags) and list(one.modseqs) == list(two.modseqs)
        assert list(one.sizes) == [r[2] for r in rows]
        for n, uid in enumerate(picked):
            if uid in present:
                i = present.index(uid)
                assert (one.flags[i], one.modseqs[i]) == (n + 1, 1000 + n)
    finally:
        conn.close()
