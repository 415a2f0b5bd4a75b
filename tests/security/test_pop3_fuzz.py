"""Fuzzing POP3: the pure state machine with random lines and random outcomes from the
shell (logins that fail or succeed, messages that vanish, updates that fail), and the real
server over sockets. No exception, no hang, every line answered, invariants kept; the
numbers of inputs tried are in docs/security.md ("Fuzzing")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustermail.mail.net.auth_throttle import AuthThrottle
from clustermail.mail.pop3.protocol import (
    MAX_LINE,
    Authenticate,
    Close,
    Maildrop,
    Pop3Session,
    Pop3Settings,
    Reply,
    Retrieve,
    StartTls,
    State,
    Update,
)
from tests.security.mail_servers import ALICE, AsyncClient, Servers, start_servers
from tests.support.mail_fakes import PASSWORD

STATE_MACHINE_RUNS = 1000  # hypothesis examples, each up to 40 lines
SOCKET_SESSIONS = 200  # hypothesis examples, each one session of up to 20 lines

COMMANDS = [b"USER a", b"PASS b", b"STAT", b"LIST", b"LIST 1", b"LIST 0", b"RETR 1",
            b"RETR 3", b"DELE 1", b"DELE 2", b"TOP 1 0", b"TOP 2 99999999999", b"UIDL",
            b"UIDL 2", b"RSET", b"NOOP", b"CAPA", b"AUTH", b"AUTH PLAIN", b"AUTH PLAIN =",
            b"AUTH PLAIN AGEAYg==", b"AUTH LOGIN", b"APOP a b", b"STLS", b"STLS x",
            b"QUIT", b"QUIT now", b"LIST 99999999999", b"*", b"\x00", b"USER",
            b"PASS", b"retr 1", b" NOOP", b"NOOP\t", b"x" * (MAX_LINE + 10)]
line = st.sampled_from(COMMANDS) | st.binary(max_size=60).map(lambda b: b.replace(b"\n", b""))
outcome = st.integers(min_value=0, max_value=3)


def state(s: Pop3Session) -> State:
    return s.state  # read afresh (the type checker narrows the attribute)


@settings(max_examples=STATE_MACHINE_RUNS, deadline=None)
@given(st.lists(st.tuples(line, outcome), max_size=40), st.booleans(), st.booleans())
def test_state_machine(steps: list[tuple[bytes, int]], tls: bool, plaintext: bool) -> None:
    s = Pop3Session(Pop3Settings(plaintext_allowed=plaintext), tls=tls)
    for text, pick in steps:
        if s.state is State.UPDATE:
            assert s.handle(text) == []  # after QUIT nothing more is read
            break
        pending = s.handle(text)
        assert pending, text
        answered = False
        while pending:
            action = pending.pop(0)
            assert not s._busy or isinstance(action, Authenticate | Retrieve | Update)
            if isinstance(action, Reply):
                assert action.data.startswith((b"+OK", b"-ERR", b"+ ")), action
                assert action.data.endswith(b"\r\n")
                answered = True
            elif isinstance(action, StartTls):
                assert not s.tls and s.state is State.AUTHORIZATION
                if pick == 0:
                    pending.append(s.stls_refused())
                else:
                    pending.append(s.stls_ready())
                    s.tls_started()
            elif isinstance(action, Authenticate):
                assert s.tls or plaintext  # never a password in the clear unless allowed
                if pick == 0:
                    pending += s.login_succeeded(Maildrop(7, (3, 5, 9), (10, 20, 30)))
                else:
                    pending += s.login_failed("authentication failed")
            elif isinstance(action, Retrieve):
                assert s.state is State.TRANSACTION and action.uid in (3, 5, 9)
                raw = None if pick == 3 else b"Subject: x\r\n\r\n.body\r\n"
                pending += s.message(action, raw)
            elif isinstance(action, Update):
                assert state(s) is State.UPDATE
                pending += s.updated("disk full" if pick == 3 else None)
            elif isinstance(action, Close):
                assert state(s) is State.UPDATE
                answered = True
        assert answered, text
        assert not s._busy


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    s = await start_servers(tmp_path, throttle=AuthThrottle(base_delay=0.0, max_delay=0.0,
                                                            max_failures=10**6,
                                                            client_max_failures=10**6,
                                                            account_max_failures=10**6))
    for n in range(3):
        s.deliver(ALICE, f"Subject: m{n}\r\n\r\n.dotted\r\nbody\r\n".encode())
    yield s
    await s.stop()


async def test_real_server(servers: Servers) -> None:
    login = [f"USER {ALICE}".encode(), f"PASS {PASSWORD}".encode()]
    sessions = st.lists(st.sampled_from([*COMMANDS, *login]) | line, max_size=20)
    port = servers.pop3_ports.plain

    async def session(lines: list[bytes]) -> None:
        c = await AsyncClient.open(port)
        try:
            assert (await c.line()).startswith(b"+OK")
            for text in lines:
                await c.send(text + b"\r\n")
                first = await c.line()
                if not first:
                    return  # closed (QUIT)
                assert first.startswith((b"+OK", b"-ERR", b"+ ")), first
                if first.startswith(b"+OK Begin TLS"):
                    return  # a handshake is due, not text
                if first.startswith(b"-ERR line too long"):
                    assert await c.line() == b""  # and the server hung up
                    return
                if first.startswith(b"+ "):
                    await c.send(b"*\r\n")  # cancel AUTH PLAIN
                    assert (await c.line()).startswith(b"-ERR")
                    continue
                upper = text.upper()
                multiline = first.startswith(b"+OK") and (
                    upper.startswith((b"CAPA", b"RETR", b"TOP", b"AUTH"))
                    or upper.strip() in (b"LIST", b"UIDL"))
                while multiline and (got := await c.line()) != b".\r\n":
                    assert got, "the server closed inside a multi-line answer"
                if upper.startswith(b"QUIT") and first.startswith(b"+OK"):
                    return
        finally:
            await c.close()

    loop = asyncio.get_running_loop()

    @settings(max_examples=SOCKET_SESSIONS, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(sessions)
    def run(lines: list[bytes]) -> None:
        asyncio.run_coroutine_threadsafe(session(lines), loop).result(timeout=60)

    await asyncio.to_thread(run)
    async with asyncio.timeout(10):  # every session ended: slots and mailbox locks free
        while servers.pop3.listener.admission.active:
            await asyncio.sleep(0.05)
    assert servers.pop3.locks._held == set()
