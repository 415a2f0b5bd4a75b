"""A STORE that would change nothing is answered without a write — and only when the
session's view holds every commit so far, so a change made meanwhile elsewhere is
never taken for a no-op."""

from __future__ import annotations

from clustermail.mail.store import MailboxDatabase
from clustermail.mail.store import flags as f
from tests.support.imap_lines import ALICE, Client, fetches, msg, two_sessions
from tests.support.imap_server import ServerThread


def stored(db: MailboxDatabase) -> list[str]:
    listing = db.list_messages(ALICE, "INBOX")
    return [" ".join(f.flag_names(word & ~f.RECENT, listing.keywords.get(uid)))
            for uid, word in zip(listing.uids, listing.flags, strict=True)]


def test_a_store_that_changes_nothing_is_not_written(
        server: ServerThread, db: MailboxDatabase) -> None:
    for n in range(3):
        db.deliver_sync(msg(n), [ALICE])
    db.claim_recent_sync(ALICE, "INBOX")
    a = Client(server)
    a.cmd("SELECT INBOX")
    a.cmd("STORE 1:2 +FLAGS.SILENT (\\Flagged $Work)")  # announces $Work in FLAGS
    jobs = db.stats.jobs
    for line in ("STORE 1:2 +FLAGS (\\Flagged)", "STORE 1 +FLAGS ($Work \\Flagged)",
                 "STORE 3 -FLAGS (\\Seen $Work)", "STORE 1 FLAGS (\\Flagged $Work)",
                 "UID STORE 1:* -FLAGS.SILENT (\\Deleted)", "STORE 3 FLAGS ()"):
        assert a.cmd(line) == [], line  # OK alone, as any STORE that changes nothing
    assert db.stats.jobs == jobs
    # One message of several changing is a write, answered for that message only.
    assert fetches(a.cmd("STORE 1:3 +FLAGS (\\Flagged)")) == {3: b"\\Flagged"}
    assert fetches(a.cmd("STORE 1 FLAGS ($Work)")) == {1: b"$Work"}
    assert db.stats.jobs == jobs + 2
    assert stored(db) == ["$Work", "\\Flagged $Work", "\\Flagged"]
    a.close()


def test_a_change_made_elsewhere_meanwhile_is_not_taken_for_a_no_op(
        server: ServerThread, db: MailboxDatabase) -> None:
    """The session's view still says \\Flagged when another writer has just removed it:
    the STORE looks for news first, so it writes, and the flag is there afterwards."""
    a, b = two_sessions(server, db, 2)
    for round_ in range(20):
        assert a.cmd("STORE 1 +FLAGS.SILENT (\\Flagged)") == []
        assert fetches(b.cmd("FETCH 1 (FLAGS)")) == {1: b"\\Flagged"}, round_  # b's view
        if round_ % 2:
            db.set_flags_sync(ALICE, "INBOX", [1], ["\\Flagged"], "remove")  # not an IMAP session
        else:
            a.cmd("STORE 1 -FLAGS.SILENT (\\Flagged)")
        assert stored(db)[0] == ""
        # b is told of the removal in its STORE's answer, and its STORE is written.
        assert fetches(b.cmd("STORE 1 +FLAGS.SILENT (\\Flagged)")) == {1: b""}, round_
        assert stored(db)[0] == "\\Flagged", round_
        a.cmd("NOOP")
    a.close()
    b.close()
