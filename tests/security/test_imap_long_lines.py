"""A command line far past the limit (64 KiB, Dovecot's imap_max_line_length) is
answered BAD and dropped as it arrives; the session goes on, as in Dovecot."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.imap_support import Raw, imap_server, mailbox_database


@pytest.mark.parametrize("logged_in", [True, False])
def test_100_kib_command_line_gets_bad_and_the_session_continues(
    tmp_path: Path, logged_in: bool
) -> None:
    with mailbox_database(tmp_path) as db, imap_server(db) as srv:
        c = Raw(srv)
        if logged_in:
            c.login()
        c.send(b"a SELECT " + b"x" * 100 * 1024 + b"\r\nb NOOP\r\n")
        first = c.line()
        assert first.startswith(b"a BAD") and b"longer than" in first, first
        lines = c.until_tagged(b"b")
        assert lines[-1].startswith(b"b OK"), lines
        assert not any(x.startswith(b"* BYE") for x in lines)
        c.close()


def test_literal_announced_at_the_end_of_a_long_line_is_not_run(tmp_path: Path) -> None:
    """The {n+} ending the discarded line is data already on its way: it is skipped, not
    run as commands."""
    with mailbox_database(tmp_path) as db, imap_server(db) as srv:
        c = Raw(srv)
        c.login()
        payload = b"x DELETE Sent\r\n"
        c.send(
            b"a APPEND INBOX (" + b"x" * 100 * 1024 + b") {%d+}\r\n" % len(payload)
            + payload + b"\r\nb LIST \"\" Sent\r\n"
        )
        assert c.line().startswith(b"a BAD")
        lines = c.until_tagged(b"b")
        assert not any(x.startswith(b"x ") for x in lines), lines
        assert any(b"Sent" in x for x in lines[:-1]), lines  # still there
        c.close()
