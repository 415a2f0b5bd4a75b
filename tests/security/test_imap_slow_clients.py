"""A client that stops reading is disconnected once a write waits past the write
timeout, and its connection slot is free again; it cannot hold the server's memory and
a slot forever."""

from __future__ import annotations

import time
from pathlib import Path

from clustermail.mail.imap.session import SessionConfig
from clustermail.mail.net.listener import ListenerLimits
from tests.security.imap_support import ALICE, Raw, imap_server, mailbox_database, wait_until


def test_non_reading_client_is_disconnected_and_its_slot_freed(tmp_path: Path) -> None:
    config = SessionConfig(write_timeout=1.0)
    limits = ListenerLimits(max_per_client=1)
    with mailbox_database(tmp_path) as db, imap_server(db, config, limits) as srv:
        big = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 1024  # 1 MiB
        db.deliver_sync(big, [ALICE])
        hog = Raw(srv, rcvbuf=4096)
        hog.login()
        hog.send(b"s SELECT INBOX\r\n")
        hog.until_tagged(b"s")
        # Ask for 64 MiB and read none of it.
        hog.send(b"".join(b"f%d FETCH 1 BODY.PEEK[]\r\n" % n for n in range(64)))
        admission = srv.server.admission
        took = wait_until(lambda: admission.active == 0, 15, "the hog disconnected")
        assert took < 10
        other = Raw(srv)  # the slot (one per client address here) is free again
        assert other.greeting.startswith(b"* OK"), other.greeting
        other.send(b"a NOOP\r\n")
        assert other.until_tagged(b"a")[-1].startswith(b"a OK")
        other.close()
        hog.close()


def test_slow_reader_is_not_cut_by_the_write_timeout(tmp_path: Path) -> None:
    """The timeout is per write: a client reading steadily may take longer in all."""
    config = SessionConfig(write_timeout=1.0)
    with mailbox_database(tmp_path) as db, imap_server(db, config) as srv:
        db.deliver_sync(b"Subject: big\r\n\r\n" + b"z" * (4 * 1024 * 1024) + b"\r\n", [ALICE])
        c = Raw(srv, timeout=20)
        c.login()
        c.send(b"s SELECT INBOX\r\n")
        c.until_tagged(b"s")
        c.send(b"f FETCH 1 BODY.PEEK[]\r\n")
        data = b""
        start = time.monotonic()
        while b"\r\nf " not in data[-200:]:
            chunk = c.sock.recv(128 * 1024)  # about 3 MiB/s
            assert chunk, "the server closed the connection"
            data += chunk
            time.sleep(0.04)
        assert time.monotonic() - start > 1.0  # longer than one write may wait
        assert b"\r\nf OK" in data[-200:]
        c.close()
