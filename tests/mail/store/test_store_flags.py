"""STORE of system flags alone takes a shorter path (one UPDATE … RETURNING instead of
reading the rows first): it must change exactly what the general path changes, report the
same messages and modseqs, and keep the folder index true."""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path
from typing import Any

from clustermail.mail.store import CopyResult, MailboxDatabase, folders, index, messages, schema
from clustermail.mail.store.writer import Tx
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


def assert_same_and_sound(one: MailboxDatabase, other: MailboxDatabase, folders: list[str]) -> None:
    """The two databases hold the same rows and folder indexes, and each passes its check."""
    assert table(one.path) == table(other.path)
    for folder in folders:
        first, second = one.list_messages(A, folder), other.list_messages(A, folder)
        assert list(first.uids) == list(second.uids)
        assert list(first.flags) == list(second.flags)
        assert list(first.modseqs) == list(second.modseqs)
        assert first.keywords == second.keywords
    for db in (one, other):
        report = db.check_sync()
        assert report.ok, report.problems


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
        assert_same_and_sound(short, general, ["INBOX"])
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


async def test_flag_changes_sharing_a_transaction_match_one_transaction_each(
    tmp_path: Path,
) -> None:
    """Flag changes of one folder in one batch reuse the folder row and index chunk the
    previous one wrote (while nothing else wrote since): with copies in, expunges,
    keyword changes, failing jobs and other folders' changes in between, the batch leaves
    the same rows, modseqs and index as the same changes each committed alone."""
    dbs = []
    for name in ("batched", "alone"):
        (tmp_path / name).mkdir()
        db = MailboxDatabase(tmp_path / name / "db.sqlite")
        db.mount(1)
        db.create_mailbox_sync(A)
        for n in range(300):  # three index chunks
            db.deliver_sync(message(n), [A])
        db.copy_sync(A, "INBOX", range(1, 40), "Archive")
        dbs.append(db)
    batched, alone = dbs
    rnd = random.Random(5)
    steps: list[tuple[str, object]] = []
    for _ in range(120):
        x = rnd.random()
        uid = rnd.choice([*range(1, 300, 7), *range(110, 130), 999])  # 999: no such message
        if x < 0.05:
            steps.append(("copy", rnd.randint(1, 39)))  # a new message in INBOX
        elif x < 0.08:
            steps.append(("expunge", uid))
        elif x < 0.12:
            steps.append(("missing folder", uid))
        elif x < 0.18:
            steps.append(("keyword", uid))
        elif x < 0.25:
            steps.append(("archive", rnd.randint(1, 45)))
        else:
            steps.append((rnd.choice(["add", "remove", "set"]), uid))

    def run(db: MailboxDatabase, step: tuple[str, object]) -> Any:
        kind, arg = step
        assert isinstance(arg, int)
        if kind == "copy":
            return db.copy(A, "Archive", [arg], "INBOX")
        if kind == "expunge":
            return db.expunge(A, "INBOX", [arg])
        if kind == "missing folder":
            return db.set_flags(A, "Nope", [arg], ["\\Seen"], "add")
        if kind == "keyword":
            return db.set_flags(A, "INBOX", [arg], ["$Work"], "add")
        if kind == "archive":
            return db.set_flags(A, "Archive", [arg], ["\\Flagged"], "add")
        return db.set_flags(A, "INBOX", [arg], ["\\Flagged"], kind)  # type: ignore[arg-type]

    try:
        entered, release = threading.Event(), threading.Event()

        def hold(tx: Tx) -> None:
            entered.set()
            assert release.wait(10)

        holder = batched._submit(hold)  # the steps queue behind it: one batch
        assert await asyncio.to_thread(entered.wait, 10)
        pending = [asyncio.ensure_future(run(batched, step)) for step in steps]
        await asyncio.sleep(0)  # every step submitted
        release.set()
        await asyncio.to_thread(holder.result, 10)
        got = await asyncio.gather(*pending, return_exceptions=True)
        assert batched.stats.largest_batch >= len(steps)
        want = []
        for step in steps:
            try:
                want.append(await run(alone, step))
            except Exception as exc:
                want.append(exc)
        for a, b in zip(got, want, strict=True):
            assert type(a) is type(b)
            if isinstance(a, CopyResult) and isinstance(b, CopyResult):
                assert (a.source_uids, a.dest_uids) == (b.source_uids, b.dest_uids)
            elif not isinstance(a, Exception):
                assert a == b  # StoreResult (modseq, changes), expunged UIDs
        assert_same_and_sound(batched, alone, ["INBOX", "Archive"])
    finally:
        for db in dbs:
            db.dismount()
