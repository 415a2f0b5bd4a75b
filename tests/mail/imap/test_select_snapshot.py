"""SELECT from the database's shared folder snapshot: the snapshot follows every change
(deliveries, flags, keywords, expunges, \\Recent claims) and no session's view of the folder
leaks into the snapshot or into another session's view."""

from __future__ import annotations

import random
import re

from clustermail.mail.imap.mailbox_view import MailboxView
from clustermail.mail.store import MailboxDatabase, folders, schema
from clustermail.mail.store import flags as f
from clustermail.mail.store.snapshot import SnapshotCache
from tests.support.imap_lines import ALICE, Client, msg
from tests.support.imap_server import ServerThread


def number(lines: list[bytes], word: bytes) -> int | None:
    for line in lines:
        m = re.match(rb"\* (\d+) " + word + rb"$", line)
        if m:
            return int(m.group(1))
    return None


def unseen(lines: list[bytes]) -> int | None:
    for line in lines:
        m = re.search(rb"\[UNSEEN (\d+)\]", line)
        if m:
            return int(m.group(1))
    return None


def without_recent(db: MailboxDatabase, folder: str = "INBOX") -> list[tuple[int, int, int, int]]:
    fresh = db.list_messages(ALICE, folder)
    return [(m.uid, m.flags & ~f.RECENT, m.size, m.internaldate) for m in fresh]


def snapshot_rows(db: MailboxDatabase, folder: str = "INBOX") -> list[tuple[int, int, int, int]]:
    listing = db.folder_snapshot(ALICE, folder).listing()  # \Recent: see snap.recent
    return [(m.uid, m.flags & ~f.RECENT, m.size, m.internaldate) for m in listing]


def test_snapshot_follows_every_kind_of_change(db: MailboxDatabase) -> None:
    rnd = random.Random(16)
    db.create_folder_sync(ALICE, "Other")
    for n in range(150):
        db.deliver_sync(msg(n), [ALICE])
    first = db.folder_snapshot(ALICE, "INBOX")
    assert db.folder_snapshot(ALICE, "INBOX") is first  # nothing changed: shared as is
    for step in range(60):
        uids = list(db.list_messages(ALICE, "INBOX").uids)
        pick = rnd.sample(uids, min(len(uids), rnd.randint(1, 4)))
        kind = step % 5
        if kind == 0:
            db.deliver_sync(msg(1000 + step), [ALICE])
        elif kind == 1:
            db.set_flags_sync(ALICE, "INBOX", pick, ["\\Seen", f"$kw{step % 3}"], "add")
        elif kind == 2:
            db.set_flags_sync(ALICE, "INBOX", pick, ["\\Deleted"], "add")
            db.expunge_sync(ALICE, "INBOX")
        elif kind == 3:
            db.copy_sync(ALICE, "INBOX", pick, "Other")
            db.move_sync(ALICE, "Other", db.list_messages(ALICE, "Other").uids[:1], "INBOX")
        else:
            db.set_flags_sync(ALICE, "INBOX", pick, [], "set")
        if step % 3 == 0:
            db.claim_recent_sync(ALICE, "INBOX")
        snap = db.folder_snapshot(ALICE, "INBOX")
        assert snapshot_rows(db) == without_recent(db)
        assert snap.keywords == db.list_messages(ALICE, "INBOX").keywords
        fresh = db.list_messages(ALICE, "INBOX")
        still_recent = {m.uid for m in fresh if m.flags & f.RECENT}
        assert snap.recent_exact and snap.recent == still_recent
        assert snapshot_rows(db, "Other") == without_recent(db, "Other")


def test_a_view_never_changes_the_snapshot(db: MailboxDatabase) -> None:
    for n in range(5):
        db.deliver_sync(msg(n), [ALICE])
    snap = db.folder_snapshot(ALICE, "INBOX")
    before = snapshot_rows(db)
    view = MailboxView(
        "INBOX",
        snap.listing(),
        uidvalidity=snap.uidvalidity,
        uidnext=snap.uidnext,
        modseq=snap.highestmodseq,
        read_only=False,
    )
    view.set_flags(view.uids[0], f.SEEN | f.FLAGGED, "$private")
    view.expunge_now([view.uids[1]])
    view.flags[0] = 0xFFFF
    assert db.folder_snapshot(ALICE, "INBOX") is snap
    assert snapshot_rows(db) == before
    assert snap.keywords == {}


