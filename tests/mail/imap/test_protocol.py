"""The server over real sockets with Python's imaplib and imapclient, on a real database."""

from __future__ import annotations

import imaplib
import socket
import ssl
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from clustermail.mail.imap.session import SessionConfig
from clustermail.mail.net.listener import AuthThrottle, ListenerLimits
from clustermail.mail.store import MailboxDatabase
from tests.support.imap_server import PASSWORD, USERS, ServerThread, self_signed

ALICE, BOB = USERS


def msg(n: int, extra: str = "") -> bytes:
    return (
        f"From: Sender {n} <s{n}@example.test>\r\nTo: {ALICE}\r\nSubject: message {n}\r\n"
        f"Message-ID: <{n}@example.test>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n"
        f"body of message {n}{extra}\r\n"
    ).encode()


def client(server: ServerThread, user: str = ALICE) -> IMAPClient:
    c = IMAPClient(server.host, port=server.port, ssl=False, timeout=10)
    c.login(user, PASSWORD)
    return c


def test_imaplib_session(server: ServerThread, db: MailboxDatabase) -> None:
    for n in range(3):
        db.deliver_sync(msg(n), [ALICE])
    m = imaplib.IMAP4(server.host, server.port)
    assert "AUTH=PLAIN" in m.capabilities
    m.login(ALICE, PASSWORD)
    typ, data = m.select("INBOX")
    assert typ == "OK" and data == [b"3"]
    _, fetched = m.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert fetched[0][1] == b"Subject: message 1\r\n\r\n"  # type: ignore[index]
    _, flags = m.fetch("1:*", "(FLAGS)")
    assert all(b"\\Recent" in d for d in flags)  # type: ignore[operator]
    m.store("1", "+FLAGS", "(\\Deleted)")
    assert m.search(None, "DELETED") == ("OK", [b"1"])
    assert m.expunge() == ("OK", [b"1"])
    typ, data = m.uid("FETCH", "1:*", "(UID)")
    assert [d for d in data] == [b"1 (UID 2)", b"2 (UID 3)"]
    assert m.logout()[0] == "BYE"


