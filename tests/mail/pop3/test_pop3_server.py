"""POP3 with Python's poplib against the service on real sockets."""

from __future__ import annotations

import asyncio
import poplib
import socket
import ssl
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.mail_fakes import DOMAIN, PASSWORD, FakeDirectory
from tests.support.pop3_service import Pop3, start_pop3

ALICE = f"alice@{DOMAIN}"


def tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def message(n: int) -> bytes:
    return f"Subject: m{n}\r\nFrom: x@y.test\r\n\r\nline one\r\n.dotted\r\nend {n}\r\n".encode()


async def test_retr_uidl_and_dele_at_quit(pop3: Pop3) -> None:
    for n in range(3):
        pop3.deliver(ALICE, message(n))

    def session() -> tuple[list[bytes], list[bytes], bytes]:
        c = poplib.POP3(pop3.address, pop3.plain, timeout=10)
        c.user(ALICE)
        c.pass_(PASSWORD)
        uidls = c.uidl()[1]
        _, lines, _ = c.retr(2)
        c.dele(1)
        top = c.top(3, 0)[1]
        c.quit()
        return uidls, lines, b"\r\n".join(top)

    uidls, lines, top = await asyncio.to_thread(session)
    assert len(uidls) == 3 and all(u.split()[1].count(b".") == 1 for u in uidls)
    assert lines == [b"Subject: m1", b"From: x@y.test", b"", b"line one", b".dotted", b"end 1"]
    assert top == b"Subject: m2\r\nFrom: x@y.test\r\n"

    def after() -> list[bytes]:
        c = poplib.POP3(pop3.address, pop3.plain, timeout=10)
        c.user(ALICE)
        c.pass_(PASSWORD)
        out = c.uidl()[1]
        c.quit()
        return out

    left = await asyncio.to_thread(after)
    # UIDLs of the remaining messages are unchanged (stable identifiers).
    assert [u.split()[1] for u in left] == [u.split()[1] for u in uidls[1:]]


async def test_stls_and_implicit_tls(tmp_path: Path, directory: FakeDirectory) -> None:
    p = await start_pop3(tmp_path / "d", directory, plaintext=False)
    p.deliver(ALICE, message(1))

    def stls() -> tuple[bytes, int]:
        c = poplib.POP3(p.address, p.plain, timeout=10)
        with pytest.raises(poplib.error_proto) as refused:
            c.user(ALICE)
        c.stls(context=tls())
        c.user(ALICE)
        c.pass_(PASSWORD)
        count = c.stat()[0]
        c.quit()
        return str(refused.value).encode(), count

    def implicit() -> int:
        c = poplib.POP3_SSL(p.address, p.tls, timeout=10, context=tls())
        c.user(ALICE)
        c.pass_(PASSWORD)
        count: int = c.stat()[0]
        c.quit()
        return count

    try:
        refused, count = await asyncio.to_thread(stls)
        assert b"[AUTH]" in refused and count == 1
        assert await asyncio.to_thread(implicit) == 1
    finally:
        await p.service.stop()
        p.mail_store.close()


async def test_maildrop_lock_and_wrong_server(pop3: Pop3) -> None:
    def session() -> tuple[str, str, str]:
        a = poplib.POP3(pop3.address, pop3.plain, timeout=10)
        a.user(ALICE)
        a.pass_(PASSWORD)
        b = poplib.POP3(pop3.address, pop3.plain, timeout=10)
        b.user(ALICE)
        with pytest.raises(poplib.error_proto) as in_use:
            b.pass_(PASSWORD)
        a.quit()
        b.user(ALICE)
        b.pass_(PASSWORD)  # free again after QUIT
        b.quit()
        c = poplib.POP3(pop3.address, pop3.plain, timeout=10)
        c.user(f"carol@{DOMAIN}")
        with pytest.raises(poplib.error_proto) as elsewhere:
            c.pass_(PASSWORD)
        c.user(ALICE)
        with pytest.raises(poplib.error_proto) as bad:
            c.pass_("wrong")
        c.quit()
        return str(in_use.value), str(elsewhere.value), str(bad.value)

    in_use, elsewhere, bad = await asyncio.to_thread(session)
    assert "[IN-USE]" in in_use
    assert "[SYS/PERM]" in elsewhere and "mail2" in elsewhere
    assert "[AUTH]" in bad


async def test_lock_released_when_client_vanishes(pop3: Pop3) -> None:
    def vanish() -> None:
        s = socket.create_connection((pop3.address, pop3.plain), timeout=10)
        f = s.makefile("rb")
        f.readline()
        s.sendall(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
        f.readline(), f.readline()
        s.close()  # no QUIT: no UPDATE, and the lock must go

    def login() -> bytes:
        c = poplib.POP3(pop3.address, pop3.plain, timeout=10)
        try:
            c.user(ALICE)
            return c.pass_(PASSWORD)
        finally:
            c.quit()

    await asyncio.to_thread(vanish)
    for _ in range(50):
        try:
            reply = await asyncio.to_thread(login)
            break
        except poplib.error_proto:
            await asyncio.sleep(0.05)  # the server may not have seen the close yet
    assert reply.startswith(b"+OK")


async def test_fuzzed_sessions_never_kill_the_server(pop3: Pop3) -> None:
    pop3.deliver(ALICE, message(1))
    lines_strategy = st.lists(
        st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"") + b"\r\n")
        | st.sampled_from([f"USER {ALICE}\r\n".encode(), f"PASS {PASSWORD}\r\n".encode(),
                           b"STAT\r\n", b"RETR 1\r\n", b"TOP 1 x\r\n", b"LIST -1\r\n",
                           b"DELE 0\r\n", b"AUTH PLAIN\r\n", b"UIDL 1 2\r\n", b"RSET\r\n",
                           b"A" * 3000 + b"\r\n"]),
        min_size=1, max_size=12)

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(lines_strategy)
    def run(lines: list[bytes]) -> None:
        with socket.create_connection((pop3.address, pop3.plain), timeout=10) as s:
            f = s.makefile("rb")
            assert f.readline().startswith(b"+OK")
            # "*" ends a pending AUTH exchange (else it is just an unknown command)
            s.sendall(b"".join(lines) + b"*\r\nQUIT\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            # every command got an answer, the last one the QUIT's (or the session closed)
            assert data.endswith(b"\r\n")
            assert b"Traceback" not in data
        # the server still serves new sessions
        with socket.create_connection((pop3.address, pop3.plain), timeout=10) as s:
            assert s.makefile("rb").readline().startswith(b"+OK")

    await asyncio.to_thread(run)


async def test_idle_sessions_are_closed(tmp_path: Path, directory: FakeDirectory) -> None:
    p = await start_pop3(tmp_path / "d", directory, idle_timeout=0.5)

    def session() -> tuple[bytes, float]:
        with socket.create_connection((p.address, p.plain), timeout=10) as s:
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"NOOP\r\n")
            f.readline()
            started = time.monotonic()
            rest = f.read()  # the server says why and hangs up after 0.5 s of silence
            return rest, time.monotonic() - started

    try:
        rest, waited = await asyncio.to_thread(session)
        assert rest == b"-ERR autologout: idle for too long\r\n" and 0.3 < waited < 5
        assert p.service.listener.admission.active == 0
    finally:
        await p.service.stop()
        p.mail_store.close()
