"""The RETR path as a client sees it, on real sockets: dot-stuffing edge cases through
poplib (both the inline read and the worker-thread read of a large message), the short
way of a plain ``RETR n`` against the state machine's answers byte for byte, pipelined
input larger than one socket read, a command split across packets, STLS after buffered
reads, and the command metrics."""

from __future__ import annotations

import asyncio
import poplib
import socket
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustermail.mail.net.listener import RECV_CHUNK
from clustermail.mail.pop3.protocol import (
    Maildrop,
    Pop3Session,
    Pop3Settings,
    Retrieve,
    dot_stuff,
)
from clustermail.mail.pop3.server import INLINE_READ
from clustermail.mail.store.mime import normalize_newlines
from clustermail.metrics import REGISTRY
from tests.support.mail_fakes import DOMAIN, PASSWORD
from tests.support.pop3_service import Pop3

ALICE = f"alice@{DOMAIN}"

#: (stored message, the lines poplib returns after undoing the dot-stuffing)
EDGE_CASES: list[tuple[bytes, list[bytes]]] = [
    (b".starts with a dot\r\n\r\nbody\r\n", [b".starts with a dot", b"", b"body"]),
    (b"S: x\r\n\r\n.\r\n..\r\n...x\r\n", [b"S: x", b"", b".", b"..", b"...x"]),
    (b"S: x\r\n\r\nno final line end", [b"S: x", b"", b"no final line end"]),
    (b"S: x\n\n.bare LF\nend\n", [b"S: x", b"", b".bare LF", b"end"]),
    (b"S: x\r\n\r\nmixed\n.dot\r\n", [b"S: x", b"", b"mixed", b".dot"]),
]


def login(pop3: Pop3) -> poplib.POP3:
    c = poplib.POP3(pop3.address, pop3.plain, timeout=10)
    c.user(ALICE)
    c.pass_(PASSWORD)
    return c


