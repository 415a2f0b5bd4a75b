"""FETCH BODY[] answers with the stored bytes (no structure read): whole, partial, past
the end, and with the implicit \\Seen of BODY[]."""

from __future__ import annotations

from imapclient import IMAPClient

from clustermail.mail.store import MailboxDatabase
from tests.support.imap_server import PASSWORD, USERS, ServerThread

ALICE = USERS[0]
RAW = (
    b"From: a@example.test\r\nTo: b@example.test\r\nSubject: whole\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="xx"\r\n\r\n'
    b"--xx\r\nContent-Type: text/plain\r\n\r\nfirst\r\n--xx--\r\n"
)


def test_body_whole_and_partial(server: ServerThread, db: MailboxDatabase) -> None:
    db.deliver_sync(RAW, [ALICE])
    c = IMAPClient(server.host, port=server.port, ssl=False, timeout=10)
    c.login(ALICE, PASSWORD)
    c.select_folder("INBOX")
    got = c.fetch([1], ["BODY.PEEK[]", "BODY.PEEK[]<5.12>", "BODY.PEEK[]<100000.5>"])[1]
    assert got[b"BODY[]"] == RAW
    assert got[b"BODY[]<5>"] == RAW[5:17]
    assert got[b"BODY[]<100000>"] == b""
    assert b"\\Seen" not in c.get_flags([1])[1]
    assert c.fetch([1], ["BODY[]"])[1][b"BODY[]"] == RAW
    assert b"\\Seen" in c.get_flags([1])[1]
    assert c.fetch([1], ["RFC822.SIZE"])[1][b"RFC822.SIZE"] == len(RAW)
    c.logout()
