"""Poison messages in the relay queue: a recipient that can never be sent bounces on its
own, a failing attempt is deferred with backoff, and nothing is ever retried in a loop.

Real queue file, real mail store, the real SMTP service and queue runner; the next hop
is an aiosmtpd server without SMTPUTF8."""

from __future__ import annotations

import asyncio
import email
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from clustermail.mail.backends import MailboxRef
from clustermail.mail.directory.addresses import parse_address
from clustermail.mail.queue.schedule import RetryPolicy
from clustermail.mail.queue.store import (
    EXTERNAL,
    LOCAL,
    NewMessage,
    NewRecipient,
    Queue,
    QueuedRecipient,
    connect,
    read_messages,
)
from clustermail.mail.queue.tracking import Query, log_files, search
from tests.support.mail_fakes import DOMAIN, FakeDirectory, Running, start_smtp
from tests.support.ports import free_port

ALICE = f"alice@{DOMAIN}"
BODY = b"From: alice@example.test\r\nSubject: poison\r\nMessage-ID: <p1@t>\r\n\r\nhello\r\n"


@dataclass
class NextHop:
    """An SMTP server that takes everything, without SMTPUTF8, and counts what it sees."""

    received: list[list[str]] = field(default_factory=list)
    transactions: int = 0

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        self.transactions += 1
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(list(envelope.rcpt_tos))
        return "250 OK"


@pytest.fixture
def hop() -> Iterator[tuple[NextHop, tuple[str, int]]]:
    handler = NextHop()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=False)
    controller.start()
    try:
        yield handler, ("127.0.0.1", port)
    finally:
        controller.stop()


@pytest.fixture
async def mail1(tmp_path: Path, hop: tuple[NextHop, tuple[str, int]]) -> AsyncIterator[Running]:
    d = FakeDirectory()
    d.add(ALICE)
    running = await start_smtp(tmp_path / "disk", d, smart_host=hop[1],
                               policy=RetryPolicy(base=30, max_interval=60))
    yield running
    await running.stop()
    running.mail_store.close()


async def enqueue(s: Running, *recipients: tuple[str, str]) -> None:
    """Queues as a message accepted before anyone checked its recipients would be."""
    await s.queue.enqueue(NewMessage(ALICE, tuple(NewRecipient(a, r) for a, r in recipients),
                                     BODY, "p1@t"))
    assert s.service.runner is not None
    s.service.runner.wake()


def inbox(s: Running) -> list[bytes]:
    db = s.mail_store.store.database("SG1", "DB1")
    return [db.fetch_raw(ALICE, "INBOX", uid) for uid in db.list_messages(ALICE, "INBOX").uids]


