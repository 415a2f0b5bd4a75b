"""Before login an IMAP client can make the server hold only a few KiB: no APPEND
literal is invited or read, non-synchronizing literals follow LITERAL- (4096 bytes), a
whole command is small, and the connection ends a fixed time after the connect."""

from __future__ import annotations

import time
from pathlib import Path

from clustermail.mail.imap.session import SessionConfig
from tests.security.imap_support import Raw, imap_server, mailbox_database, rss_bytes
from tests.support.imap_server import ServerThread

MiB = 1024 * 1024


def _buffered(srv: ServerThread) -> int:
    """Bytes the server's sessions hold for commands being framed."""

    async def count() -> int:
        return sum(s.framer.buffered for s in srv.server.sessions)

    return srv.call(count())


def test_append_literal_before_login_gets_no_continuation_and_memory_stays_flat(
    tmp_path: Path,
) -> None:
    # read at wire speed (not the default 256 KiB/s a line being dropped is read at)
    config = SessionConfig(discard_rate=1 << 40)
    with mailbox_database(tmp_path) as db, imap_server(db, config) as srv:
        c = Raw(srv)
        c.send(b"a APPEND INBOX {67108864}\r\n")
        answer = c.line()
        assert answer.startswith(b"a BAD"), answer  # no "+ Ready for literal data"
        # A client that sends the 64 MiB anyway: it is discarded as it arrives.
        before = rss_bytes()
        chunk = b"x" * (256 * 1024)
        peak = 0
        for n in range(128):  # 32 MiB
            c.send(chunk)
            if n % 16 == 0:
                peak = max(peak, _buffered(srv))
        c.send(b"\r\nb NOOP\r\n")
        lines = c.until_tagged(b"b")
        assert lines[-1].startswith(b"b OK"), lines
        assert peak <= 64 * 1024, f"the server held {peak} bytes of the literal"
        assert rss_bytes() - before < 16 * MiB
        c.close()


def test_non_synchronizing_append_before_login_is_closed_with_bye(tmp_path: Path) -> None:
    with mailbox_database(tmp_path) as db, imap_server(db) as srv:
        c = Raw(srv, timeout=5)
        start = time.monotonic()
        c.send(b"a APPEND INBOX {67108864+}\r\n")
        lines = c.rest()  # the server closes without waiting for the 64 MiB
        assert time.monotonic() - start < 3
        assert lines and lines[0].startswith(b"a BAD"), lines
        assert lines[-1].startswith(b"* BYE"), lines
        c.close()


def test_literal_minus_before_login_literal_plus_after(tmp_path: Path) -> None:
    with mailbox_database(tmp_path) as db, imap_server(db) as srv:
        c = Raw(srv)
        assert b"LITERAL-" in c.greeting and b"LITERAL+" not in c.greeting
        c.send(b"a LOGIN {18+}\r\nalice@example.test {6+}\r\nsecret\r\n")  # small: fine
        ok = c.until_tagged(b"a")[-1]
        assert ok.startswith(b"a OK") and b"LITERAL+" in ok
        c.close()
        big = Raw(srv)
        big.send(b"a LOGIN {5000+}\r\n")
        lines = big.rest()
        assert lines[0].startswith(b"a BAD [TOOBIG]"), lines
        assert lines[-1].startswith(b"* BYE")
        big.close()


def test_a_whole_command_before_login_is_at_most_8_kib(tmp_path: Path) -> None:
    with mailbox_database(tmp_path) as db, imap_server(db) as srv:
        c = Raw(srv)
        c.send(b"a LOGIN {60000}\r\n")  # within the 64 KiB of a logged-in client
        assert c.line().startswith(b"a BAD [TOOBIG]")
        c.send(b"b NOOP\r\n")
        assert c.until_tagged(b"b")[-1].startswith(b"b OK")
        c.close()


def test_login_timeout_counts_from_the_connect(tmp_path: Path) -> None:
    """Commands do not extend the time an anonymous client has to log in."""
    config = SessionConfig(login_timeout=1.0)
    with mailbox_database(tmp_path) as db, imap_server(db, config) as srv:
        c = Raw(srv)
        start = time.monotonic()
        lines: list[bytes] = []
        for n in range(20):  # a NOOP every 0.2 s for 4 s, unless the server hangs up
            try:
                c.send(b"n%d NOOP\r\n" % n)
                lines += c.until_tagged(b"n%d" % n)
            except OSError:
                break
            if not lines[-1] or lines[-1].startswith(b"* BYE"):
                break
            time.sleep(0.2)
        lines += c.rest()
        took = time.monotonic() - start
        assert any(x.startswith(b"* BYE") for x in lines), lines
        assert 0.9 < took < 2.5, took
        c.close()


def test_after_login_the_idle_timeout_counts_commands_not_bytes(tmp_path: Path) -> None:
    config = SessionConfig(login_timeout=30, idle_timeout=1.0)
    with mailbox_database(tmp_path) as db, imap_server(db, config) as srv:
        c = Raw(srv)
        c.login()
        start = time.monotonic()
        closed = False
        for byte in b"a SELECT INBOX-and-more-and-more":  # one byte every 0.1 s
            try:
                c.send(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.1)
        lines = c.rest()
        took = time.monotonic() - start
        assert closed or any(x.startswith(b"* BYE") for x in lines), lines
        assert took < 3.0, took  # the 30 s login timeout no longer applies either
        c.close()
