"""Sample mailboxes and messages for the mail store tests."""

from __future__ import annotations

USERS = ("alice@example.test", "bob@example.test", "carol@example.test")


def message(n: int = 0, size: int = 0, subject: str = "hello") -> bytes:
    head = f"From: sender@example.test\r\nTo: alice@example.test\r\nSubject: {subject} {n}\r\n"
    body = f"message number {n}\r\n" + "x" * size
    return (head + "\r\n" + body + "\r\n").encode()
