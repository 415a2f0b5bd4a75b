"""LIST and LSUB patterns are matched in linear time: a logged-in user cannot wedge the
server with wildcards (a backtracking regular expression took hours here)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.security.imap_support import ALICE, Raw, imap_server, mailbox_database

HOSTILE = b'"' + b"*a" * 20 + b'b"'


def test_pathological_list_pattern_answers_within_a_second(tmp_path: Path) -> None:
    with mailbox_database(tmp_path) as db, imap_server(db) as srv:
        db.create_folder_sync(ALICE, "a" * 60)
        db.subscribe_sync(ALICE, "a" * 60)
        c = Raw(srv, timeout=10)
        c.login()
        for command in (b"LIST", b"LSUB"):
            start = time.monotonic()
            c.send(b"p " + command + b' "" ' + HOSTILE + b"\r\n")
            lines = c.until_tagged(b"p")
            assert time.monotonic() - start < 1.0, command
            assert lines == [b"p OK " + command.capitalize() + b" completed.\r\n"]
        c.send(b'q LIST "" "*a"\r\n')  # the folder is there and is found
        assert any(b"a" * 60 in line for line in c.until_tagged(b"q"))
        c.close()


def test_overlong_pattern_is_bad_and_the_session_goes_on(tmp_path: Path) -> None:
    with mailbox_database(tmp_path) as db, imap_server(db) as srv:
        c = Raw(srv)
        c.login()
        c.send(b'p LIST "" "' + b"*" * 2000 + b'"\r\n')
        line = c.line()
        assert line.startswith(b"p BAD") and b"1024" in line, line
        c.send(b"q NOOP\r\n")
        assert c.until_tagged(b"q")[-1].startswith(b"q OK")
        c.close()
