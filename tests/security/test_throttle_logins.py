"""Login throttling against the real SMTP, POP3 and IMAP servers over the real directory
(argon2id in worker threads): a guesser's own successful login resets nothing, parallel
connections get no extra guesses, a full password-check queue answers at once with a
temporary error while returning users still get in, and logins the login cache answers
need no place in that queue."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from clustermail.mail.imap.server import ImapServer
from clustermail.mail.net.auth_throttle import AuthThrottle
from tests.security.mail_servers import (
    ALICE,
    BOB,
    AsyncClient,
    Servers,
    pop3_login,
    smtp_auth,
    start_servers,
)
from tests.support.mail_fakes import DOMAIN, PASSWORD


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    s = await start_servers(tmp_path, throttle=AuthThrottle(
        max_failures=3, base_delay=0.01, max_delay=0.01))
    yield s
    await s.stop()


async def test_own_login_does_not_reset_the_count_for_another_account(servers: Servers) -> None:
    port = servers.smtp_ports.submission

    replies = [await smtp_auth(port, BOB, "guess1"), await smtp_auth(port, BOB, "guess2")]
    replies.append(await smtp_auth(port, ALICE, PASSWORD))  # the guesser's own account
    replies += [await smtp_auth(port, BOB, "guess3"), await smtp_auth(port, BOB, "guess4")]
    replies.append(await pop3_login(servers.pop3_ports.plain, BOB, "guess5"))
    replies.append(await smtp_auth(port, BOB, PASSWORD))  # the right one: too late
    assert [r[:9] for r in replies] == [
        b"535 5.7.8", b"535 5.7.8", b"235 2.7.0", b"535 5.7.8", b"454 4.7.0",
        b"-ERR [LOG", b"454 4.7.0"], replies
    # bob from his own address is not affected
    ok = await smtp_auth(port, BOB, PASSWORD, "127.0.0.2")
    assert ok.startswith(b"235 ")


async def test_parallel_connections_get_no_extra_guesses(servers: Servers) -> None:
    """50 connections guess at once: only the budget (3) is checked, the rest are
    refused before their password is hashed."""
    port = servers.smtp_ports.submission

    replies = await asyncio.gather(*(smtp_auth(port, BOB, f"guess{n}") for n in range(50)))
    failed = [r for r in replies if r.startswith(b"535")]
    refused = [r for r in replies if r.startswith(b"454 4.7.0")]
    assert len(failed) <= 3 and len(failed) + len(refused) == 50, replies


async def test_a_full_password_queue_fails_fast_and_returning_users_get_in(
    tmp_path: Path,
) -> None:
    """Real argon2id checks in worker threads (one per core; 32 MiB each, so a check takes
    tens of milliseconds): a flood of logins from many addresses fills the queue; the
    excess is answered with a temporary error (SMTP 454 4.7.0, POP3 -ERR [SYS/TEMP])
    after the 1 s busy delay instead of waiting in the queue, and a user who logged in
    from its address before still gets a place."""
    throttle = AuthThrottle(max_in_flight=6, reserved_for_familiar=2,
                            max_in_flight_per_client=2)
    hasher = PasswordHasher(time_cost=2, memory_cost=32768, parallelism=1)
    s = await start_servers(tmp_path, throttle=throttle, hasher=hasher)
    try:
        smtp, pop3 = s.smtp_ports.submission, s.pop3_ports.plain
        assert (await smtp_auth(smtp, ALICE, PASSWORD, "127.0.0.9")).startswith(b"235")

        async def flood(n: int) -> tuple[bytes, float]:
            started = time.monotonic()
            source = f"127.0.3.{n + 1}"
            if n % 2:
                reply = await pop3_login(pop3, f"nobody{n}@{DOMAIN}", "wrong", source)
            else:
                reply = await smtp_auth(smtp, f"nobody{n}@{DOMAIN}", "wrong", source)
            return reply, time.monotonic() - started

        flooding = [asyncio.create_task(flood(n)) for n in range(30)]
        async with asyncio.timeout(10):
            while throttle.in_flight < 4:  # the flood holds every unreserved place
                await asyncio.sleep(0.01)
        mine = await smtp_auth(smtp, ALICE, PASSWORD, "127.0.0.9")
        results = await asyncio.gather(*flooding)
    finally:
        await s.stop()
    assert mine.startswith(b"235 "), mine
    busy = [(r, t) for r, t in results
            if r.startswith((b"454 4.7.0 Authentication service busy", b"-ERR [SYS/TEMP]"))]
    checked = [r for r, _ in results if r.startswith((b"535", b"-ERR [AUTH]"))]
    assert len(busy) >= 10 and len(checked) + len(busy) == 30, results
    assert max(t for _, t in busy) < 4.0  # after the busy delay, not after the queue


class GatedHasher(PasswordHasher):
    """argon2id whose verifications wait for ``gate`` (in their worker threads): slow
    checks that hold every verification slot for as long as the test needs."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.gate = threading.Event()
        self.gate.set()

    def verify(self, hash: str | bytes, password: str | bytes) -> Any:
        if not self.gate.wait(20):
            raise TimeoutError("the test never opened the gate")
        return super().verify(hash, password)


