"""One account cannot hold the server's connections from one address: past
mail_max_userip_connections logins are refused, and a closed session frees its count."""

from __future__ import annotations

from pathlib import Path

from clustermail.mail.imap.session import SessionConfig
from tests.security.imap_support import ALICE, BOB, Raw, imap_server, mailbox_database, wait_until
from tests.support.imap_server import PASSWORD


def test_logins_per_user_and_address_are_capped(tmp_path: Path) -> None:
    config = SessionConfig(max_userip_connections=3)
    with mailbox_database(tmp_path) as db, imap_server(db, config) as srv:
        first = [Raw(srv) for _ in range(3)]
        for c in first:
            c.login()
        extra = Raw(srv)
        extra.send(f"a LOGIN {ALICE} {PASSWORD}\r\n".encode())
        refused = extra.until_tagged(b"a")[-1]
        assert refused.startswith(b"a NO [LIMIT]"), refused
        extra.login(BOB)  # another user from the same address is not affected
        first[0].send(b"z LOGOUT\r\n")
        first[0].rest()
        counts = srv.server.user_connections
        wait_until(lambda: counts.count(ALICE, "127.0.0.1") == 2, 5, "the logout counted")
        again = Raw(srv)
        again.login()
        for c in [*first, extra, again]:
            c.close()