async def wait_for(pred: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def events(s: Running) -> list[tuple[str, str, str]]:
    s.tracking.flush()
    found = search(log_files([s.disk]), Query(message_id="p1@t"))
    return [(str(e["event"]), str(e["recipients"][0]), str(e["result"]))  # type: ignore[index]
            for e in found]


async def test_unsendable_recipients_bounce_and_the_others_go(
    mail1: Running, hop: tuple[NextHop, tuple[str, int]]
) -> None:
    handler, _ = hop
    await enqueue(mail1, ("ok@remote.test", EXTERNAL), ("bad\x01ctl@remote.test", EXTERNAL),
                  ("b\r\nRCPT TO:<x@remote.test>", EXTERNAL), ("jörg@remote.test", EXTERNAL),
                  ("also-ok@remote.test", EXTERNAL))
    await wait_for(lambda: mail1.queue.counts() == (0, 0) and len(inbox(mail1)) == 1)
    # One transaction at the next hop, with the sendable recipients only.
    assert handler.received == [["ok@remote.test", "also-ok@remote.test"]]
    assert handler.transactions == 1
    report = inbox(mail1)[0]
    bounce = email.message_from_bytes(report)
    assert bounce.get_content_type() == "multipart/report"
    assert report.count(b"Status: 5.1.3") == 2  # the control characters
    assert report.count(b"Status: 5.6.7") == 1  # RFC 6531: no SMTPUTF8 at the next hop
    assert sorted(events(mail1)) == sorted([
        ("relay", "ok@remote.test", "2.0.0"), ("relay", "also-ok@remote.test", "2.0.0"),
        ("fail", "bad\x01ctl@remote.test", "5.1.3"),
        ("fail", "b\r\nRCPT TO:<x@remote.test>", "5.1.3"),
        ("fail", "jörg@remote.test", "5.6.7"), ("bounce", ALICE, "5.1.3"),
    ])


async def test_a_non_ascii_sender_bounces_every_recipient(
    mail1: Running, hop: tuple[NextHop, tuple[str, int]]
) -> None:
    await mail1.queue.enqueue(NewMessage("jörg@example.test", (
        NewRecipient("ok@remote.test", EXTERNAL),), BODY, "p1@t"))
    assert mail1.service.runner is not None
    mail1.service.runner.wake()
    await wait_for(lambda: mail1.queue.counts() == (0, 0))
    assert hop[0].received == []
    assert ("fail", "ok@remote.test", "5.6.7") in events(mail1)


class ParsingDirectory(FakeDirectory):
    """Parses addresses as the real directory does before it looks them up."""

    async def mailbox(self, address: str) -> MailboxRef | None:
        parse_address(address)
        return await super().mailbox(address)


async def test_a_bad_local_address_bounces(tmp_path: Path) -> None:
    d = ParsingDirectory()
    d.add(ALICE)
    s = await start_smtp(tmp_path / "disk", d, policy=RetryPolicy(base=30, max_interval=60))
    try:
        await enqueue(s, ("al\x00ice@example.test", LOCAL), (ALICE, LOCAL))
        await wait_for(lambda: s.queue.counts() == (0, 0) and len(inbox(s)) == 2)
        assert ("fail", "al\x00ice@example.test", "5.1.3") in events(s)
        assert ("deliver", ALICE, "2.0.0") in events(s)
    finally:
        await s.stop()
        s.mail_store.close()


class UnreachableDirectory(FakeDirectory):
    """The directory's store is down: every lookup fails (and is counted)."""

    lookups: int = 0

    async def mailbox(self, address: str) -> MailboxRef | None:
        self.lookups += 1
        raise OSError("the coordination store is unreachable")


async def test_a_failing_lookup_is_deferred_with_backoff(tmp_path: Path) -> None:
    d = UnreachableDirectory()
    d.add(ALICE)
    s = await start_smtp(tmp_path / "disk", d, policy=RetryPolicy(base=30, max_interval=60))
    try:
        await enqueue(s, (ALICE, LOCAL))
        await wait_for(lambda: _attempts(s.queue) == 1)
        [rcpt] = _recipients(s.queue)
        assert rcpt.last_error == "4.3.0 directory: the coordination store is unreachable"
        assert rcpt.next_attempt >= time.time() + 25  # the policy's first interval
        looked_up = d.lookups
        await asyncio.sleep(0.5)  # the runner polls every 0.2 s: it must not try again
        assert d.lookups == looked_up == 1
    finally:
        await s.stop()
        s.mail_store.close()


async def test_an_attempt_that_cannot_be_recorded_is_held_back(
    tmp_path: Path, hop: tuple[NextHop, tuple[str, int]]
) -> None:
    # A newer owner opened the queue (epoch 2): our runner's writes are refused. The
    # message reached the next hop, but its outcome cannot be written: without a hold
    # it would be sent again and again, as fast as the hop answers.
    d = FakeDirectory()
    d.add(ALICE)
    s = await start_smtp(tmp_path / "disk", d, smart_host=hop[1],
                         policy=RetryPolicy(base=30, max_interval=60))
    newer = Queue(s.queue.path, time.time)
    try:
        await s.queue.enqueue(NewMessage(ALICE, (NewRecipient("ok@remote.test", EXTERNAL),),
                                         BODY, "p1@t"))
        newer.open(2)
        assert s.service.runner is not None
        s.service.runner.wake()
        await wait_for(lambda: hop[0].transactions == 1)
        await asyncio.sleep(1.0)  # five polls of the runner
        assert hop[0].transactions == 1
    finally:
        newer.close()
        await s.stop()
        s.mail_store.close()


def _recipients(queue: Queue) -> list[QueuedRecipient]:
    conn = connect(queue.path)
    try:
        return [r for m in read_messages(conn) for r in m.recipients]
    finally:
        conn.close()


def _attempts(queue: Queue) -> int:
    return sum(r.attempts for r in _recipients(queue))
