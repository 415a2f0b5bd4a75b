"""Work that grows with message sizes (SEARCH in headers and bodies, FETCH of large
messages) runs off the event loop that serves every session: another client's NOOP is
answered at once meanwhile."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from clustermail.mail.store import MailboxDatabase
from tests.security.imap_support import ALICE, BOB, Raw, imap_server, mailbox_database
from tests.support.imap_server import ServerThread


def _fill(db: MailboxDatabase, messages: int, size: int) -> None:
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
    body = line * (size // len(line))
    for n in range(messages):
        db.deliver_sync(
            b"Subject: report %d\r\nContent-Type: text/plain\r\n\r\n" % n + body, [ALICE]
        )


def _noop_latencies(srv: ServerThread, busy: threading.Event, done: threading.Event) -> list[float]:
    """NOOP round trips of another user's session while ``busy`` is set and not ``done``."""
    c = Raw(srv)
    c.login(BOB)
    busy.wait(10)
    out: list[float] = []
    n = 0
    while not done.is_set():
        n += 1
        start = time.monotonic()
        c.send(b"n%d NOOP\r\n" % n)
        assert c.until_tagged(b"n%d" % n)[-1].startswith(b"n%d OK" % n)
        out.append(time.monotonic() - start)
        time.sleep(0.01)
    c.close()
    return out


def _while_running(srv: ServerThread, command: bytes) -> tuple[list[bytes], list[float], float]:
    busy, done = threading.Event(), threading.Event()
    latencies: list[float] = []
    noops = threading.Thread(target=lambda: latencies.extend(_noop_latencies(srv, busy, done)))
    noops.start()
    c = Raw(srv, timeout=120)
    c.login()
    c.send(b"s SELECT INBOX\r\n")
    c.until_tagged(b"s")
    try:
        busy.set()
        time.sleep(0.2)  # the NOOP session is running
        start = time.monotonic()
        c.send(command)
        lines = c.until_tagged(b"x")
        took = time.monotonic() - start
    finally:
        done.set()
        noops.join(30)
        c.close()
    return lines, latencies, took


def test_body_search_does_not_stall_other_sessions(tmp_path: Path) -> None:
    with mailbox_database(tmp_path) as db, imap_server(db) as srv:
        _fill(db, 160, 256 * 1024)  # 40 MiB of text to decode and scan: about a second
        lines, latencies, _took = _while_running(srv, b"x SEARCH BODY needle-not-there\r\n")
        assert lines[-1].startswith(b"x OK"), lines
        assert len(latencies) >= 3, "no NOOP was answered during the search"
        latencies.sort()
        assert latencies[len(latencies) * 9 // 10] < 0.1, latencies
        assert latencies[-1] < 0.3, latencies  # on the loop, one NOOP waited for all of it
