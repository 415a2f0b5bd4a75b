"""A client that sends only invalid commands is disconnected after ``max_bad_commands``
(10) BAD answers in a row, with Dovecot's ``* BYE Too many invalid IMAP commands.``; any
other answer starts the count over, and one overlong line still gets BAD and goes on.
From the third BAD in a row, each answer waits ``error_sleep_time`` (Postfix's tarpit),
and the rest of an overlong line is read at ``discard_rate``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from clustermail.mail.imap.context import MAX_BAD_COMMANDS
from clustermail.mail.imap.session import SessionConfig
from tests.security.imap_support import Raw, imap_server, mailbox_database

#: No tarpit and wire-speed dropping, so the counting is tested on its own.
FAST = SessionConfig(error_sleep_time=0, discard_rate=1 << 40)


@pytest.mark.parametrize("logged_in", [False, True])
def test_ten_bad_commands_in_a_row_close_the_connection(
    tmp_path: Path, logged_in: bool
) -> None:
    assert MAX_BAD_COMMANDS == 10
    with mailbox_database(tmp_path) as db, imap_server(db, FAST) as srv:
        c = Raw(srv)
        if logged_in:
            c.login()
        # garbage, an unknown command, a command of the wrong state, an overlong line
        wrong = b"SELECT INBOX" if not logged_in else b"LOGIN a b"
        bad = [b"%d FOO" % n for n in range(1, 4)] + [b"4 " + wrong, b"5 SELECT " + b"x" * 70_000]
        bad += [b"%d NOOP extra" % n for n in range(6, 11)]
        c.send(b"\r\n".join(bad[:9]) + b"\r\n")
        for n in range(9):
            answer = c.line()
            assert b" BAD " in answer, (n, answer)
        c.send(bad[9] + b"\r\nlate NOOP\r\n")
        assert c.line().startswith(b"10 BAD")
        rest = c.rest()
        assert rest == [b"* BYE Too many invalid IMAP commands.\r\n"], rest  # late: unread
        c.close()


def test_a_good_answer_starts_the_count_over(tmp_path: Path) -> None:
    with mailbox_database(tmp_path) as db, imap_server(db, FAST) as srv:
        c = Raw(srv)
        for round_ in range(3):  # 9 BADs, then a NOOP: 27 BADs, never 10 in a row
            c.send(b"".join(b"b%d FOO\r\n" % n for n in range(9)) + b"ok%d NOOP\r\n" % round_)
            lines = c.until_tagged(b"ok%d" % round_)
            assert sum(b" BAD " in x for x in lines) == 9, lines
            assert lines[-1].startswith(b"ok%d OK" % round_), lines
        c.send(b"a CAPABILITY\r\n")
        assert c.until_tagged(b"a")[-1].startswith(b"a OK")
        c.close()


def test_the_limit_is_a_setting(tmp_path: Path) -> None:
    config = SessionConfig(max_bad_commands=2, error_sleep_time=0)
    with mailbox_database(tmp_path) as db, imap_server(db, config) as srv:
        c = Raw(srv)
        c.send(b"a FOO\r\nb FOO\r\n")
        assert c.line().startswith(b"a BAD")
        assert c.line().startswith(b"b BAD")
        assert c.rest() == [b"* BYE Too many invalid IMAP commands.\r\n"]
        c.close()
    with pytest.raises(ValueError, match="max_bad_commands"):
        SessionConfig(max_bad_commands=0)


def test_bad_answers_past_the_third_in_a_row_are_tarpitted(tmp_path: Path) -> None:
    config = SessionConfig(error_sleep_time=0.5, discard_rate=1 << 40)
    with mailbox_database(tmp_path) as db, imap_server(db, config) as srv:
        c = Raw(srv)
        started = time.monotonic()
        c.send(b"".join(b"b%d FOO\r\n" % n for n in range(5)) + b"ok NOOP\r\n")
        lines = c.until_tagged(b"ok")
        assert [x.split(b" ")[1] for x in lines] == [b"BAD"] * 5 + [b"OK"], lines
        assert time.monotonic() - started >= 3 * 0.5  # the 3rd, 4th and 5th waited
        c.close()


def test_an_overlong_line_is_read_at_the_discard_rate(tmp_path: Path) -> None:
    config = SessionConfig(error_sleep_time=0, discard_rate=1024 * 1024)
    with mailbox_database(tmp_path) as db, imap_server(db, config) as srv:
        c = Raw(srv, timeout=10)
        started = time.monotonic()
        c.send(b"a NOOP " + b"x" * 2 * 1024 * 1024 + b"\r\nb NOOP\r\n")  # 2 MiB at 1 MiB/s
        lines = c.until_tagged(b"b")
        assert lines[0].startswith(b"a BAD") and lines[-1].startswith(b"b OK"), lines
        assert time.monotonic() - started >= 1.5
        c.close()
