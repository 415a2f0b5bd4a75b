"""The POP3 state machine without sockets."""

from __future__ import annotations

import base64
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from clustermail.mail.pop3.protocol import (
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
    dot_stuff,
)


def session(tls: bool = True, plaintext: bool = False) -> Pop3Session:
    return Pop3Session(Pop3Settings(hostname="pop.test", plaintext_allowed=plaintext), tls=tls)


def text(actions: Sequence[object]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Reply))


def logged_in(n: int = 3) -> Pop3Session:
    s = session()
    [auth] = s.handle(b"USER alice\r\n") and s.handle(b"PASS pw word\r\n")
    assert auth == Authenticate("alice", "pw word")
    s.login_succeeded(Maildrop(7, tuple(range(10, 10 + n)), tuple([100] * n)))
    return s


def test_plaintext_login_needs_tls() -> None:
    s = session(tls=False)
    assert text(s.handle(b"USER alice")).startswith(b"-ERR [AUTH]")
    caps = text(s.handle(b"CAPA"))
    assert b"STLS" in caps and b"USER" not in caps and b"SASL" not in caps
    actions = s.handle(b"STLS")
    assert isinstance(actions[-1], StartTls)
    s.tls_started()
    caps = text(s.handle(b"CAPA"))
    assert b"USER" in caps and b"SASL PLAIN" in caps and b"STLS" not in caps
    assert text(s.handle(b"STLS")).startswith(b"-ERR")


def test_loopback_setting_allows_plaintext() -> None:
    s = session(tls=False, plaintext=True)
    assert text(s.handle(b"USER alice")) == b"+OK send PASS\r\n"


def test_auth_plain_with_and_without_initial_response() -> None:
    blob = base64.b64encode(b"\0alice\0secret")
    s = session()
    assert s.handle(b"AUTH PLAIN " + blob) == [Authenticate("alice", "secret")]
    s = session()
    assert text(s.handle(b"AUTH PLAIN")) == b"+ \r\n"
    assert s.handle(blob + b"\r\n") == [Authenticate("alice", "secret")]
    s = session()
    assert text(s.handle(b"AUTH PLAIN !!!")).startswith(b"-ERR")
    assert text(s.handle(b"AUTH CRAM-MD5")).startswith(b"-ERR")
    assert text(s.handle(b"AUTH")).startswith(b"+OK")


def test_transaction_commands() -> None:
    s = logged_in()
    assert text(s.handle(b"STAT")) == b"+OK 3 300\r\n"
    assert text(s.handle(b"LIST")) == (
        b"+OK 3 messages (300 octets)\r\n1 100\r\n2 100\r\n3 100\r\n.\r\n"
    )
    assert text(s.handle(b"UIDL 2")) == b"+OK 2 7.11\r\n"
    assert text(s.handle(b"DELE 2")) == b"+OK message 2 deleted\r\n"
    assert text(s.handle(b"RETR 2")).startswith(b"-ERR message 2 is deleted")
    assert text(s.handle(b"LIST 9")).startswith(b"-ERR no message 9")
    assert text(s.handle(b"LIST x")).startswith(b"-ERR")
    assert text(s.handle(b"UIDL")) == b"+OK unique-id listing follows\r\n1 7.10\r\n3 7.12\r\n.\r\n"
    assert text(s.handle(b"RSET")).startswith(b"+OK maildrop has 3")
    s.handle(b"DELE 1")
    [retr] = s.handle(b"TOP 3 0")
    assert retr == Retrieve(12, 100, 0)
    out = text(s.message(retr, b"Subject: x\r\n\r\nbody\r\n"))
    assert out == b"+OK 100 octets\r\nSubject: x\r\n\r\n.\r\n"
    [update] = s.handle(b"QUIT")
    assert update == Update((10,))
    assert s.state is State.UPDATE
    actions = s.updated(None)
    assert isinstance(actions[-1], Close)


def test_dot_stuffing() -> None:
    assert dot_stuff(b"a\r\n.b\r\n..\r\n") == b"a\r\n..b\r\n...\r\n.\r\n"
    assert dot_stuff(b"no newline") == b"no newline\r\n.\r\n"
    assert dot_stuff(b"H: 1\r\n\r\nl1\r\nl2\r\n", 1) == b"H: 1\r\n\r\nl1\r\n.\r\n"


def _unstuff(response: bytes) -> list[bytes]:
    assert response.endswith(b".\r\n")
    lines = response[:-3].split(b"\r\n")
    assert lines[-1] == b""
    return [line[1:] if line.startswith(b".") else line for line in lines[:-1]]


@given(st.lists(st.sampled_from([b"", b".", b"..", b"a", b".x", b"b.", b" . "]), max_size=8),
       st.sampled_from([b"\r\n", b"\n", b"\r"]), st.booleans())
def test_dot_stuffing_round_trips(lines: list[bytes], eol: bytes, final_eol: bool) -> None:
    message = eol.join(lines) + (eol if final_eol and lines else b"")
    expected = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if expected and expected[-1] == b"":
        expected.pop()
    assert _unstuff(dot_stuff(message)) == expected


def test_commands_in_the_wrong_state() -> None:
    s = session()
    assert text(s.handle(b"STAT")).startswith(b"-ERR STAT is not allowed before login")
    assert text(s.handle(b"PASS x")).startswith(b"-ERR send USER first")
    s = logged_in()
    assert text(s.handle(b"USER bob")).startswith(b"-ERR USER is not allowed after login")
    assert text(s.handle(b"\xff\xfe")).startswith(b"-ERR")
    assert text(s.handle(b"")).startswith(b"-ERR")
    assert text(s.handle(b"x" * 5000)).startswith(b"-ERR line too long")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=80) | st.sampled_from(
    [b"USER a", b"PASS b", b"STAT", b"LIST 1", b"RETR 1", b"DELE 1", b"TOP 1 2", b"UIDL",
     b"RSET", b"NOOP", b"CAPA", b"AUTH PLAIN", b"STLS", b"QUIT", b"LIST 99999999999"]),
    max_size=30))
def test_fuzz_every_line_gets_an_answer(lines: list[bytes]) -> None:
    """Any input: no exception; each command yields a reply or an action; the session
    stays usable until QUIT."""
    s = logged_in() if lines and lines[0][:1] == b"\x00" else session()
    for line in lines:
        actions = s.handle(line)
        if s.state is State.UPDATE:
            break
        assert actions, line
        for a in actions:
            if isinstance(a, Reply):
                assert a.data.startswith((b"+OK", b"-ERR", b"+ ")) and a.data.endswith(b"\r\n")
            elif isinstance(a, Authenticate):
                s.login_succeeded(Maildrop(1, (1, 2), (10, 20)))
            elif isinstance(a, Retrieve):
                s.message(a, b"Subject: x\r\n\r\nbody\r\n")
            elif isinstance(a, StartTls):
                s.tls_started()
