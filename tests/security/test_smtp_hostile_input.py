"""Hostile SMTP input against the real server: control characters in addresses, a From:
header that is not the logged-in user's, recipient harvesting (tarpit, then disconnect),
junk-command floods, and long DATA lines (accepted up to the documented limit)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clustermail.mail.net.auth_throttle import AuthThrottle
from clustermail.mail.smtp.policy import SmtpLimits
from tests.security.mail_servers import (
    ALIAS,
    ALICE,
    BOB,
    AsyncClient,
    Servers,
    plain,
    start_servers,
)
from tests.support.mail_fakes import DOMAIN, PASSWORD

FAST = SmtpLimits(error_sleep_time=0.3)


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    s = await start_servers(tmp_path, limits=FAST,
                            throttle=AuthThrottle(base_delay=0.01, max_delay=0.01))
    yield s
    await s.stop()


async def session(port: int, *, login: str | None = None) -> AsyncClient:
    c = await AsyncClient.open(port)
    assert (await c.line()).startswith(b"220 ")
    await c.send(b"EHLO client.test\r\n")
    await c.reply()
    if login is not None:
        await c.send(b"AUTH PLAIN " + plain(login, PASSWORD) + b"\r\n")
        assert (await c.reply()).startswith(b"235 ")
    return c


async def command(c: AsyncClient, line: bytes) -> bytes:
    await c.send(line + b"\r\n")
    return await c.reply()


async def test_control_characters_in_addresses_are_refused(servers: Servers) -> None:
    c = await session(servers.smtp_ports.inbound)
    try:
        for bad in (b"a\x01b@elsewhere.test", b'"a\x00"@elsewhere.test', b"a\rb@x.test"):
            reply = await command(c, b"MAIL FROM:<" + bad + b">")
            assert reply.startswith(b"501 5.1.7"), reply
        assert (await command(c, b"MAIL FROM:<a@elsewhere.test>")).startswith(b"250 ")
        for bad in (b"al\x7fice@" + DOMAIN.encode(), b'"al\x01ice"@' + DOMAIN.encode(),
                    b"alice\r@" + DOMAIN.encode(), b"x\x1b[31m@" + DOMAIN.encode()):
            reply = await command(c, b"RCPT TO:<" + bad + b">")
            # 5.1.3, or 5.5.4 where aiosmtpd's parser already gives up (the "[")
            assert reply.startswith((b"501 5.1.3", b"501 5.5.4")), reply
            # the reply echoes the address without its control characters
            assert all(b >= 32 and b != 127 for b in reply.rstrip(b"\r\n")), reply
        # an authenticated client cannot queue one for relaying either
        auth = await session(servers.smtp_ports.submission, login=ALICE)
        await command(auth, b"MAIL FROM:<" + ALICE.encode() + b">")
        reply = await command(auth, b"RCPT TO:<bad\x01@elsewhere.test>")
        assert reply.startswith(b"501 5.1.3"), reply
        await auth.close()
    finally:
        await c.close()


async def send(c: AsyncClient, sender: str, rcpt: str, message: bytes) -> bytes:
    assert (await command(c, f"MAIL FROM:<{sender}>".encode())).startswith(b"250 ")
    assert (await command(c, f"RCPT TO:<{rcpt}>".encode())).startswith(b"250 ")
    assert (await command(c, b"DATA")).startswith(b"354 ")
    await c.send(message + b".\r\n")
    return await c.reply()


async def test_submission_checks_the_from_header_against_the_login(servers: Servers) -> None:
    c = await session(servers.smtp_ports.submission, login=ALICE)
    try:
        spoof = await send(c, ALICE, BOB, f"From: Bob <{BOB}>\r\n\r\nhi\r\n".encode())
        assert spoof.startswith(b"550 5.7.1"), spoof
        two = await send(c, ALICE, BOB,
                         f"From: {ALICE}\r\nFrom: {BOB}\r\n\r\nhi\r\n".encode())
        assert two.startswith(b"550 5.7.1"), two
        folded = await send(c, ALICE, BOB,
                            f"From: {ALICE},\r\n {BOB}\r\n\r\nhi\r\n".encode())
        assert folded.startswith(b"550 5.7.1"), folded
        garbage = await send(c, ALICE, BOB, b"From: nobody at all\r\n\r\nhi\r\n")
        assert garbage.startswith(b"550 5.6.0"), garbage
        own = await send(c, ALICE, BOB, f"From: Alice <{ALICE}>\r\n\r\nhi\r\n".encode())
        alias = await send(c, ALICE, BOB, f"From: {ALIAS.upper()}\r\n\r\nhi\r\n".encode())
        assert own.startswith(b"250 ") and alias.startswith(b"250 "), (own, alias)
    finally:
        await c.close()
    assert len(servers.inbox(BOB)) == 2
    # mail from outside (not logged in) is not the submission policy's business
    c = await session(servers.smtp_ports.inbound)
    try:
        inbound = await send(c, "x@elsewhere.test", BOB,
                             f"From: {ALICE}\r\n\r\nhi\r\n".encode())
        assert inbound.startswith(b"250 "), inbound
    finally:
        await c.close()


async def test_the_from_check_is_a_policy_option(tmp_path: Path) -> None:
    s = await start_servers(tmp_path, limits=SmtpLimits(reject_sender_login_mismatch=False))
    try:
        c = await session(s.smtp_ports.submission, login=ALICE)
        reply = await send(c, ALICE, BOB, f"From: {BOB}\r\n\r\nhi\r\n".encode())
        await c.close()
        assert reply.startswith(b"250 "), reply
    finally:
        await s.stop()


async def test_recipient_harvesting_is_slowed_then_disconnected(servers: Servers) -> None:
    """Postfix's defaults: after 10 errors each reply waits (here 0.3 s), at 20 the
    session ends with 421."""
    c = await session(servers.smtp_ports.inbound)
    try:
        assert (await command(c, b"MAIL FROM:<x@elsewhere.test>")).startswith(b"250 ")
        timings: list[tuple[bytes, float]] = []
        for n in range(25):
            started = time.monotonic()
            await c.send(f"RCPT TO:<guess{n}@{DOMAIN}>\r\n".encode())
            reply = await c.reply()
            timings.append((reply, time.monotonic() - started))
            if not reply or reply.startswith(b"421"):
                break
        try:
            last = await c.line()
        except ConnectionResetError:  # the server had closed when our 21st RCPT came
            last = b""
    finally:
        await c.close()
    replies = [r for r, _ in timings]
    assert all(r.startswith(b"550 5.1.1") for r in replies[:20]), replies
    assert replies[20].startswith(b"421 4.7.0"), replies  # then the door closes
    assert last == b""
    assert statistics.median(t for _, t in timings[:10]) < 0.1  # the first 10 at full speed
    assert all(t >= 0.3 for _, t in timings[10:20])  # then the tarpit


async def test_an_accepted_message_starts_the_error_count_over(servers: Servers) -> None:
    c = await session(servers.smtp_ports.inbound)
    try:
        await command(c, b"MAIL FROM:<x@elsewhere.test>")
        for n in range(15):
            assert (await command(c, f"RCPT TO:<n{n}@{DOMAIN}>".encode())).startswith(b"550")
        assert (await command(c, f"RCPT TO:<{BOB}>".encode())).startswith(b"250")
        assert (await command(c, b"DATA")).startswith(b"354")
        await c.send(b"Subject: ok\r\n\r\nhi\r\n.\r\n")
        assert (await c.reply()).startswith(b"250 ")
        await command(c, b"MAIL FROM:<x@elsewhere.test>")
        for n in range(15):  # 15 more errors: still under the hard limit
            assert (await command(c, f"RCPT TO:<m{n}@{DOMAIN}>".encode())).startswith(b"550")
    finally:
        await c.close()


async def test_junk_command_floods_end(servers: Servers) -> None:
    """Postfix's smtpd_junk_command_limit: NOOP/RSET/VRFY/HELP (and EHLO/HELO here) past
    100 count as errors, so a client cannot keep its connection forever with NOOPs, nor
    make the server answer endless pipelined EHLOs."""
    c = await session(servers.smtp_ports.inbound)  # its EHLO is the first junk command
    try:
        await c.send(b"NOOP\r\n" * 130)
        replies = [await c.reply() for _ in range(120)]
        end = await c.line()
    finally:
        await c.close()
    # junk 101 to 119 are errors 1 to 19, answered; the 20th error ends the session
    assert all(r.startswith(b"250 ") for r in replies[:119]), replies
    assert replies[119].startswith(b"421 4.7.0"), replies[119]
    assert end == b""


async def test_long_data_lines_are_accepted_up_to_the_limit(tmp_path: Path) -> None:
    s = await start_servers(tmp_path, limits=SmtpLimits(max_line_length=65_536))
    body_1200 = b"a" * 1200
    body_60k = b"b" * 60_000
    try:
        c = await session(s.smtp_ports.inbound)
        first = await send(c, "x@elsewhere.test", BOB,
                           b"Subject: long\r\n\r\n" + body_1200 + b"\r\n")
        second = await send(c, "x@elsewhere.test", BOB,
                            b"Subject: longer\r\n\r\n" + body_60k + b"\r\n")
        third = await send(c, "x@elsewhere.test", BOB,
                           b"Subject: too long\r\n\r\n" + b"c" * 70_000 + b"\r\n")
        after = await command(c, b"NOOP")  # the session carries on
        await c.close()
        assert first.startswith(b"250 ") and second.startswith(b"250 "), (first, second)
        assert third.startswith(b"500 5.5.6"), third
        assert after.startswith(b"250 ")
        stored = s.inbox(BOB)
        assert len(stored) == 2
        assert stored[0].endswith(b"\r\n\r\n" + body_1200 + b"\r\n")  # unchanged
        assert stored[1].endswith(b"\r\n\r\n" + body_60k + b"\r\n")
        # command lines keep their limit
        c = await session(s.smtp_ports.inbound)
        assert (await command(c, b"NOOP " + b"x" * 5000)).startswith(b"500 ")
        assert (await command(c, b"NOOP")).startswith(b"250 ")
        await c.close()
    finally:
        await s.stop()


async def test_many_sessions_tarpitted_at_once_do_not_slow_others(servers: Servers) -> None:
    """The tarpit waits on a timer, not on the event loop: 20 harvesting sessions sleep
    while a legitimate session is answered at once."""
    async def harvest(n: int) -> None:
        c = await session(servers.smtp_ports.inbound)
        await command(c, b"MAIL FROM:<x@elsewhere.test>")
        for k in range(18):
            await command(c, f"RCPT TO:<h{n}-{k}@{DOMAIN}>".encode())
        await c.close()

    harvesters = [asyncio.create_task(harvest(n)) for n in range(20)]
    c = await session(servers.smtp_ports.inbound)
    started = time.monotonic()
    for _ in range(20):
        assert (await command(c, b"NOOP")).startswith(b"250 ")
    elapsed = time.monotonic() - started
    await c.close()
    await asyncio.gather(*harvesters)
    assert elapsed < 5.0  # (the harvesters' replies wait 8 × 0.3 s each, 20 of them)


async def test_an_overlong_command_line_is_read_slowly(servers: Servers) -> None:
    """Past 64 KiB a command line is read at 256 KiB/s: 1 MB takes seconds, not
    milliseconds; it is answered 500 and the session goes on."""
    c = await AsyncClient.open(servers.smtp_ports.inbound)
    try:
        assert (await c.line()).startswith(b"220 ")
        started = time.monotonic()
        await c.send(b"NOOP " + b"x" * 1_000_000 + b"\r\nNOOP\r\n")
        assert (await c.reply()).startswith(b"500 ")
        elapsed = time.monotonic() - started
        assert (await c.reply()).startswith(b"250 ")
    finally:
        await c.close()
    assert elapsed >= 2.0, f"1 MB dropped in {elapsed:.2f} s"  # (1 MB - 64 KiB) / 256 KiB/s
