"""When a session learns of changes: a command looks for news only when something was
committed since it last looked (MailboxDatabase.change_count), yet every change answered
to anyone before a command starts is reported by it, held-back expunges come when they are
allowed, and a view that reads a shared snapshot in place never changes it."""

from __future__ import annotations

import socket
import time

from clustermail.mail.imap.mailbox_view import MailboxView
from clustermail.mail.imap.session import SessionConfig
from clustermail.mail.store import MailboxDatabase
from clustermail.mail.store import flags as f
from tests.support.imap_lines import ALICE, Client, fetches, msg, two_sessions
from tests.support.imap_server import PASSWORD, USERS, ServerThread


def test_nothing_committed_nothing_sent(server: ServerThread, db: MailboxDatabase) -> None:
    for n in range(3):
        db.deliver_sync(msg(n), [ALICE])
    a = Client(server)
    a.cmd("SELECT INBOX")
    assert a.cmd("NOOP") == [] and a.cmd("NOOP") == []
    a.close()


def test_change_answered_elsewhere_is_seen_by_the_next_command(
    server: ServerThread, db: MailboxDatabase
) -> None:
    """A change acknowledged to its caller (here a thread, no IMAP session and no hub
    notification to wait for) is in the very next command's answer, every time."""
    for n in range(3):
        db.deliver_sync(msg(n), [ALICE])
    a = Client(server)
    a.cmd("SELECT INBOX")
    for round_ in range(20):
        add = round_ % 2 == 0
        db.set_flags_sync(ALICE, "INBOX", [2], ["\\Flagged"], "add" if add else "remove")
        got = fetches(a.cmd("NOOP"))
        assert (b"\\Flagged" in got[2]) == add, (round_, got)
    db.deliver_sync(msg(9), [ALICE])
    assert b"* 4 EXISTS" in a.cmd("NOOP")
    a.close()


def test_own_store_and_other_sessions(server: ServerThread, db: MailboxDatabase) -> None:
    a, b = two_sessions(server, db, 3)
    assert a.cmd("STORE 1 +FLAGS.SILENT (\\Flagged)") == []
    assert a.cmd("NOOP") == []  # its own change is not reported back to it
    assert fetches(b.cmd("NOOP")) == {1: b"\\Flagged"}
    # Both store in the same moment: each learns of the other's change, not its own.
    assert a.cmd("STORE 2 +FLAGS.SILENT (\\Seen)") == []
    assert fetches(b.cmd("STORE 3 +FLAGS.SILENT (\\Answered)")) == {2: b"\\Seen"}
    assert fetches(a.cmd("NOOP")) == {3: b"\\Answered"}
    assert a.cmd("NOOP") == [] and b.cmd("NOOP") == []
    a.close()
    b.close()


def test_held_back_expunge_comes_at_the_next_allowed_moment(
    server: ServerThread, db: MailboxDatabase
) -> None:
    """FETCH must not announce an expunge (RFC 3501 §7.4.1); the NOOP after it must, even
    though nothing was committed between the two."""
    a, b = two_sessions(server, db, 3)
    b.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert b.cmd("EXPUNGE") == [b"* 1 EXPUNGE"]
    during = a.cmd("FETCH 1:* (FLAGS)")
    assert not any(b"EXPUNGE" in line for line in during)
    assert a.cmd("NOOP") == [b"* 1 EXPUNGE"]
    assert a.cmd("NOOP") == []
    a.close()
    b.close()


def test_recent_goes_to_one_session(server: ServerThread, db: MailboxDatabase) -> None:
    db.deliver_sync(msg(1), [ALICE])
    a, b = Client(server), Client(server)
    assert b"* 1 RECENT" in a.cmd("SELECT INBOX")
    assert b"* 0 RECENT" in b.cmd("SELECT INBOX")
    db.deliver_sync(msg(2), [ALICE])
    got_a, got_b = a.cmd("NOOP"), b.cmd("NOOP")
    assert b"* 2 EXISTS" in got_a and b"* 2 EXISTS" in got_b
    assert b"* 2 RECENT" in got_a and b"* 0 RECENT" in got_b  # a claimed the new one
    b.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)")
    b.cmd("EXPUNGE")
    assert a.cmd("NOOP") == [b"* 2 EXPUNGE", b"* 1 RECENT"]
    assert a.cmd("NOOP") == [] and b.cmd("NOOP") == []
    a.close()
    b.close()


def test_views_of_one_snapshot_stay_apart(db: MailboxDatabase) -> None:
    for n in range(5):
        db.deliver_sync(msg(n), [ALICE])
    db.claim_recent_sync(ALICE, "INBOX")
    snap = db.folder_snapshot(ALICE, "INBOX")
    before = [bytes(v) for v in snap.column_views()]
    one = MailboxView.from_snapshot("INBOX", snap, read_only=False)
    two = MailboxView.from_snapshot("INBOX", snap, read_only=False)
    one.set_flags(1, f.SEEN | f.FLAGGED, "work")
    one.expunge_now([3])
    assert list(one.uids) == [1, 2, 4, 5] and one.mask_at(1) == f.SEEN | f.FLAGGED
    assert list(two.uids) == [1, 2, 3, 4, 5] and two.mask_at(1) == 0
    assert two.keywords == {} and two.flag_list(1) == []
    assert [bytes(v) for v in snap.column_views()] == before
    assert db.folder_snapshot(ALICE, "INBOX") is snap  # nothing was committed


