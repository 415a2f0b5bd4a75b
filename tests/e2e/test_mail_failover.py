"""Failover with mail: SMTP clients deliver continuously to all three virtual servers
while the node owning mail3 is killed; afterwards every message that got a 250 is
in the mailbox (read back over POP3 and IMAP at mail3's address), the clients
reconnect and continue, and IMAP sees the same UIDVALIDITY."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import poplib
import re
import smtplib
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.harness import (
    MAIL_PASSWORD,
    MAIL_USERS,
    mail_cluster,
    mail_port,
    owners,
    wait_for_imap_login,
)

USERS, PASSWORD = MAIL_USERS, MAIL_PASSWORD


@dataclass
class Sender:
    """Sends numbered messages to one user until stopped; reconnects on any error."""

    address: str
    port: int
    rcpt: str
    acked: list[int] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)  # no reply: may or may not be stored
    reconnects: int = 0

    def run(self, stop: threading.Event) -> None:
        n = 0
        client: smtplib.SMTP | None = None
        while not stop.is_set():
            try:
                if client is None:
                    client = smtplib.SMTP(self.address, self.port, timeout=5)
                    if client.sock is not None:
                        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    client.ehlo("sender.test")
                n += 1
                body = (f"From: sender@remote.test\r\nTo: {self.rcpt}\r\n"
                        f"Subject: seq {n}\r\nMessage-ID: <seq{n}.{self.rcpt}>\r\n\r\n"
                        f"message number {n}\r\n")
                try:
                    client.sendmail("sender@remote.test", [self.rcpt], body)
                except smtplib.SMTPResponseException:
                    raise
                except (OSError, smtplib.SMTPException):
                    self.unknown.append(n)
                    raise
                self.acked.append(n)
            except (OSError, smtplib.SMTPException):
                if client is not None:
                    with contextlib.suppress(OSError):
                        client.close()
                client = None
                self.reconnects += 1
                stop.wait(0.05)
        if client is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                client.quit()


def pop3_numbers(address: str, port: int, user: str) -> list[int]:
    pop = poplib.POP3(address, port, timeout=10)
    try:
        pop.user(user)
        pop.pass_(PASSWORD)
        count, _ = pop.stat()
        numbers = []
        for i in range(1, count + 1):
            _, lines, _ = pop.top(i, 0)
            for line in lines:
                m = re.match(rb"Subject: seq (\d+)", line)
                if m:
                    numbers.append(int(m.group(1)))
        return numbers
    finally:
        pop.quit()


def imap_login(address: str, port: int, user: str) -> tuple[imaplib.IMAP4, int, int]:
    imap = imaplib.IMAP4(address, port, timeout=10)
    imap.login(user, PASSWORD)
    typ, data = imap.select("INBOX")
    assert typ == "OK"
    exists = int(data[0] or b"0")
    oks = [r for r in imap.untagged_responses.get("OK", []) if isinstance(r, bytes)]
    found = re.search(rb"UIDVALIDITY (\d+)", b" ".join(oks))
    assert found is not None, oks
    return imap, int(found.group(1)), exists


async def test_acknowledged_mail_survives_a_node_kill(tmp_path: Path) -> None:
    async with mail_cluster(tmp_path) as (c, base, port):
        smtp_port, pop3_port, imap_port = (mail_port(port, n) for n in ("smtp", "pop3", "imap"))
        senders = {vs: Sender(f"{base}.{10 + i}", smtp_port, f"{USERS[vs]}@example.test")
                   for i, vs in enumerate(USERS, start=1)}
        await wait_for_imap_login(f"{base}.13", imap_port, "carol@example.test", PASSWORD)

        imap, uidvalidity, _ = imap_login(f"{base}.13", imap_port, "carol@example.test")
        stop = threading.Event()
        threads = [threading.Thread(target=s.run, args=(stop,), daemon=True)
                   for s in senders.values()]
        for t in threads:
            t.start()
        try:
            while len(senders["mail3"].acked) < 30:
                await asyncio.sleep(0.02)
            c.kill_node("node3")
            await c.wait_for(lambda s: owners(s)["mail3"] == "node4", timeout=60,
                             what="mail3 on node4")
            before = len(senders["mail3"].acked)
            while len(senders["mail3"].acked) < before + 30:  # the clients continue
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            for t in threads:
                await asyncio.to_thread(t.join, 15)
        assert senders["mail3"].reconnects >= 1

        for vs, sender in senders.items():
            got = pop3_numbers(f"{base}.{10 + list(USERS).index(vs) + 1}", pop3_port,
                               f"{USERS[vs]}@example.test")
            missing = sorted(set(sender.acked) - set(got))
            assert not missing, f"{vs}: acknowledged but lost: {missing}"
            duplicates = len(got) - len(set(got))
            print(f"{vs}: {len(sender.acked)} acknowledged, {len(sender.unknown)} without a "
                  f"reply, {duplicates} duplicates, {sender.reconnects} reconnects")
            assert set(got) <= set(sender.acked) | set(sender.unknown)

        # The IMAP client reconnects to the same address and finds the same mailbox.
        with contextlib.suppress(OSError, imaplib.IMAP4.abort):
            imap.noop()
        imap2, uidvalidity2, exists = imap_login(f"{base}.13", imap_port, "carol@example.test")
        try:
            assert uidvalidity2 == uidvalidity
            assert exists >= len(senders["mail3"].acked)
            _, data = imap2.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            seen = {int(m.group(1)) for part in data if isinstance(part, tuple)
                    if (m := re.search(rb"Subject: seq (\d+)", part[1]))}
            missing = sorted(set(senders["mail3"].acked) - seen)
            assert not missing, f"acknowledged but not seen over IMAP: {missing}"
        finally:
            imap2.logout()
