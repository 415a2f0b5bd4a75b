"""SMTP protocol tests with Python's smtplib against the service on real sockets."""

from __future__ import annotations

import asyncio
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from clustermail.mail.net.listener import AuthThrottle
from clustermail.mail.queue.store import read_messages
from clustermail.mail.smtp.policy import SmtpLimits
from clustermail.mail.store.quota import QuotaLimits
from tests.support.mail_fakes import DOMAIN, PASSWORD, FakeDirectory, Running, start_smtp

T = TypeVar("T")
ALICE, BOB, CAROL = f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"carol@{DOMAIN}"
ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")


def msg(subject: str = "hi", body: str = "hello", to: str = ALICE, frm: str = ALICE) -> bytes:
    return (f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@test>\r\n\r\n{body}\r\n").encode()


def tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def run(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def inbox(s: Running, address: str) -> list[bytes]:
    db = s.mail_store.store.database("SG1", "DB1")
    listing = db.list_messages(address, "INBOX")
    return [db.fetch_raw(address, "INBOX", uid) for uid in listing.uids]


def queued(s: Running) -> list[tuple[str, str]]:
    from clustermail.mail.queue.store import connect

    conn = connect(s.queue.path)
    try:
        return [(r.address, r.route) for m in read_messages(conn) for r in m.recipients]
    finally:
        conn.close()


async def test_ehlo_advertises_extensions(smtp: Running) -> None:
    def session() -> tuple[set[str], set[str]]:
        with smtplib.SMTP(smtp.address, smtp.ports.inbound, timeout=10) as c:
            c.ehlo("client.test")
            before = set(c.esmtp_features)
            c.starttls(context=tls())
            c.ehlo("client.test")
            return before, set(c.esmtp_features)

    before, after = await run(session)
    for ext in ("size", "8bitmime", "pipelining", "starttls", "enhancedstatuscodes", "smtputf8"):
        assert ext in before
    assert "auth" not in before  # AUTH only over TLS
    assert "auth" in after and "starttls" not in after


async def test_inbound_delivery_is_in_the_mailbox(smtp: Running) -> None:
    def send() -> tuple[int, bytes]:
        with smtplib.SMTP(smtp.address, smtp.ports.inbound, timeout=10) as c:
            c.ehlo("client.test")
            c.mail("someone@elsewhere.test")
            c.rcpt(ALICE)
            return c.data(msg("first"))

    code, text = await run(send)
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as ")
    stored = inbox(smtp, ALICE)
    assert len(stored) == 1
    assert stored[0].startswith(b"Received: from client.test ([127.0.0.1])")
    assert b"Subject: first" in stored[0]


async def test_commands_are_counted_and_timed(smtp: Running) -> None:
    from clustermail.metrics import REGISTRY

    def sample(name: str, command: str) -> float:
        return REGISTRY.get_sample_value(name, {"protocol": "smtp", "command": command}) or 0

    names = ("clustermail_commands_total", "clustermail_command_seconds_count",
             "clustermail_command_seconds_bucket")
    commands = ("EHLO", "MAIL", "RCPT", "DATA")
    before = {(n, c): sample(n, c) for n in names[:2] for c in commands}

    def send() -> None:
        with smtplib.SMTP(smtp.address, smtp.ports.inbound, timeout=10) as c:
            c.ehlo("client.test")
            c.sendmail("someone@elsewhere.test", [ALICE, BOB], msg("timed"))

    await run(send)
    for command, times in (("EHLO", 1), ("MAIL", 1), ("RCPT", 2), ("DATA", 1)):
        for name in names[:2]:
            assert sample(name, command) - before[name, command] == times, (name, command)
    seconds = REGISTRY.get_sample_value("clustermail_command_seconds_sum",
                                        {"protocol": "smtp", "command": "DATA"})
    assert seconds is not None and seconds > 0
    assert REGISTRY.get_sample_value(names[2], {"protocol": "smtp", "command": "DATA",
                                                "le": "+Inf"}) == sample(names[1], "DATA")


async def test_aliases_and_subaddresses_expand(smtp: Running) -> None:
    def send() -> None:
        with smtplib.SMTP(smtp.address, smtp.ports.inbound, timeout=10) as c:
            c.sendmail("x@elsewhere.test", [f"team@{DOMAIN}", f"bob+tag@{DOMAIN}"], msg("team"))

    await run(send)
    assert len(inbox(smtp, ALICE)) == 1
    assert len(inbox(smtp, BOB)) == 1  # once, though named twice


async def test_no_open_relay_and_unknown_users(smtp: Running) -> None:
    def session() -> list[tuple[int, bytes]]:
        with smtplib.SMTP(smtp.address, smtp.ports.inbound, timeout=10) as c:
            c.ehlo("client.test")
            c.mail("x@elsewhere.test")
            return [c.rcpt("victim@elsewhere.test"), c.rcpt(f"nobody@{DOMAIN}"),
                    c.rcpt("not-an-address")]

    relay, unknown, bad = await run(session)
    assert relay[0] == 554 and relay[1].startswith(b"5.7.1")
    assert unknown[0] == 550 and unknown[1].startswith(b"5.1.1")
    assert bad[0] == 501 and bad[1].startswith(b"5.1.3")
    assert queued(smtp) == []


async def test_submission_needs_tls_and_auth(smtp: Running) -> None:
    def session() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        with smtplib.SMTP(smtp.address, smtp.ports.submission, timeout=10) as c:
            c.ehlo("client.test")
            no_auth = c.docmd("AUTH", "PLAIN AGFsaWNlAHB3")
            mail = c.mail(ALICE)
            return no_auth, mail

    no_auth, mail = await run(session)
    assert no_auth[0] == 538 and no_auth[1].startswith(b"5.7.11")
    assert mail[0] == 530 and mail[1].startswith(b"5.7.0")


async def test_authenticated_user_relays_only_as_self(smtp: Running) -> None:
    def session() -> tuple[tuple[int, bytes], dict[str, tuple[int, bytes]]]:
        with smtplib.SMTP(smtp.address, smtp.ports.submission, timeout=10) as c:
            c.starttls(context=tls())
            c.login(ALICE, PASSWORD)
            spoof = c.mail(BOB)
            c.rset()
            refused = c.sendmail(f"al@{DOMAIN}", ["friend@elsewhere.test", CAROL], msg("out"))
            return spoof, refused

    spoof, refused = await run(session)
    assert spoof[0] == 553 and spoof[1].startswith(b"5.7.1")
    assert refused == {}
    assert sorted(queued(smtp)) == [(CAROL, "vs:mail2"), ("friend@elsewhere.test", "external")]


async def test_implicit_tls_port_with_auth_login(smtp: Running) -> None:
    def session() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP_SSL(smtp.address, smtp.ports.submissions, timeout=10,
                              context=tls()) as c:
            c.ehlo("client.test")
            assert "starttls" not in c.esmtp_features
            c.login(BOB, PASSWORD)
            return c.sendmail(BOB, [ALICE], msg("tls", frm=BOB))

    assert await run(session) == {}
    assert len(inbox(smtp, ALICE)) == 1


async def test_auth_login_mechanism(smtp: Running) -> None:
    def session() -> tuple[int, bytes]:
        with smtplib.SMTP(smtp.address, smtp.ports.submission, timeout=10) as c:
            c.starttls(context=tls())
            c.ehlo("client.test")
            c.user, c.password = ALICE, PASSWORD
            return c.auth("LOGIN", c.auth_login, initial_response_ok=False)

    code, text = await run(session)
    assert code == 235 and text.startswith(b"2.7.0")


async def test_data_ends_at_the_first_lone_dot_however_it_arrives(smtp: Running) -> None:
    """Prose (lines ending in a full stop), a one-line message, dot-stuffing, and bytes
    after the end that look like another message: each section ends at its lone dot,
    whether it comes in one write with what follows or a byte at a time."""
    prose = b"".join(b"Sentence number %d ends here.\r\n" % i for i in range(40))
    bodies = [b"Subject: prose\r\n\r\n" + prose, b"Subject: one line.\r\n",
              b"Subject: dots\r\n\r\n..\r\n...leading.\r\n."[:-1] + b"\r\n"]
    tail = b"MAIL FROM:<a@elsewhere.test>\r\nRCPT TO:<" + ALICE.encode() + b">\r\n"

    def session(byte_at_a_time: bool) -> list[bytes]:
        with socket.create_connection((smtp.address, smtp.ports.inbound), timeout=10) as sock:
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(b"EHLO x\r\n")
            while not f.readline().startswith(b"250 "):
                pass
            replies = []
            for body in bodies:
                sock.sendall(tail + b"DATA\r\n")
                replies += [f.readline(), f.readline(), f.readline()]
                stuffed = body.replace(b"\r\n.", b"\r\n..")
                data = stuffed + b".\r\nNOOP\r\n"  # the next command in the same write
                if byte_at_a_time:
                    for i in range(len(data)):
                        sock.send(data[i:i + 1])
                else:
                    sock.sendall(data)
                replies += [f.readline(), f.readline()]
            return replies

    for byte_at_a_time in (False, True):
        replies = await asyncio.to_thread(session, byte_at_a_time)
        assert [r[:3] for r in replies] == [b"250", b"250", b"354", b"250", b"250"] * 3
    stored = inbox(smtp, ALICE)
    assert len(stored) == 6
    for got, body in zip(stored, bodies * 2, strict=True):
        assert got.endswith(b"\r\n" + body)  # after the Received field


async def test_bare_lf_long_lines_and_size(tmp_path: object, directory: FakeDirectory) -> None:
    from pathlib import Path

    s = await start_smtp(Path(str(tmp_path)) / "d", directory,
                         limits=SmtpLimits(message_size_limit=5000, max_recipients=2,
                                           max_line_length=2000))

    def raw_data(payload: bytes) -> bytes:
        with socket.create_connection((s.address, s.ports.inbound), timeout=10) as sock:
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(b"EHLO x\r\n")
            while not f.readline().startswith(b"250 "):
                pass
            sock.sendall(b"MAIL FROM:<a@elsewhere.test>\r\nRCPT TO:<" + ALICE.encode()
                         + b">\r\nDATA\r\n")
            f.readline(), f.readline(), f.readline()
            sock.sendall(payload + b".\r\n")
            return f.readline()

    def too_many() -> tuple[int, bytes]:
        with smtplib.SMTP(s.address, s.ports.inbound, timeout=10) as c:
            c.ehlo("x")
            c.mail("a@elsewhere.test")
            c.rcpt(ALICE)
            c.rcpt(BOB)
            return c.rcpt(f"team@{DOMAIN}")

    try:
        smuggle = await run(lambda: raw_data(b"Subject: x\r\n\r\nhi\n.\nMAIL FROM:<x>\r\n"))
        assert smuggle.startswith(b"550 5.6.0"), smuggle
        bare_cr = await run(lambda: raw_data(b"Subject: x\r\n\r\nhi\rthere\r\n"))
        assert bare_cr.startswith(b"550 5.6.0"), bare_cr
        long_line = await run(lambda: raw_data(b"Subject: x\r\n\r\n" + b"a" * 2100 + b"\r\n"))
        assert long_line.startswith(b"500 5.5.6"), long_line
        big = await run(lambda: raw_data(b"Subject: x\r\n\r\n" + (b"a" * 900 + b"\r\n") * 10))
        assert big.startswith(b"552 5.3.4"), big
        assert (await run(too_many))[0] == 452
        size_param = await run(lambda: _mail_with_size(s, 6000))
        assert size_param[0] == 552 and size_param[1].startswith(b"5.3.4")
        assert inbox(s, ALICE) == []
    finally:
        await s.stop()
        s.mail_store.close()


def _mail_with_size(s: Running, size: int) -> tuple[int, bytes]:
    with smtplib.SMTP(s.address, s.ports.inbound, timeout=10) as c:
        c.ehlo("x")
        return c.mail("a@elsewhere.test", [f"SIZE={size}"])


async def test_failed_logins_are_throttled(tmp_path: object, directory: FakeDirectory) -> None:
    from pathlib import Path

    s = await start_smtp(Path(str(tmp_path)) / "d", directory,
                         throttle=AuthThrottle(max_failures=3, base_delay=0.01, max_delay=0.01))

    def attempts() -> list[int]:
        codes = []
        with smtplib.SMTP(s.address, s.ports.submission, timeout=10) as c:
            c.starttls(context=tls())
            c.ehlo("x")
            for _ in range(4):
                codes.append(c.docmd("AUTH", "PLAIN " + _plain(ALICE, "wrong"))[0])
            codes.append(c.docmd("AUTH", "PLAIN " + _plain(ALICE, PASSWORD))[0])
        return codes

    try:
        assert await run(attempts) == [535, 535, 535, 454, 454]
    finally:
        await s.stop()
        s.mail_store.close()


def _plain(user: str, password: str) -> str:
    import base64

    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def test_clients_gone_right_after_the_greeting_give_their_slots_back(
    smtp: Running,
) -> None:
    """A client that closes as soon as it has read the greeting (a port scanner, a
    health check) ends its session: its task is cancelled before the read loop, and the
    connection slot came back only if the transport was closed on EOF."""

    def connect_and_close() -> None:
        for _ in range(20):
            with socket.create_connection((smtp.address, smtp.ports.inbound), timeout=10) as s:
                assert s.makefile("rb").readline().startswith(b"220 ")
            time.sleep(0.05)  # one at a time: each closes while its greeting is settling

    await run(connect_and_close)
    admission = smtp.service.listener.admission
    async with asyncio.timeout(10):
        while admission.active:
            await asyncio.sleep(0.02)


async def test_help_names_each_overridden_command_with_its_own_syntax(smtp: Running) -> None:
    def help_lines() -> dict[str, bytes]:
        with smtplib.SMTP(smtp.address, smtp.ports.inbound, timeout=10) as c:
            c.ehlo("x")
            return {cmd: c.docmd("HELP", cmd)[1] for cmd in ("EHLO", "STARTTLS", "DATA")}

    got = await run(help_lines)
    assert b"EHLO hostname" in got["EHLO"]
    assert b"STARTTLS" in got["STARTTLS"] and b"EHLO" not in got["STARTTLS"]
    assert b"DATA" in got["DATA"]


async def test_every_reply_has_an_enhanced_code(smtp: Running) -> None:
    commands = [b"NOOP", b"MAIL FROM:<a@b.test>", b"HELO", b"EHLO x", b"RSET", b"VRFY alice",
                b"HELP", b"BOGUS", b"RCPT TO:<a@b.test>", b"DATA", b"MAIL FROM:<a@b.test> X=Y",
                b"MAIL FROM:<a@elsewhere.test>", b"MAIL FROM:<b@elsewhere.test>",
                b"STARTTLS now", b"AUTH", b"EXPN x", b"QUIT"]

    def session() -> list[tuple[bytes, bytes]]:
        out = []
        with socket.create_connection((smtp.address, smtp.ports.inbound), timeout=10) as sock:
            f = sock.makefile("rb")
            f.readline()
            for cmd in commands:
                sock.sendall(cmd + b"\r\n")
                while True:
                    line = f.readline()
                    out.append((cmd, line))
                    if line[3:4] != b"-":
                        break
        return out

    for cmd, line in await run(session):
        if cmd.startswith(b"EHLO"):
            continue
        assert ENHANCED.match(line.decode()), (cmd, line)


async def test_quota_refused_at_rcpt(smtp: Running) -> None:
    db = smtp.mail_store.store.database("SG1", "DB1")
    db.set_quota_sync(BOB, QuotaLimits(prohibit_send_receive=100))

    def session() -> tuple[int, bytes]:
        with smtplib.SMTP(smtp.address, smtp.ports.inbound, timeout=10) as c:
            c.ehlo("x")
            c.mail("a@elsewhere.test", ["SIZE=500"])
            return c.rcpt(BOB)

    code, text = await run(session)
    assert code == 552 and text.startswith(b"5.2.2")


@pytest.mark.parametrize("utf8", [True])
async def test_smtputf8_addresses(smtp: Running, directory: FakeDirectory, utf8: bool) -> None:
    directory.add(f"jörg@{DOMAIN}")
    smtp.mail_store.sync_mailboxes()

    def send() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP(smtp.address, smtp.ports.inbound, timeout=10) as c:
            c.ehlo("x")
            return c.sendmail("zoë@elsewhere.test", [f"jörg@{DOMAIN}"],
                              "Subject: ü\r\n\r\nhallo\r\n".encode(), mail_options=["SMTPUTF8"])

    assert await run(send) == {}
    assert len(inbox(smtp, f"jörg@{DOMAIN}")) == 1


async def test_idle_clients_and_connection_limits(tmp_path: object,
                                                  directory: FakeDirectory) -> None:
    from pathlib import Path

    from clustermail.mail.net.listener import ListenerLimits

    s = await start_smtp(Path(str(tmp_path)) / "d", directory,
                         limits=SmtpLimits(timeout=0.5),
                         listener_limits=ListenerLimits(max_per_client=2))

    def idle() -> bytes:
        with socket.create_connection((s.address, s.ports.inbound), timeout=10) as sock:
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<")  # then nothing
            rest = b""
            while chunk := sock.recv(4096):
                rest += chunk
            return rest

    def limits() -> bytes:
        a = socket.create_connection((s.address, s.ports.inbound), timeout=10)
        b = socket.create_connection((s.address, s.ports.submission), timeout=10)
        try:
            a.makefile("rb").readline(), b.makefile("rb").readline()
            with socket.create_connection((s.address, s.ports.inbound), timeout=10) as c:
                return c.makefile("rb").readline()
        finally:
            a.close()
            b.close()

    try:
        started = asyncio.get_running_loop().time()
        rest = await run(idle)  # the server hangs up on the slow client
        assert asyncio.get_running_loop().time() - started < 5
        assert b"250 2.1.0" in rest
        assert (await run(limits)).startswith(b"421 4.7.0")
        await asyncio.sleep(0.2)
        assert s.service.listener.admission.active == 0
    finally:
        await s.stop()
        s.mail_store.close()


async def test_idle_timeout_counts_from_the_last_command(tmp_path: object,
                                                        directory: FakeDirectory) -> None:
    """Every complete command moves the idle deadline (the timer is not restarted per
    command, so this checks the deadline it keeps): a session that goes on talking for
    several timeouts stays, and once it is silent it is told why and closed."""
    from pathlib import Path

    s = await start_smtp(Path(str(tmp_path)) / "d", directory, limits=SmtpLimits(timeout=0.6))

    def session() -> tuple[list[bytes], bytes, float]:
        with socket.create_connection((s.address, s.ports.inbound), timeout=10) as sock:
            f = sock.makefile("rb")
            f.readline()
            replies = []
            for _ in range(8):  # 8 × 0.2 s: well past the 0.6 s timeout
                sock.sendall(b"NOOP\r\n")
                replies.append(f.readline())
                time.sleep(0.2)
            silent = time.monotonic()
            goodbye = f.readline()
            return replies, goodbye, time.monotonic() - silent

    try:
        replies, goodbye, waited = await run(session)
        assert all(r.startswith(b"250 ") for r in replies)
        assert goodbye.startswith(b"421 4.4.2") and b"timeout exceeded" in goodbye
        assert 0.3 < waited < 5  # the timeout ran from the last NOOP (sent 0.2 s before)
    finally:
        await s.stop()
        s.mail_store.close()


async def test_offline_ends_open_sessions(tmp_path: object, directory: FakeDirectory) -> None:
    from pathlib import Path

    s = await start_smtp(Path(str(tmp_path)) / "d", directory)
    sock = await run(lambda: socket.create_connection((s.address, s.ports.inbound), timeout=10))
    try:
        assert (await run(lambda: sock.recv(1024))).startswith(b"220 ")
        await s.stop()
        assert await run(lambda: sock.recv(1024)) == b""  # closed by the server
    finally:
        sock.close()
        s.mail_store.close()


async def test_mail_loops_are_refused(smtp: Running) -> None:
    looped = b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n" * 50 + msg("loop")

    def send() -> tuple[int, bytes]:
        with smtplib.SMTP(smtp.address, smtp.ports.inbound, timeout=10) as c:
            c.ehlo("x")
            c.mail("a@elsewhere.test")
            c.rcpt(ALICE)
            return c.data(looped)

    code, text = await run(send)
    assert code == 554 and text.startswith(b"5.4.6")
    assert inbox(smtp, ALICE) == []