def test_read_deadline_restarts_with_each_command(db: MailboxDatabase) -> None:
    srv = ServerThread(db, USERS, config=SessionConfig(idle_timeout=1.0))
    try:
        with socket.create_connection((srv.host, srv.port), timeout=5) as s:
            f_ = s.makefile("rb")
            f_.readline()
            s.sendall(f"a LOGIN {ALICE} {PASSWORD}\r\n".encode())
            assert f_.readline().startswith(b"a OK")
            started = time.monotonic()
            for n in range(6):  # 1.5 s in all: longer than the timeout, never idle that long
                time.sleep(0.25)
                s.sendall(b"n%d NOOP\r\n" % n)
                assert f_.readline().startswith(b"n%d OK" % n)
            idle_from = time.monotonic()
            assert idle_from - started > 1.0
            assert f_.readline().startswith(b"* BYE")
            assert f_.readline() == b""
            assert 0.9 < time.monotonic() - idle_from < 6
    finally:
        srv.stop()


def test_flag_news_from_memory_and_from_the_store_agree(
    server: ServerThread, db: MailboxDatabase
) -> None:
    """Other sessions' STOREs reach a session from the store's memory of recent flag
    changes (flag_log) until another kind of commit, or more changes than it keeps, send
    it to the change log in the file: either way its view ends as the store's flags."""
    a, b = two_sessions(server, db, 6)

    def view_of(c: Client) -> dict[int, bytes]:
        return fetches(c.cmd("FETCH 1:* (FLAGS)"))

    def store_flags() -> dict[int, bytes]:
        listing = db.list_messages(ALICE, "INBOX")
        keywords = listing.keywords
        return {
            seq: " ".join(f.flag_names(word & ~f.RECENT, keywords.get(uid))).encode()
            for seq, (uid, word) in enumerate(zip(listing.uids, listing.flags, strict=True), 1)
        }

    answered = db._flag_log.answered
    for round_ in range(720):
        # message 1 changes once early in the long gap, then only the others do
        seq = round_ % 5 + 2 if 101 < round_ < 700 else 1 if round_ == 101 else round_ % 6 + 1
        sign = "+" if round_ % 4 < 2 and round_ != 101 else "-"
        b.cmd(f"STORE {seq} {sign}FLAGS.SILENT (\\Flagged $Tag)")
        if round_ == 50:
            db.create_folder_sync(ALICE, "Elsewhere")  # another kind of commit
        # from 100 to 700, more changes than memory keeps (flag_log.KEEP)
        if round_ % 10 == 0 and not 100 < round_ < 700:
            a.cmd("NOOP")
            assert view_of(a) == store_flags(), round_
    assert db._flag_log.answered > answered
    a.close()
    b.close()


def test_views_find_messages_past_gaps_and_take_news_in_one_pass(db: MailboxDatabase) -> None:
    """seq_of looks where a UID is when nothing above it was expunged, else bisects; sync
    applies other sessions' flag changes (keywords too) to a view still reading the shared
    snapshot, which stays as it was."""
    for n in range(12):
        db.deliver_sync(msg(n), [ALICE])
    db.claim_recent_sync(ALICE, "INBOX")
    db.set_flags_sync(ALICE, "INBOX", [2, 3, 9], ["\\Deleted"], "add")
    db.expunge_sync(ALICE, "INBOX", [2, 3, 9])  # gaps below and above other messages
    snap = db.folder_snapshot(ALICE, "INBOX")
    before = [bytes(v) for v in snap.column_views()]
    view = MailboxView.from_snapshot("INBOX", snap, read_only=False)
    uids = list(view.uids)
    assert uids == [1, 4, 5, 6, 7, 8, 10, 11, 12]
    for seq, uid in enumerate(uids, 1):
        assert view.seq_of(uid) == seq
    for uid in (0, 2, 3, 9, 13, 2**32 - 1):
        assert view.seq_of(uid) is None
    first = db.set_flags_sync(ALICE, "INBOX", [4, 10], ["\\Flagged"], "add")
    db.set_flags_sync(ALICE, "INBOX", [11], ["$Work"], "add")
    changes = db.changes_since(ALICE, "INBOX", first.modseq - 1)
    lines = view.sync(changes, None, [], allow_expunge=True)
    assert lines[0].startswith(b"* FLAGS (") and b"$Work" in lines[0]
    assert lines[-3:] == [
        b"* 2 FETCH (FLAGS (\\Flagged))\r\n",
        b"* 7 FETCH (FLAGS (\\Flagged))\r\n",
        b"* 8 FETCH (FLAGS ($Work))\r\n",
    ]
    assert view.mask_at(2) == f.FLAGGED and view.keywords == {11: "$Work"}
    assert view.sync(changes, None, [], allow_expunge=True) == []  # nothing new the second time
    assert [bytes(v) for v in snap.column_views()] == before