def test_unannounced_expunges_stay_in_the_sessions_view(
    server: ServerThread, db: MailboxDatabase
) -> None:
    for n in range(4):
        db.deliver_sync(msg(n), [ALICE])
    a, b = Client(server), Client(server)
    try:
        assert number(a.cmd("SELECT INBOX"), b"EXISTS") == 4
        assert number(b.cmd("SELECT INBOX"), b"EXISTS") == 4
        b.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
        assert b.cmd("EXPUNGE") == [b"* 1 EXPUNGE"]
        db.deliver_sync(msg(9), [ALICE])
        # A third session selects the folder now: the shared snapshot moved on...
        c = Client(server)
        fresh = c.cmd("SELECT INBOX")
        assert number(fresh, b"EXISTS") == 4 and number(fresh, b"RECENT") == 1
        # ...but A is not told of the expunge during FETCH (RFC 3501 §7.4.1): message 1
        # is still there for it, with the UID it had, and 4 is still its last message.
        fetched = a.cmd("FETCH 1:4 (UID)")
        assert fetched[:4] == [b"* %d FETCH (UID %d)" % (n, n) for n in range(1, 5)]
        assert not any(b"EXPUNGE" in line for line in fetched)
        assert b"* 5 EXISTS" in fetched  # new mail may be announced; expunges may not
        assert a.cmd("NOOP")[0] == b"* 1 EXPUNGE"
        assert a.cmd("FETCH 4 (UID)") == [b"* 4 FETCH (UID 5)"]
        # C stores a flag: its view only; A hears of it through the store, not the cache.
        c.cmd("STORE 1 +FLAGS (\\Flagged)")
        assert a.cmd("NOOP") == [b"* 1 FETCH (FLAGS (\\Flagged \\Recent))"]  # A claimed it
        c.close()
    finally:
        a.close()
        b.close()


def test_select_sees_deliveries_and_flag_changes_of_others(
    server: ServerThread, db: MailboxDatabase
) -> None:
    for n in range(6):
        db.deliver_sync(msg(n), [ALICE])
    db.claim_recent_sync(ALICE, "INBOX")
    a = Client(server)
    try:
        first = a.cmd("SELECT INBOX")
        assert number(first, b"EXISTS") == 6 and unseen(first) == 1
        assert number(first, b"RECENT") == 0
        db.set_flags_sync(ALICE, "INBOX", [1, 2], ["\\Seen"], "add")
        db.set_flags_sync(ALICE, "INBOX", [3], ["$Work"], "add")
        db.deliver_sync(msg(7), [ALICE])
        again = a.cmd("SELECT INBOX")
        assert number(again, b"EXISTS") == 7 and unseen(again) == 3
        assert number(again, b"RECENT") == 1
        assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)" in again
        assert a.cmd("UID FETCH 3 FLAGS")[0] == b"* 3 FETCH (UID 3 FLAGS ($Work))"
        # The new message was claimed by that SELECT: nobody else sees it as recent.
        assert number(a.cmd("EXAMINE INBOX"), b"RECENT") == 0
        assert number(a.cmd("SELECT INBOX"), b"RECENT") == 0
        db.set_flags_sync(ALICE, "INBOX", [1, 2, 4, 5, 6, 7], ["\\Seen"], "add")
        db.set_flags_sync(ALICE, "INBOX", [3], ["\\Seen"], "add")
        assert unseen(a.cmd("SELECT INBOX")) is None
        db.set_flags_sync(ALICE, "INBOX", [2], ["\\Seen"], "remove")
        db.set_flags_sync(ALICE, "INBOX", [1], ["\\Deleted"], "add")
        db.expunge_sync(ALICE, "INBOX")
        last = a.cmd("EXAMINE INBOX")
        assert number(last, b"EXISTS") == 6 and unseen(last) == 1
    finally:
        a.close()


def test_examine_shows_recent_without_claiming_it(
    server: ServerThread, db: MailboxDatabase
) -> None:
    for n in range(3):
        db.deliver_sync(msg(n), [ALICE])
    db.folder_snapshot(ALICE, "INBOX")  # cached while the messages are \Recent
    a = Client(server)
    try:
        assert number(a.cmd("EXAMINE INBOX"), b"RECENT") == 3
        assert number(a.cmd("EXAMINE INBOX"), b"RECENT") == 3  # EXAMINE claims nothing
        assert number(a.cmd("SELECT INBOX"), b"RECENT") == 3
        assert number(a.cmd("EXAMINE INBOX"), b"RECENT") == 0
        db.deliver_sync(msg(5), [ALICE])
        db.claim_recent_sync(ALICE, "INBOX")  # claimed elsewhere, no modseq change
        assert number(a.cmd("EXAMINE INBOX"), b"RECENT") == 0
    finally:
        a.close()


def test_a_claim_racing_a_snapshot_read_is_not_trusted(db: MailboxDatabase) -> None:
    for n in range(2):
        db.deliver_sync(msg(n), [ALICE])
    cache = SnapshotCache()
    conn = schema.connect(db.path, create=False)
    try:
        row = folders.get(conn, ALICE, "INBOX")
        claims = cache.claims  # read before the snapshot's transaction...
        cache.recent_claimed(row.id, [])  # ...and a claim is reported meanwhile
        racing = cache.get(conn, row, claims)
        assert racing.recent == {1, 2} and not racing.recent_exact
        cached = cache.get(conn, row, cache.claims)
        assert cached is not racing and cached.recent_exact
        assert cache.get(conn, row, cache.claims) is cached
        cache.recent_claimed(row.id, [1])
        assert cache.get(conn, row, cache.claims).recent == {2}
    finally:
        conn.close()


def test_a_repair_drops_the_snapshots(db: MailboxDatabase) -> None:
    db.deliver_sync(msg(1), [ALICE])
    snap = db.folder_snapshot(ALICE, "INBOX")
    db.check_sync(repair=True)  # may rewrite listings without a new modseq
    again = db.folder_snapshot(ALICE, "INBOX")
    assert again is not snap and len(again) == 1
