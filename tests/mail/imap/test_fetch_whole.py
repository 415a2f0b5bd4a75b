"""FETCH BODY[] answers with the stored bytes (no structure read): whole, partial, past
the end, and with the implicit \\Seen of BODY[]; the exact bytes of those answers for
varied messages (leading dots, bare line ends, no final line end, 8-bit)."""

from __future__ import annotations

import re
import socket
from typing import BinaryIO

from imapclient import IMAPClient

from clustermail.mail.store import MailboxDatabase
from clustermail.mail.store.mime import normalize_newlines
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


#: Stored messages for the exact answers: leading dots, bare LF (stored as CRLF), no
#: final line end, a bare CR, 8-bit and NUL bytes, one byte.
VARIED = [
    b".dot first\r\n\r\n.\r\n..x\r\n",
    b"S: lf\n\nbare LF\n",
    b"S: no end\r\n\r\nlast line",
    b"S: cr\r\n\r\nbare\rCR\r\n",
    "S: caf\u00e9\r\n\r\n\u00fcber \xff\r\n".encode("latin-1") + b"\x80\x00\r\n",
    b"x",
]


def answer(sock: socket.socket, file: BinaryIO, tag: bytes, command: bytes) -> bytes:
    """Everything the server sends for one command, literals included, as sent."""
    sock.sendall(tag + b" " + command + b"\r\n")
    out = b""
    while True:
        line = file.readline()
        assert line, "connection closed"
        out += line
        if (m := re.search(rb"\{(\d+)\}\r\n$", line)) is not None:
            out += file.read(int(m[1]))
            continue
        if line.startswith(tag + b" "):
            return out


def test_body_answers_are_the_stored_bytes_exactly(
    server: ServerThread, db: MailboxDatabase
) -> None:
    for raw in VARIED:
        db.deliver_sync(raw, [ALICE])
    uids = db.list_messages(ALICE, "INBOX").uids
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        file = sock.makefile("rb")
        file.readline()
        answer(sock, file, b"a", f'LOGIN "{ALICE}" "{PASSWORD}"'.encode())
        answer(sock, file, b"b", b"SELECT INBOX")
        for n, raw in enumerate(VARIED, start=1):
            stored = normalize_newlines(raw)
            whole = b"BODY[] {%d}\r\n%s" % (len(stored), stored)
            done = b" OK Fetch completed.\r\n"
            for round_ in range(2):  # the second time from the parser's list of items
                tag = b"p%d%d" % (n, round_)
                assert answer(sock, file, tag, b"FETCH %d BODY.PEEK[]" % n) == (
                    b"* %d FETCH (%s)\r\n%s%s" % (n, whole, tag, done))
            assert answer(sock, file, b"q", b"UID FETCH %d BODY.PEEK[]" % uids[n - 1]) == (
                b"* %d FETCH (UID %d %s)\r\nq%s" % (n, uids[n - 1], whole, done))
            assert answer(sock, file, b"r", b"FETCH %d (BODY.PEEK[]<1.3> RFC822.SIZE)" % n) == (
                b"* %d FETCH (BODY[]<1> {%d}\r\n%s RFC822.SIZE %d)\r\nr%s"
                % (n, len(stored[1:4]), stored[1:4], len(stored), done))
            seen = answer(sock, file, b"s", b"FETCH %d BODY[]" % n)
            flags = answer(sock, file, b"f", b"FETCH %d FLAGS" % n).split(b"\r\n")[0]
            assert b"\\Seen" in flags  # the FLAGS it gained, first in BODY[]'s answer
            assert seen == b"%s %s)\r\ns%s" % (flags[:-1], whole, done)
        assert answer(sock, file, b"t", b"FETCH %d BODY.PEEK[]" % (len(VARIED) + 1)) == (
            b"t BAD Invalid messageset\r\n")
        assert answer(sock, file, b"u", b"FETCH 1 BODY.PEEK[] (CHANGEDSINCE 1)").startswith(
            b"u BAD ")
        assert answer(sock, file, b"v", b"FETCH 1 BODY.PEEK[] junk").startswith(b"v BAD ")


def test_body_of_a_message_expunged_meanwhile_is_a_no(
    server: ServerThread, db: MailboxDatabase
) -> None:
    for raw in VARIED[:2]:
        db.deliver_sync(raw, [ALICE])
    sessions = [socket.create_connection((server.host, server.port), timeout=10)
                for _ in range(2)]
    try:
        (a, b), (fa, fb) = sessions, [s.makefile("rb") for s in sessions]
        for sock, file in ((a, fa), (b, fb)):
            file.readline()
            answer(sock, file, b"l", f'LOGIN "{ALICE}" "{PASSWORD}"'.encode())
            answer(sock, file, b"s", b"SELECT INBOX")
        answer(b, fb, b"d", b"STORE 1 +FLAGS.SILENT (\\Deleted)")
        assert answer(b, fb, b"e", b"EXPUNGE").startswith(b"* 1 EXPUNGE\r\n")
        gone = b" NO [EXPUNGEISSUED] Some of the requested messages no longer exist.\r\n"
        # The view of A still has message 1 (FETCH does not announce expunges).
        assert answer(a, fa, b"f", b"FETCH 1 BODY.PEEK[]") == b"f" + gone
        stored = normalize_newlines(VARIED[1])
        assert answer(a, fa, b"g", b"FETCH 2 BODY.PEEK[]") == (
            b"* 2 FETCH (BODY[] {%d}\r\n%s)\r\ng OK Fetch completed.\r\n" % (len(stored), stored))
    finally:
        for sock in sessions:
            sock.close()
