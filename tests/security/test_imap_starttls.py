"""STARTTLS: commands a client pipelines in the clear after STARTTLS are dropped, never
run inside the TLS session; the client's handshake, sent right after our answer, is
never taken for plaintext input."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from tests.security.imap_support import ALICE, mailbox_database
from tests.support.imap_server import PASSWORD, USERS, ServerThread, self_signed


def test_plaintext_injected_after_starttls_is_not_run(tmp_path: Path) -> None:
    ctx, cert = self_signed(tmp_path)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False
    with mailbox_database(tmp_path) as db:
        srv = ServerThread(db, USERS, tls=ctx, allow_plaintext_on_loopback=False)
        try:
            for _ in range(5):  # the handshake follows our answer at once, every time
                with socket.create_connection((srv.host, srv.port), timeout=10) as raw:
                    f = raw.makefile("rb")
                    assert f.readline().startswith(b"* OK")
                    raw.sendall(f"a STARTTLS\r\nb LOGIN {ALICE} {PASSWORD}\r\n".encode())
                    assert f.readline().startswith(b"a OK")
                    with client_ctx.wrap_socket(raw) as tls:
                        tf = tls.makefile("rb")
                        tls.sendall(b"c SELECT INBOX\r\n")
                        answer = tf.readline()
                        assert answer.startswith(b"c BAD"), answer  # not logged in
                        assert b"Log in first" in answer
        finally:
            srv.stop()
