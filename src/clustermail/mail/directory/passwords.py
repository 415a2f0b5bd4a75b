"""Password hashes: argon2id, computed off the event loop.

Parameters are argon2-cffi's defaults, RFC 9106's second recommended option
(t=3 passes, 64 MiB, 4 lanes): ~0.15 s on this project's 2-core machine. The
hash string carries its parameters, so hashes made with other parameters still
verify, and :meth:`Passwords.needs_rehash` says when to upgrade one.

Each hash needs 64 MiB while it runs, so concurrent hashing is bounded (one per
core): a burst of logins queues instead of exhausting memory. Hashes run on their own
threads at a lower CPU priority (nice +10): a burst of logins then takes only the CPU
the event loop serving every session leaves (measured on two cores under a login flood:
SMTP and IMAP NOOP p99 from ~200 ms down to ~50 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

DEFAULT_HASHER = PasswordHasher()  # argon2id v19, t=3, m=65536 KiB, p=4, 16-byte salt
NICENESS = 10
T = TypeVar("T")


def _lower_priority() -> None:
    """Runs once in each hashing thread (argon2's lane threads inherit it)."""
    with contextlib.suppress(OSError, AttributeError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid,
                       min(19, os.getpriority(os.PRIO_PROCESS, tid) + NICENESS))


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None, concurrency: int | None = None):
        self.hasher = hasher or DEFAULT_HASHER
        self._limit = concurrency or max(1, os.cpu_count() or 1)
        self._slots: asyncio.Semaphore | None = None
        self._dummy: str | None = None
        self._threads = ThreadPoolExecutor(self._limit, "argon2", _lower_priority)

    def _semaphore(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._limit)
        return self._slots

    async def _run(self, work: Callable[[], T]) -> T:
        async with self._semaphore():
            return await asyncio.get_running_loop().run_in_executor(self._threads, work)

    async def hash(self, password: str) -> str:
        return await self._run(lambda: self.hasher.hash(password))

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches. With no hash (unknown user) a dummy hash is
        verified anyway, so the answer takes about as long either way."""
        if password_hash is None:
            if self._dummy is None:
                self._dummy = await self.hash(secrets.token_urlsafe(16))
            await self._verify(self._dummy, password)
            return False
        return await self._verify(password_hash, password)

    async def _verify(self, password_hash: str, password: str) -> bool:
        def run() -> bool:
            try:
                return self.hasher.verify(password_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return await self._run(run)

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return False