def test_imapclient_folders_append_copy_move(server: ServerThread) -> None:
    c = client(server)
    assert c.has_capability("UIDPLUS") and c.has_capability("MOVE")
    c.create_folder("Projects/2024")
    assert c.folder_exists("Projects/2024")
    names = {f[2] for f in c.list_folders()}
    assert {"INBOX", "Sent", "Projects", "Projects/2024"} <= names
    when = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    result = c.append("INBOX", msg(1), flags=[b"\\Seen", b"Work"], msg_time=when)
    assert b"APPENDUID" in result
    c.append("INBOX", msg(2))
    c.select_folder("INBOX")
    fetched = c.fetch([1], ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"])
    assert set(fetched[1][b"FLAGS"]) >= {b"\\Seen", b"Work"}
    assert fetched[1][b"INTERNALDATE"].replace(tzinfo=UTC) == when.replace(tzinfo=UTC)
    assert fetched[1][b"ENVELOPE"].subject == b"message 1"
    c.copy([1], "Projects/2024")
    assert c.folder_status("Projects/2024", ["MESSAGES"])[b"MESSAGES"] == 1
    c.move([2], "Sent")
    assert c.search(["ALL"]) == [1]
    assert c.folder_status("Sent", ["MESSAGES"])[b"MESSAGES"] == 1
    c.rename_folder("Projects", "Archive2024")
    assert c.folder_exists("Archive2024/2024")
    c.delete_folder("Archive2024/2024")
    assert not c.folder_exists("Archive2024/2024")
    c.logout()


def test_fetch_sections_and_seen(server: ServerThread, db: MailboxDatabase) -> None:
    raw = (
        b"From: a@example.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="xx"\r\n\r\n'
        b"--xx\r\nContent-Type: text/plain\r\n\r\nfirst\r\n"
        b"--xx\r\nContent-Type: text/html\r\n\r\n<b>second</b>\r\n--xx--\r\n"
    )
    db.deliver_sync(raw, [ALICE])
    c = client(server)
    c.select_folder("INBOX")
    data = c.fetch([1], ["BODY.PEEK[1]", "BODY.PEEK[2.MIME]", "BODY.PEEK[]<0.4>", "BODYSTRUCTURE"])
    assert data[1][b"BODY[1]"] == b"first"
    assert data[1][b"BODY[2.MIME]"] == b"Content-Type: text/html\r\n\r\n"
    assert data[1][b"BODY[]<0>"] == b"From"
    assert data[1][b"BODYSTRUCTURE"].is_multipart
    assert b"\\Seen" not in c.get_flags([1])[1]
    c.fetch([1], ["BODY[TEXT]"])
    assert b"\\Seen" in c.get_flags([1])[1]
    c.logout()


def test_other_sessions_see_changes(server: ServerThread, db: MailboxDatabase) -> None:
    for n in range(3):
        db.deliver_sync(msg(n), [ALICE])
    a, b = client(server), client(server)
    a.select_folder("INBOX")
    b.select_folder("INBOX")
    b.add_flags([2], [b"\\Flagged"])
    b.delete_messages([1])
    b.expunge()
    db.deliver_sync(msg(9), [ALICE])
    responses = a.noop()[1]
    kinds = {(r[1] if isinstance(r[1], bytes) else b"") for r in responses}
    assert b"EXPUNGE" in kinds and b"EXISTS" in kinds
    assert any(r[1] == b"FETCH" and b"\\Flagged" in str(r[2]).encode() for r in responses)
    assert a.search(["ALL"]) == [2, 3, 4]  # UIDs
    a.logout()
    b.logout()


def test_idle_wakes_within_a_second(server: ServerThread, db: MailboxDatabase) -> None:
    c = client(server)
    c.select_folder("INBOX")
    c.idle()
    timer = threading.Timer(0.2, lambda: db.deliver_sync(msg(1), [ALICE]))
    started = time.monotonic()
    timer.start()
    try:
        responses = c.idle_check(timeout=2)
        elapsed = time.monotonic() - started
    finally:
        timer.join()
        c.idle_done()
    assert (1, b"EXISTS") in responses
    assert elapsed < 1.2  # delivered at 0.2 s, seen well within 1 s of it
    c.logout()


def test_plaintext_refused_without_tls(db: MailboxDatabase, tmp_path: Path) -> None:
    ctx, cert = self_signed(tmp_path)
    srv = ServerThread(db, USERS, tls=ctx, allow_plaintext_on_loopback=False)
    try:
        m = imaplib.IMAP4(srv.host, srv.port)
        assert "LOGINDISABLED" in m.capabilities and "STARTTLS" in m.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            m.login(ALICE, PASSWORD)
        client_ctx = ssl.create_default_context(cafile=str(cert))
        client_ctx.check_hostname = False
        m.starttls(client_ctx)
        assert "AUTH=PLAIN" in m.capabilities and "STARTTLS" not in m.capabilities
        assert m.login(ALICE, PASSWORD)[0] == "OK"
        m.logout()
        assert srv.tls_port is not None
        s = imaplib.IMAP4_SSL(srv.host, srv.tls_port, ssl_context=client_ctx)
        assert s.login(ALICE, PASSWORD)[0] == "OK"
        s.logout()
    finally:
        srv.stop()


def test_authenticate_plain_with_and_without_initial_response(server: ServerThread) -> None:
    m = imaplib.IMAP4(server.host, server.port)
    assert m.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{PASSWORD}".encode())[0] == "OK"
    m.logout()
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        f = s.makefile("rb")
        f.readline()
        import base64

        token = base64.b64encode(f"\0{BOB}\0{PASSWORD}".encode())
        s.sendall(b"a AUTHENTICATE PLAIN " + token + b"\r\n")
        assert f.readline().startswith(b"a OK [CAPABILITY")
        s.sendall(b"b AUTHENTICATE PLAIN\r\n")
        assert f.readline().startswith(b"b BAD")


def test_failed_logins_are_throttled(db: MailboxDatabase) -> None:
    now = [1000.0]
    throttle = AuthThrottle(base_delay=0.2, max_delay=1.0, max_failures=4, lockout=60,
                            clock=lambda: now[0])
    srv = ServerThread(db, USERS, throttle=throttle)
    try:
        c = IMAPClient(srv.host, port=srv.port, ssl=False, timeout=10)
        started = time.monotonic()
        for _ in range(3):
            with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):
                c.login(ALICE, "wrong")
        assert time.monotonic() - started >= 0.2 + 0.4 + 0.8  # each failure answered later
        c.login(ALICE, PASSWORD)  # still allowed, and a success clears the address
        c.logout()

        c = IMAPClient(srv.host, port=srv.port, ssl=False, timeout=10)
        for _ in range(4):
            with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):
                c.login(ALICE, "wrong")
        # Locked out: even the right password is refused, with a temporary error.
        with pytest.raises(LoginError, match="UNAVAILABLE"):
            c.login(ALICE, PASSWORD)
        now[0] += 61
        c.login(ALICE, PASSWORD)
        c.logout()
    finally:
        srv.stop()


def test_connections_per_client_are_limited(db: MailboxDatabase) -> None:
    srv = ServerThread(db, USERS, limits=ListenerLimits(max_connections=10, max_per_client=2))
    try:
        first, second = (socket.create_connection((srv.host, srv.port), timeout=5)
                         for _ in range(2))
        for s in (first, second):
            assert s.makefile("rb").readline().startswith(b"* OK")
        with socket.create_connection((srv.host, srv.port), timeout=5) as third:
            f = third.makefile("rb")
            assert f.readline().startswith(b"* BYE [UNAVAILABLE]")
            assert f.readline() == b""  # and closed
        first.close()
        deadline = time.monotonic() + 5
        while True:  # the server notices the close when it reads EOF
            with socket.create_connection((srv.host, srv.port), timeout=5) as again:
                if again.makefile("rb").readline().startswith(b"* OK"):
                    break
            assert time.monotonic() < deadline, "the freed slot was never reused"
            time.sleep(0.05)
        second.close()
    finally:
        srv.stop()


