"""Login throttling against the real SMTP and POP3 servers over the real directory
(argon2id in worker threads): a guesser's own successful login resets nothing, parallel
connections get no extra guesses, and a full password-check queue answers at once with a
temporary error while returning users still get in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from clustermail.mail.net.auth_throttle import AuthThrottle
from tests.security.mail_servers import (
    ALICE,
    BOB,
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
