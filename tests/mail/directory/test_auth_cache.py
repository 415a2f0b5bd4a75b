"""The login cache: returning users skip argon2id; nothing else changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from argon2 import PasswordHasher

from clustermail.coord import Store
from clustermail.mail.directory import Directory
from clustermail.mail.directory.auth_cache import AuthCache
from clustermail.mail.directory.passwords import Passwords


class CountingHasher(PasswordHasher):
    """argon2-cffi's hasher, counting the verifications it really runs."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Any:
        self.verified += 1
        return super().verify(hash, password)


def test_a_hit_needs_the_same_login_password_and_stored_hash() -> None:
    cache = AuthCache(size=10, ttl=60)
    cache.remember("Alice@example.test", "pw", "$hash1", now=0)
    assert cache.hit("alice@example.test", "pw", "$hash1", now=1)  # login names: any case
    assert not cache.hit("alice@example.test", "PW", "$hash1", now=1)
    assert not cache.hit("bob@example.test", "pw", "$hash1", now=1)
    assert not cache.hit("alice@example.test", "pw", "$hash2", now=1)  # password changed
    assert not cache.hit("alice@example.test", "pw", "$hash1", now=2)  # ...and it was dropped


def test_entries_expire_and_the_oldest_go_first() -> None:
    cache = AuthCache(size=2, ttl=10)
    cache.remember("a", "pw", "$h", now=0)
    assert not cache.hit("a", "pw", "$h", now=10)
    cache.remember("a", "pw", "$h", now=20)
    cache.remember("b", "pw", "$h", now=21)
    assert cache.hit("a", "pw", "$h", now=22)  # a is now the most recently used
    cache.remember("c", "pw", "$h", now=23)
    assert len(cache) == 2
    assert not cache.hit("b", "pw", "$h", now=24)
    assert cache.hit("a", "pw", "$h", now=24) and cache.hit("c", "pw", "$h", now=24)


def test_size_zero_turns_it_off() -> None:
    cache = AuthCache(size=0)
    cache.remember("a", "pw", "$h", now=0)
    assert not cache.hit("a", "pw", "$h", now=0) and len(cache) == 0
    with pytest.raises(ValueError):
        AuthCache(size=-1)


def test_no_password_is_kept() -> None:
    cache = AuthCache()
    cache.remember("alice@example.test", "a secret password", "$h", now=0)
    assert b"a secret password" not in repr(vars(cache)).encode()


@pytest.fixture
async def counted(store: Store, ns: str) -> AsyncIterator[tuple[Directory, CountingHasher]]:
    hasher = CountingHasher()
    directory = Directory(store, prefix=ns + "directory/", passwords=Passwords(hasher))
    await directory.add_domain("example.test")
    await directory.add_mailbox("alice@example.test", password="pw-alice", server="mail1")
    yield directory, hasher
    await directory.close()


async def test_a_returning_login_is_not_verified_again(
    counted: tuple[Directory, CountingHasher],
) -> None:
    d, hasher = counted
    for _ in range(5):
        assert await d.authenticate("alice@example.test", "pw-alice") is not None
    assert hasher.verified == 1


async def test_failures_are_never_cached_and_always_verified(
    counted: tuple[Directory, CountingHasher],
) -> None:
    d, hasher = counted
    assert await d.authenticate("alice@example.test", "pw-alice") is not None
    for _ in range(3):
        assert await d.authenticate("alice@example.test", "wrong") is None
    assert await d.authenticate("nobody@example.test", "pw-alice") is None
    assert hasher.verified == 5


async def test_password_change_and_disable_take_effect_at_once(
    counted: tuple[Directory, CountingHasher],
) -> None:
    d, _ = counted
    assert await d.authenticate("alice@example.test", "pw-alice") is not None
    await d.set_enabled("alice@example.test", False)
    assert await d.authenticate("alice@example.test", "pw-alice") is None
    await d.set_enabled("alice@example.test", True)
    await d.set_password("alice@example.test", "new secret")
    assert await d.authenticate("alice@example.test", "pw-alice") is None
    assert await d.authenticate("alice@example.test", "new secret") is not None


async def test_the_cache_alone_answers_without_hashing(
    counted: tuple[Directory, CountingHasher],
) -> None:
    """What the login guard asks before taking a verification slot: a hit, or None
    ("not known", never "wrong"), and never a hash."""
    d, hasher = counted
    assert await d.authenticate_cached("alice@example.test", "pw-alice") is None
    assert hasher.verified == 0
    assert await d.authenticate("alice@example.test", "pw-alice") is not None
    hit = await d.authenticate_cached("ALICE@example.test", "pw-alice")
    assert hit is not None and hit.address == "alice@example.test"
    assert await d.authenticate_cached("alice@example.test", "wrong") is None
    assert await d.authenticate_cached("nobody@example.test", "pw-alice") is None
    await d.set_enabled("alice@example.test", False)
    assert await d.authenticate_cached("alice@example.test", "pw-alice") is None
    assert hasher.verified == 1
