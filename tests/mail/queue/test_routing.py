"""Queue and routing in-process: two virtual servers on two loopback addresses sharing one
SQLite coordination store; retries while the target is down; bounces and expiry."""

from __future__ import annotations

import asyncio
import email
import json
import smtplib
import time
from pathlib import Path

from clustermail.cluster import keys
from clustermail.cluster.records import NameRecord
from clustermail.cluster.resources.network_name import name_key
from clustermail.coord import open_store
from clustermail.mail.queue.schedule import RetryPolicy
from clustermail.mail.queue.store import connect, read_messages
from clustermail.mail.queue.tracking import Query, log_files, search
from clustermail.mail.smtp.server import SmtpPorts
from tests.support.mail_fakes import DOMAIN, FakeDirectory, Running, start_smtp
from tests.support.ports import free_port

ALICE, CAROL = f"alice@{DOMAIN}", f"carol@{DOMAIN}"
MESSAGE = f"From: {ALICE}\r\nSubject: across\r\nMessage-ID: <x1@t>\r\n\r\nhello\r\n".encode()


def directory() -> FakeDirectory:
    d = FakeDirectory()
    d.add(ALICE, server="mail1")
    d.add(CAROL, server="mail2")
    return d


async def publish(store_url: str, vs: str, address: str, port: int) -> None:
    store = await open_store(store_url)
    try:
        await store.put(name_key(vs), NameRecord(name=vs, address=address, vs=vs, node="n",
                                                 epoch=1).to_store())
        config = {"nodes": {"n": {}}, "virtual_servers": {vs: {"resources": {
            "smtp": {"type": "smtp", "properties": {"port": port}}}}}}
        await store.put(keys.CONFIG, json.dumps(config))
    finally:
        await store.close()


def inbox(s: Running, address: str) -> list[bytes]:
    db = s.mail_store.store.database("SG1", "DB1")
    return [db.fetch_raw(address, "INBOX", uid) for uid in db.list_messages(address, "INBOX").uids]


async def wait_for(pred: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def send(s: Running, sender: str, rcpts: list[str], body: bytes = MESSAGE) -> None:
    with smtplib.SMTP(s.address, s.ports.inbound, timeout=10) as c:
        c.sendmail(sender, rcpts, body)


async def test_relay_to_a_virtual_server_that_comes_up_later(tmp_path: Path) -> None:
    d = directory()
    url = f"sqlite://{tmp_path}/cluster.db"
    mail1 = await start_smtp(tmp_path / "disk1", d, vs="mail1", address="127.0.0.1",
                             store_url=url)
    mail2: Running | None = None
    try:
        await asyncio.to_thread(send, mail1, "x@elsewhere.test", [CAROL])
        # mail2 is down: the message waits in mail1's queue, with retries noted
        await asyncio.sleep(0.8)
        conn = connect(mail1.queue.path)
        [queued] = read_messages(conn)
        conn.close()
        assert queued.recipients[0].route == "vs:mail2"
        assert queued.recipients[0].attempts >= 1
        assert "no address" in (queued.recipients[0].last_error or "")
        # mail2 comes up on its own address; its name is published
        ports = SmtpPorts(free_port("127.0.0.2"), free_port("127.0.0.2"), free_port("127.0.0.2"))
        mail2 = await start_smtp(tmp_path / "disk2", d, vs="mail2", address="127.0.0.2",
                                 store_url=url, ports=ports)
        await publish(url, "mail2", "127.0.0.2", ports.inbound)
        await wait_for(lambda: len(inbox(mail2, CAROL)) == 1)
        await wait_for(lambda: mail1.queue.counts() == (0, 0))
        [raw] = inbox(mail2, CAROL)
        assert raw.count(b"Received: ") == 2  # one hop per virtual server
        mail1.tracking.flush()
        mail2.tracking.flush()
        found = list(search(log_files([mail1.disk, mail2.disk]), Query(message_id="x1@t")))
        assert {e["event"] for e in found} >= {"receive", "defer", "relay"}
    finally:
        await mail1.stop()
        mail1.mail_store.close()
        if mail2 is not None:
            await mail2.stop()
            mail2.mail_store.close()


async def test_permanent_failure_bounces_to_the_sender(tmp_path: Path) -> None:
    d = directory()
    # The smart host is another server that refuses relaying (554 5.7.1): permanent.
    hop = await start_smtp(tmp_path / "hop", d, vs="mail9", address="127.0.0.3")
    mail1 = await start_smtp(tmp_path / "disk1", d, vs="mail1",
                             smart_host=(hop.address, hop.ports.inbound))
    try:
        def submit() -> None:
            import ssl

            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            with smtplib.SMTP(mail1.address, mail1.ports.submission, timeout=10) as c:
                c.starttls(context=ctx)
                c.login(ALICE, "secret-pw")
                c.sendmail(ALICE, ["friend@elsewhere.test"], MESSAGE)

        await asyncio.to_thread(submit)
        await wait_for(lambda: len(inbox(mail1, ALICE)) == 1)
        bounce = email.message_from_bytes(inbox(mail1, ALICE)[0])
        assert bounce.get_content_type() == "multipart/report"
        assert "Undelivered" in str(bounce["Subject"])
        assert b"Status: 5.7.1" in inbox(mail1, ALICE)[0]
        await wait_for(lambda: mail1.queue.counts() == (0, 0))
    finally:
        await mail1.stop()
        mail1.mail_store.close()
        await hop.stop()
        hop.mail_store.close()


async def test_expiry_bounces_but_never_a_bounce(tmp_path: Path) -> None:
    d = directory()
    mail1 = await start_smtp(tmp_path / "disk1", d, vs="mail1", policy=RetryPolicy(
        base=0.1, max_interval=0.2, expire_after=1.0, delay_notice_after=0.3))
    try:
        def submit(sender: str) -> None:
            import ssl

            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            with smtplib.SMTP(mail1.address, mail1.ports.submission, timeout=10) as c:
                c.starttls(context=ctx)
                c.login(ALICE, "secret-pw")
                c.sendmail(sender, ["friend@elsewhere.test"], MESSAGE)

        # no smart host: external mail waits, gets a delay notice, then expires
        await asyncio.to_thread(submit, ALICE)
        await wait_for(lambda: len(inbox(mail1, ALICE)) == 2, timeout=10)
        subjects = sorted(str(email.message_from_bytes(m)["Subject"]) for m in inbox(mail1, ALICE))
        assert subjects[0].startswith("Delivery delayed") and subjects[1].startswith("Undeliv")
        assert b"Status: 4.4.7" in b"".join(inbox(mail1, ALICE))
        await wait_for(lambda: mail1.queue.counts() == (0, 0))
    finally:
        await mail1.stop()
        mail1.mail_store.close()


async def test_null_sender_failure_is_dropped(tmp_path: Path) -> None:
    d = directory()
    mail1 = await start_smtp(tmp_path / "disk1", d, vs="mail1", policy=RetryPolicy(
        base=0.1, max_interval=0.2, expire_after=0.5))
    try:
        # a DSN (null sender) to a mailbox homed on a virtual server that never answers
        await asyncio.to_thread(send, mail1, "", [CAROL])
        await wait_for(lambda: mail1.queue.counts() == (0, 0), timeout=10)
        mail1.tracking.flush()
        found = list(search(log_files([mail1.disk]), Query()))
        assert [e["event"] for e in found if e["event"] in ("drop", "bounce")] == ["drop"]
        assert inbox(mail1, ALICE) == []
    finally:
        await mail1.stop()
        mail1.mail_store.close()