async def test_dot_stuffing_edge_cases_round_trip(pop3: Pop3) -> None:
    for raw, _ in EDGE_CASES:
        pop3.deliver(ALICE, raw)
    big_line = b"." + b"x" * 998 + b"\r\n"
    big = b"S: big\r\n\r\n" + big_line * (INLINE_READ // len(big_line) + 10)
    pop3.deliver(ALICE, big)

    def session() -> list[list[bytes]]:
        c = login(pop3)
        out = [c.retr(n)[1] for n in range(1, len(EDGE_CASES) + 2)]
        c.quit()
        return out

    got = await asyncio.to_thread(session)
    for (_, expected), lines in zip(EDGE_CASES, got, strict=False):
        assert lines == expected
    assert got[-1] == big.split(b"\r\n")[:-1]  # read off the loop, stuffed the same way


async def test_pipelined_input_larger_than_one_read(pop3: Pop3) -> None:
    pop3.deliver(ALICE, b"S: x\r\n\r\n.dot\r\n")
    count = RECV_CHUNK // len(b"RETR 1\r\n") + 500  # more than one read's worth

    def session() -> bytes:
        with socket.create_connection((pop3.address, pop3.plain), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            f = s.makefile("rb")
            f.readline()
            s.sendall(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
            f.readline(), f.readline()
            s.sendall(b"RETR 1\r\n" * count + b"QUIT\r\n")
            return f.read()

    data = await asyncio.to_thread(session)
    answer = b"+OK 14 octets\r\nS: x\r\n\r\n..dot\r\n.\r\n"
    assert data.count(answer) == count
    assert data.endswith(b"signing off\r\n")


async def test_command_split_across_packets_and_stls_after(pop3: Pop3) -> None:
    def session() -> tuple[bytes, bytes]:
        with socket.create_connection((pop3.address, pop3.plain), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            f = s.makefile("rb")
            f.readline()
            for byte in b"NOOP\r\n":  # one byte per packet: an unknown-before-login reply
                s.sendall(bytes([byte]))
            noop = f.readline()
            s.sendall(b"STLS\r\n")
            assert f.readline().startswith(b"+OK")
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            with ctx.wrap_socket(s, server_hostname="mail1") as t:
                t.sendall(f"USER {ALICE}\r\nPASS {PASSWORD}\r\nSTAT\r\n".encode())
                tf = t.makefile("rb")
                tf.readline(), tf.readline()
                return noop, tf.readline()

    noop, stat = await asyncio.to_thread(session)
    assert noop.startswith(b"-ERR")
    assert stat == b"+OK 0 0\r\n"


async def test_commands_are_counted(pop3: Pop3) -> None:
    pop3.deliver(ALICE, b"S: x\r\n\r\nbody\r\n")
    labels = {"protocol": "pop3", "command": "RETR"}
    before = REGISTRY.get_sample_value("clustermail_commands_total", labels) or 0.0

    def session() -> None:
        c = login(pop3)
        c.retr(1)
        c.retr(1)
        c.quit()

    await asyncio.to_thread(session)
    assert REGISTRY.get_sample_value("clustermail_commands_total", labels) == before + 2


def line_by_line(message: bytes) -> bytes:
    """RFC 1939 §3 spelled out: every CRLF, CR or LF ends a line; a line starting with
    "." gets another; a last line without an end gets CRLF; then ".CRLF"."""
    lines = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + x if x.startswith(b".") else x) + b"\r\n" for x in lines) + b".\r\n"


@given(st.lists(st.sampled_from([b"a", b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n."]),
                max_size=40))
def test_dot_stuff_fast_path_matches_line_by_line(parts: list[bytes]) -> None:
    message = b"".join(parts)
    assert dot_stuff(message) == line_by_line(message)
    if b"\n" not in message.replace(b"\r\n", b""):  # the store's (stored=True): no bare LF
        assert dot_stuff(message, stored=True) == line_by_line(message)


def test_a_stored_message_is_not_scanned_for_bare_lfs() -> None:
    """The store never keeps a bare LF, so RETR does not look for one on every message
    (one scan fewer); where it stuffs a line it still checks, and goes line by line."""
    assert dot_stuff(b"a\nb\r\n", stored=True) == b"a\nb\r\n.\r\n"
    assert dot_stuff(b"a\nb\r\n.c\r\n", stored=True) == line_by_line(b"a\nb\r\n.c\r\n")


@pytest.mark.parametrize("message", [
    b"a\r\nb\r\n",  # clean, nothing to stuff: the message as it is
    b".a\r\n.b\r\n..\r\n",  # clean, dots to stuff
    b"a\r\n.b\r\nc\rd\r\n",  # a line to stuff, then a bare CR
    b"a\r\n.b\r\nc\nd",  # a line to stuff, then a bare LF
    b"a\r\n.b\r",  # a bare CR at the end, after a line to stuff
    b"\na\r\n",  # a bare LF first
    b"a\r\r\n.b\r\n",  # a bare CR before a line to stuff
])
def test_dot_stuff_checks_line_ends_after_the_first_line_to_stuff(message: bytes) -> None:
    assert dot_stuff(message) == line_by_line(message)
    assert dot_stuff(message, None, b"+OK\r\n") == b"+OK\r\n" + line_by_line(message)
    if b"\n" not in message.replace(b"\r\n", b"") or b"\r\n." in message:
        assert dot_stuff(message, stored=True) == line_by_line(message)


async def test_store_gone_mid_session_closes_and_releases_the_lock(pop3: Pop3) -> None:
    pop3.deliver(ALICE, b"S: x\r\n\r\nbody\r\n")
    db = pop3.mail_store.store.database("SG1", "DB1")
    c = await asyncio.to_thread(login, pop3)
    db.dismount()  # as a failover's fencing does
    try:
        with pytest.raises((poplib.error_proto, OSError, EOFError)):
            await asyncio.to_thread(c.retr, 1)
    finally:
        c.close()
        db.mount(2)

    def again() -> bytes:
        c = login(pop3)
        lines = c.retr(1)[1]
        c.quit()
        return b"\r\n".join(lines)

    assert await asyncio.to_thread(again) == b"S: x\r\n\r\nbody"


#: Stored messages for the byte-for-byte comparison: leading dots, dot lines, no final
#: line end, bare LF (stored as CRLF), bare CR (stored as it is), 8-bit, one byte.
VARIED: list[bytes] = [
    b".starts with a dot\r\n\r\n.\r\n..\r\n",
    b"S: x\r\n\r\nno final line end",
    b"S: x\r\n\r\nends in a dot line\r\n.",
    b"S: x\n\n.bare LF\nend\n",
    b"S: x\r\n\r\nbare\rCR\r\n.dot\r",
    "S: caf\u00e9\r\n\r\n\u00fcber \xff\r\n".encode("latin-1") + b"\x80\x00\r\n",
    b"x",
]


def exchange(pop3: Pop3, chunks: list[bytes]) -> list[bytes]:
    """Logs in, then sends each chunk alone and reads its answers (one per line in it)."""
    with socket.create_connection((pop3.address, pop3.plain), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        f.readline()
        s.sendall(f"USER {ALICE}\r\n".encode())
        f.readline()
        s.sendall(f"PASS {PASSWORD}\r\n".encode())
        assert f.readline().startswith(b"+OK")
        out = []
        for chunk in chunks:
            s.sendall(chunk)
            for _ in range(chunk.count(b"\n")):
                first = f.readline()
                answer = first
                if first.startswith(b"+OK") and b"octets" in first:
                    while (line := f.readline()) != b".\r\n":
                        answer += line
                    answer += line
                out.append(answer)
        s.sendall(b"QUIT\r\n")
        return out


async def test_plain_retr_short_way_answers_byte_for_byte_as_the_state_machine(
    pop3: Pop3,
) -> None:
    for raw in VARIED:
        pop3.deliver(ALICE, raw)
    count = len(VARIED)
    # "RETR n" alone takes the short way (Pop3Session.retrieve_now); "retr  n" (two spaces)
    # goes through Pop3Session.handle in the read callback; "RETR n" pipelined with NOOP
    # goes through the session's coroutine.
    chunks: list[bytes] = []
    for n in range(1, count + 1):
        chunks += [b"RETR %d\r\n" % n, b"retr  %d\r\n" % n, b"RETR %d\r\nNOOP\r\n" % n]
    for bad in (b"0", b"%d" % (count + 1), b"99999999999", b"x"):  # the errors, both ways
        chunks += [b"RETR " + bad + b"\r\n", b"RETR  " + bad + b"\r\n"]
    chunks += [b"DELE 1\r\n", b"RETR 1\r\n", b"RETR  1\r\n"]
    got = await asyncio.to_thread(exchange, pop3, chunks)
    answers = iter(got)
    for raw in VARIED:
        stored = normalize_newlines(raw)
        expected = b"+OK %d octets\r\n" % len(stored) + line_by_line(stored)
        short, general, pipelined, noop = (next(answers) for _ in range(4))
        assert short == general == pipelined == expected
        assert noop == b"+OK\r\n"
    for _ in range(4):
        short, general = next(answers), next(answers)
        assert short.startswith(b"-ERR ") and short == general
    assert next(answers) == b"+OK message 1 deleted\r\n"
    short, general = next(answers), next(answers)
    assert short == general == b"-ERR message 1 is deleted\r\n"


def in_transaction(sizes: tuple[int, ...]) -> Pop3Session:
    session = Pop3Session(Pop3Settings(plaintext_allowed=True))
    session.login_succeeded(Maildrop(7, tuple(range(10, 10 + len(sizes))), sizes))
    return session


@given(st.binary(max_size=20) | st.from_regex(rb"\A(?i:retr) {1,2}[0-9+ -]{0,12}\r?\n?\Z"),
       st.sets(st.integers(1, 5), max_size=3))
def test_retrieve_now_is_handle_for_the_lines_it_takes(line: bytes, deleted: set[int]) -> None:
    sizes = (10, 300, 20, 5000, 1)
    short, general = in_transaction(sizes), in_transaction(sizes)
    short.deleted, general.deleted = set(deleted), set(deleted)
    taken = short.retrieve_now(line, 1000)
    if taken is not None:
        assert general.handle(line) == [taken]
        assert taken.size <= 1000
        # Busy until the message is given back: nothing else is taken meanwhile.
        assert not short.waits_in_transaction()
        assert short.retrieve_now(b"RETR 1\r\n", 1000) is None
        assert short.message_reply(taken, b"body") == b"+OK %d octets\r\nbody\r\n.\r\n" % (
            taken.size)
        assert short.waits_in_transaction()
    else:
        assert short.waits_in_transaction()  # untouched: handle() answers the line


@given(st.binary(max_size=60), st.binary(max_size=20))
def test_dot_stuff_after_a_head_is_the_head_then_the_stuffed_message(
    message: bytes, head: bytes
) -> None:
    assert dot_stuff(message, None, head) == head + line_by_line(message)


def test_retrieve_now_leaves_large_messages_and_other_states_alone() -> None:
    session = in_transaction((2000,))
    assert session.retrieve_now(b"RETR 1\r\n", 1999) is None
    assert session.retrieve_now(b"RETR 1\r\n", 2000) == Retrieve(10, 2000, None)
    assert session.retrieve_now(b"RETR 1\r\n", 2000) is None  # busy now
    fresh = Pop3Session(Pop3Settings(plaintext_allowed=True))
    assert fresh.retrieve_now(b"RETR 1\r\n", 2000) is None  # not logged in
