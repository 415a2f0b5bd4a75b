"""The campaign's clients: paced SMTP senders and IMAP readers, one of each per
virtual server, each in its own thread, reconnecting after any error.

A sender numbers its messages and keeps, for each, what the server said: a 250
(acknowledged: it must be in the mailbox exactly once), a definite refusal
(4xx/5xx: it must not be), or nothing (the connection broke mid-transaction:
it may be there, at most once). The end time of every acknowledgement is kept
too; the gaps between them are the outage a client saw.
"""

from __future__ import annotations

import contextlib
import imaplib
import smtplib
import socket
import threading
import time
from dataclasses import dataclass, field


def subject(tag: str, vs: str, n: int) -> str:
    return f"cm {tag} {vs} {n}"


@dataclass
class Sender:
    """Sends numbered messages to ``rcpt`` at ``rate`` per second until stopped."""

    vs: str
    address: str
    port: int
    rcpt: str
    tag: str
    rate: float
    timeout: float = 3.0
    #: n -> monotonic time of its 250.
    acked: dict[int, float] = field(default_factory=dict)
    refused: set[int] = field(default_factory=set)
    unknown: set[int] = field(default_factory=set)
    #: Monotonic end times of the 250s, in order.
    ack_times: list[float] = field(default_factory=list)
    #: Monotonic times of the attempts that failed (no connection, no 250), in order.
    failure_times: list[float] = field(default_factory=list)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> tuple[dict[int, float], set[int], set[int]]:
        with self.lock:
            return dict(self.acked), set(self.refused), set(self.unknown)

    def last_ack(self) -> float | None:
        with self.lock:
            return self.ack_times[-1] if self.ack_times else None

    def acks_between(self, start: float, end: float) -> list[float]:
        with self.lock:
            return [t for t in self.ack_times if start <= t <= end]

    def failures_between(self, start: float, end: float) -> list[float]:
        with self.lock:
            return [t for t in self.failure_times if start <= t <= end]

    def run(self, stop: threading.Event) -> None:
        n = 0
        client: smtplib.SMTP | None = None
        period = 1.0 / self.rate
        next_at = time.monotonic()
        while not stop.is_set():
            next_at = max(next_at + period, time.monotonic() - period)
            stop.wait(max(0.0, next_at - time.monotonic()))
            if stop.is_set():
                break
            try:
                if client is None:
                    client = smtplib.SMTP(self.address, self.port, timeout=self.timeout)
                    if client.sock is not None:
                        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    client.ehlo("campaign.test")
            except (OSError, smtplib.SMTPException):
                self._drop(client)
                client = None
                continue
            n += 1
            body = (f"From: load@remote.test\r\nTo: {self.rcpt}\r\n"
                    f"Subject: {subject(self.tag, self.vs, n)}\r\n"
                    f"Message-ID: <{self.tag}.{self.vs}.{n}@campaign.test>\r\n\r\n"
                    f"message {n}\r\n")
            try:
                client.sendmail("load@remote.test", [self.rcpt], body)
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused,
                    smtplib.SMTPDataError):
                with self.lock:
                    self.refused.add(n)  # a definite answer: not taken
                self._drop(client)
                client = None
                continue
            except (OSError, smtplib.SMTPException):
                with self.lock:
                    self.unknown.add(n)  # no answer: it may or may not be stored
                self._drop(client)
                client = None
                continue
            now = time.monotonic()
            with self.lock:
                self.acked[n] = now
                self.ack_times.append(now)
        if client is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                client.quit()

    def _drop(self, client: smtplib.SMTP | None) -> None:
        with self.lock:
            self.errors += 1
            self.failure_times.append(time.monotonic())
        if client is not None:
            with contextlib.suppress(OSError):
                client.close()
        return None


@dataclass
class ImapReader:
    """An IMAP session that keeps reading the newest message of one mailbox."""

    address: str
    port: int
    user: str
    password: str
    reads: int = 0
    errors: int = 0

    def run(self, stop: threading.Event) -> None:
        imap: imaplib.IMAP4 | None = None
        while not stop.is_set():
            try:
                if imap is None:
                    imap = imaplib.IMAP4(self.address, self.port, timeout=5)
                    imap.login(self.user, self.password)
                    imap.select("INBOX", readonly=True)
                imap.noop()
                typ, _ = imap.fetch("*", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                if typ == "OK":
                    self.reads += 1
                stop.wait(0.5)
            except (OSError, imaplib.IMAP4.error, imaplib.IMAP4.abort):
                self.errors += 1
                if imap is not None:
                    with contextlib.suppress(OSError, imaplib.IMAP4.error):
                        imap.shutdown()
                imap = None
                stop.wait(0.3)
        if imap is not None:
            with contextlib.suppress(OSError, imaplib.IMAP4.error, imaplib.IMAP4.abort):
                imap.logout()
