"""250 means durable: after the reply, the message survives a SIGKILL of the server."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
from pathlib import Path

from clustermail.mail.queue.store import connect, read_messages
from clustermail.mail.store import MailStore
from tests.support.mail_fakes import DOMAIN

N = 40


def test_acknowledged_messages_survive_sigkill(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.mail.smtp.smtp_child", str(disk), "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=Path(__file__).parents[3],
    )
    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["inbound"]
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
            for i in range(N):
                rcpts = [f"alice@{DOMAIN}"] + ([f"carol@{DOMAIN}"] if i % 4 == 0 else [])
                body = f"Subject: m{i}\r\nMessage-ID: <m{i}@t>\r\n\r\nbody {i}\r\n".encode()
                c.sendmail("x@elsewhere.test", rcpts, body)
            # The last reply is read: kill the server before it can do anything else.
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    store = MailStore(disk, create=False)
    store.mount(2)  # the next owner (a higher epoch)
    try:
        db = store.database("SG1", "DB1")
        listing = db.list_messages(f"alice@{DOMAIN}", "INBOX")
        assert len(listing) == N
    finally:
        store.dismount()
    conn = connect(disk / "queue" / "queue.sqlite")
    try:
        queued = read_messages(conn)
    finally:
        conn.close()
    # carol is homed on mail2, which never answered: her copies wait in the queue
    assert len(queued) == N // 4


def test_a_deposed_owner_cannot_write_the_queue(tmp_path: Path) -> None:
    import asyncio
    import time

    import pytest

    from clustermail.mail.queue.store import (
        EXTERNAL,
        NewMessage,
        NewRecipient,
        Queue,
        QueueFencedError,
        queue_path,
    )
    from clustermail.mail.store import FencedError

    old = Queue(queue_path(tmp_path), time.time)
    old.open(3)
    msg = NewMessage("a@x.test", (NewRecipient("b@y.test", EXTERNAL),), b"Subject: s\r\n\r\nb\r\n")
    asyncio.run(old.enqueue(msg))
    new = Queue(queue_path(tmp_path), time.time)
    new.open(4)  # the next owner, after a failover
    try:
        with pytest.raises(QueueFencedError):
            old.check_owner()
        with pytest.raises(FencedError):
            asyncio.run(old.enqueue(NewMessage("a@x.test", msg.recipients, b"x\r\n")))
        with pytest.raises(QueueFencedError):
            Queue(queue_path(tmp_path), time.time).open(3)  # an older owner cannot reopen
        assert new.counts() == (1, 1)  # the message moved with the disk
        new.check_owner()
    finally:
        old.close()
        new.close()