async def imap_login(port: int, user: str, password: str, source: str = "127.0.0.1") -> bytes:
    """LOGIN on an IMAP port; the tagged answer."""
    c = await AsyncClient.open(port, source)
    try:
        await c.line()
        await c.send(f"a LOGIN {user} {password}\r\n".encode())
        while True:
            line = await c.line()
            if not line or line.startswith(b"a "):
                return line
    finally:
        await c.close()


async def test_cached_logins_get_in_while_every_verification_slot_is_busy(
    tmp_path: Path,
) -> None:
    """IMAP and POP3 over the real directory and its login cache: while slow password
    checks hold every place of the in-flight limit, a returning user whose password the
    cache vouches for logs in at once, and one whose password needs checking is refused
    as before (IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP])."""
    throttle = AuthThrottle(max_in_flight=2, reserved_for_familiar=0,
                            max_in_flight_per_client=2, busy_delay=0.05)
    hasher = GatedHasher()
    s = await start_servers(tmp_path, throttle=throttle, hasher=hasher)
    imap = ImapServer(
        s.directory, lambda e: (s.mail_store.database_for(e), str(e.mailbox_id)),
        allow_plaintext_on_loopback=True, throttle=throttle,
    )
    port = int((await imap.listen("127.0.0.1", 0)).sockets[0].getsockname()[1])
    pop3 = s.pop3_ports.plain
    try:
        assert (await imap_login(port, ALICE, PASSWORD, "127.0.0.9")).startswith(b"a OK")
        hasher.gate.clear()
        slow = [asyncio.create_task(pop3_login(pop3, f"nobody{n}@{DOMAIN}", "x",
                                               f"127.0.3.{n + 1}")) for n in range(2)]
        async with asyncio.timeout(10):
            while throttle.in_flight < 2:  # both places held by a gated check
                await asyncio.sleep(0.01)
        async with asyncio.timeout(2):  # at once: nothing waits for the gate
            again = [await imap_login(port, ALICE, PASSWORD, "127.0.0.9") for _ in range(3)]
            again.append(await pop3_login(pop3, ALICE, PASSWORD, "127.0.0.9"))
            new_imap = await imap_login(port, BOB, PASSWORD, "127.0.0.7")
            new_pop3 = await pop3_login(pop3, BOB, PASSWORD, "127.0.0.7")
        assert throttle.in_flight == 2 and not any(t.done() for t in slow)
        hasher.gate.set()
        results = await asyncio.gather(*slow)
    finally:
        hasher.gate.set()
        await imap.close()
        await s.stop()
    assert all(r.startswith(b"a OK") for r in again[:3]), again
    assert again[3].startswith(b"+OK"), again
    assert new_imap.startswith(b"a NO [UNAVAILABLE]"), new_imap
    assert new_pop3.startswith(b"-ERR [SYS/TEMP]"), new_pop3
    assert all(r.startswith(b"-ERR [AUTH]") for r in results), results
    assert throttle.in_flight == 0
