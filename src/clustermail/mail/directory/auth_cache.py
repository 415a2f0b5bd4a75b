"""A cache of successful logins, so a returning client does not pay for argon2id again.

Dovecot's ``auth_cache`` is the model: mail clients open several connections per account
and reconnect after every network change, and a memory-hard hash costs ~0.1–0.2 s of CPU,
so without a cache one virtual server verifies about eight logins a second.

What it holds, per successful verification: a keyed hash (HMAC-SHA256 under a random key
that lives only in this process's memory) of the login name and the password, mapped to
the stored password hash that verified it and an expiry. Nothing in it can be used
offline: without the process's key an entry does not even test a password guess.

Rules that keep it safe:
- Only successes are cached; a wrong password always goes through the real verification
  (and the login throttle), so a failure can never be turned into a success.
- A hit counts only while the mailbox still has the very hash that was verified: a
  password change (or a rehash) makes every older entry miss, at once, on every node.
- A disabled mailbox is refused by the caller before the cache is asked.
- Bounded in size (least recently used entries go first) and in time (``ttl``).

Pure: no I/O; the clock is passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

#: Entries kept at most (Dovecot's auth_cache_size is in bytes; ~100 bytes an entry).
DEFAULT_SIZE = 10_000
#: Seconds a verified login is trusted without verifying again (Dovecot: auth_cache_ttl
#: = 1 hour).
DEFAULT_TTL = 3600.0


@dataclass(frozen=True, slots=True)
class _Entry:
    password_hash: str
    expires: float


class AuthCache:
    def __init__(self, size: int = DEFAULT_SIZE, ttl: float = DEFAULT_TTL) -> None:
        if size < 0 or ttl < 0:
            raise ValueError("auth cache size and ttl must not be negative")
        self.size, self.ttl = size, ttl
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()

    def _digest(self, login: str, password: str) -> bytes:
        message = login.lower().encode("utf-8", "surrogatepass") + b"\0" + password.encode(
            "utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def hit(self, login: str, password: str, password_hash: str, now: float) -> bool:
        """Whether ``password`` was verified for ``login`` against ``password_hash``
        (the mailbox's current hash) less than ``ttl`` seconds ago."""
        if self.size == 0:
            return False
        digest = self._digest(login, password)
        entry = self._entries.get(digest)
        if entry is None:
            return False
        if entry.expires <= now or not hmac.compare_digest(entry.password_hash, password_hash):
            del self._entries[digest]
            return False
        self._entries.move_to_end(digest)
        return True

    def remember(self, login: str, password: str, password_hash: str, now: float) -> None:
        """Records a successful verification of ``password`` against ``password_hash``."""
        if self.size == 0 or self.ttl == 0:
            return
        digest = self._digest(login, password)
        self._entries[digest] = _Entry(password_hash, now + self.ttl)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
