"""After login, APPEND's ``+`` comes only once the command is allowed: its folder exists,
the message fits the size limit and the quota. Otherwise the client is answered at once
and never sends the message."""

from __future__ import annotations

from pathlib import Path

import pytest

from clustermail.mail.store import QuotaLimits
from tests.security.imap_support import ALICE, Raw, imap_server, mailbox_database


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        (b"a APPEND Nowhere {100}\r\n", b"a NO [TRYCREATE]"),
        (b"a APPEND INBOX {5000}\r\n", b"a NO [TOOBIG]"),  # over the database's 4000
        (b"a APPEND INBOX {3000}\r\n", b"a NO [OVERQUOTA]"),  # 3000 > the 2000 bytes left
        (b"a APPEND INBOX (\\Bogus) {100}\r\n", b"a BAD"),
        (b"a APPEND INBOX (\\Seen {100}\r\n", b"a BAD"),  # malformed before the literal
        (b"a APPEND INBOX {0}\r\n", b"a NO"),
    ],
)
def test_append_refused_before_the_continuation(
    tmp_path: Path, command: bytes, answer: bytes
) -> None:
    with mailbox_database(tmp_path) as db, imap_server(db) as srv:
        db.update_settings_sync(max_message_bytes=4000)
        db.set_quota_sync(ALICE, QuotaLimits(prohibit_send_receive=2000))
        c = Raw(srv)
        c.login()
        c.send(command)
        line = c.line()
        assert line.startswith(answer), line  # and not "+ Ready for literal data"
        c.send(b"b NOOP\r\n")  # the command is over: the next line is a command
        assert c.until_tagged(b"b")[-1].startswith(b"b OK")
        c.close()


def test_append_that_fits_gets_the_continuation(tmp_path: Path) -> None:
    with mailbox_database(tmp_path) as db, imap_server(db) as srv:
        db.set_quota_sync(ALICE, QuotaLimits(prohibit_send_receive=2000))
        message = b"Subject: hi\r\n\r\nhello\r\n"
        c = Raw(srv)
        c.login()
        c.send(b"a APPEND {5}\r\n")  # a mailbox name sent as a literal: not the message
        assert c.line().startswith(b"+")
        c.send(b"INBOX (\\Seen) {%d}\r\n" % len(message))
        assert c.line().startswith(b"+")
        c.send(message + b"\r\n")
        assert c.until_tagged(b"a")[-1].startswith(b"a OK [APPENDUID")
        c.close()
