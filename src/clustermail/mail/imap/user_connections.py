"""Logged-in IMAP connections per (user, client address), capped like Dovecot's
``mail_max_userip_connections``: one account cannot take the server's connection slots
(and each session's memory) for itself from one place. Pure; the server keeps one."""

from __future__ import annotations

from collections import Counter

#: Dovecot's default for ``mail_max_userip_connections``.
DEFAULT_LIMIT = 10


class UserConnections:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError("the connection limit per user and address must be at least 1")
        self.limit = limit
        self._counts: Counter[tuple[str, str]] = Counter()

    def acquire(self, user: str, address: str) -> bool:
        """Counts a login; False (and nothing counted) when the pair is at its limit."""
        key = (user.lower(), address)
        if self._counts[key] >= self.limit:
            return False
        self._counts[key] += 1
        return True

    def release(self, user: str, address: str) -> None:
        key = (user.lower(), address)
        if self._counts[key] <= 1:
            self._counts.pop(key, None)
        else:
            self._counts[key] -= 1

    def count(self, user: str, address: str) -> int:
        return self._counts.get((user.lower(), address), 0)