def test_idle_sessions_time_out(db: MailboxDatabase) -> None:
    srv = ServerThread(db, USERS, config=SessionConfig(idle_timeout=0.5))
    try:
        with socket.create_connection((srv.host, srv.port), timeout=5) as s:
            f = s.makefile("rb")
            f.readline()
            s.sendall(f"a LOGIN {ALICE} {PASSWORD}\r\nb SELECT INBOX\r\nc IDLE\r\n".encode())
            lines = []
            while True:
                line = f.readline()
                if not line:
                    break
                lines.append(line)
            assert lines[-1].startswith(b"* BYE")
            assert any(x.startswith(b"+ idling") for x in lines)
    finally:
        srv.stop()


def test_an_idling_session_gets_keepalives_which_do_not_extend_its_timeout(
    db: MailboxDatabase,
) -> None:
    """Dovecot's "* OK Still here" every imap_idle_notify_interval: NAT boxes keep the
    connection and the client sees a dead one; the inactivity deadline stays."""
    config = SessionConfig(idle_timeout=1.5, idle_keepalive=0.2)
    srv = ServerThread(db, USERS, config=config)
    try:
        with socket.create_connection((srv.host, srv.port), timeout=5) as s:
            f = s.makefile("rb")
            f.readline()
            s.sendall(f"a LOGIN {ALICE} {PASSWORD}\r\nb SELECT INBOX\r\n".encode())
            while not f.readline().startswith(b"b OK"):
                pass
            s.sendall(b"c IDLE\r\n")
            assert f.readline().startswith(b"+ idling")
            started = time.monotonic()
            assert f.readline() == b"* OK Still here\r\n"
            assert f.readline() == b"* OK Still here\r\n"
            s.sendall(b"DONE\r\n")  # IDLE still ends as usual
            assert f.readline().startswith(b"c OK")
            s.sendall(b"d IDLE\r\n")
            assert f.readline().startswith(b"+ idling")
            lines = []
            while line := f.readline():  # until the server closes the connection
                lines.append(line)
            elapsed = time.monotonic() - started
        assert lines[-1].startswith(b"* BYE")
        assert lines.count(b"* OK Still here\r\n") >= 4  # ~1.5 s of IDLE, every 0.2 s
        assert elapsed < 5  # the keepalives did not hold the session open
    finally:
        srv.stop()


def test_idle_keepalive_must_be_positive() -> None:
    with pytest.raises(ValueError, match="idle_keepalive"):
        SessionConfig(idle_keepalive=0)


def test_append_limit_and_literal_plus(server: ServerThread, db: MailboxDatabase) -> None:
    db.update_settings_sync(max_message_bytes=1000)
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(f"a LOGIN {ALICE} {PASSWORD}\r\n".encode())
        assert f.readline().startswith(b"a OK")
        body = msg(1)
        s.sendall(b"b APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
        assert f.readline().startswith(b"b OK [APPENDUID ")
        big = b"x" * 2000
        s.sendall(b"c APPEND INBOX {%d+}\r\n" % len(big) + big + b"\r\n")
        assert f.readline().startswith(b"c NO [TOOBIG]")
        s.sendall(b"d NOOP\r\n")
        assert f.readline().startswith(b"d OK")


def test_uidvalidity_survives_remount(server: ServerThread, db: MailboxDatabase) -> None:
    """The database remounted with a higher fencing epoch under a running server: a client
    that reconnects sees the same UIDVALIDITY, UIDs and messages (they come from the store)."""
    for n in range(5):
        db.deliver_sync(msg(n), [ALICE])
    c = client(server)
    before = c.select_folder("INBOX")
    uids = c.search(["ALL"])
    c.logout()
    db.dismount()
    db.mount(2)
    c = client(server)
    after = c.select_folder("INBOX")
    assert after[b"UIDVALIDITY"] == before[b"UIDVALIDITY"]
    assert c.search(["ALL"]) == uids
    assert c.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])[uids[-1]][
        b"BODY[HEADER.FIELDS (SUBJECT)]"
    ].startswith(b"Subject: message 4")
    c.logout()


def test_unavailable_database_ends_the_session(server: ServerThread, db: MailboxDatabase) -> None:
    db.deliver_sync(msg(1), [ALICE])
    c = client(server)
    c.select_folder("INBOX")
    db.dismount()
    with pytest.raises(Exception, match=r"UNAVAILABLE|unavailable|closed|socket"):
        c.fetch([1], ["BODY.PEEK[]"])
    db.mount(3)
