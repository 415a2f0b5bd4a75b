"""The login guard's cache path: a hit takes no verification slot, a miss is checked
under the limit, and a lookup that fails or is cancelled leaves nothing held."""

from __future__ import annotations

import asyncio

import pytest

from clustermail.mail.net.auth_throttle import Attempt, AuthThrottle
from clustermail.mail.net.login_guard import cache_of, guarded_login


async def no_sleep(_: float) -> None:
    return None


def full(throttle: AuthThrottle) -> list[Attempt]:
    """Every verification slot held by another client's check."""
    held: list[Attempt] = []
    while throttle.in_flight < throttle.max_in_flight:
        attempt = throttle.begin(f"10.9.0.{len(held) + 1}", f"user{len(held)}")
        assert isinstance(attempt, Attempt), attempt
        held.append(attempt)
    return held


class Directory:
    """A checker with a login cache: ``cached`` users are vouched for without a check."""

    def __init__(self, cached: set[str]) -> None:
        self.cached, self.checked = cached, 0

    async def authenticate_cached(self, username: str, password: str) -> str | None:
        return username if username in self.cached and password == "pw" else None

    async def authenticate(self, username: str, password: str) -> str | None:
        self.checked += 1
        return username if password == "pw" else None


async def test_a_hit_needs_no_slot_and_a_miss_waits_for_one() -> None:
    throttle = AuthThrottle(max_in_flight=2, reserved_for_familiar=0)
    d = Directory({"alice"})
    held = full(throttle)
    hit = await guarded_login(throttle, "10.0.0.1", "alice", lambda: d.authenticate("alice", "pw"),
                              cached=cache_of(d, "alice", "pw"), sleep=no_sleep)
    miss = await guarded_login(throttle, "10.0.0.2", "bob", lambda: d.authenticate("bob", "pw"),
                               cached=cache_of(d, "bob", "pw"), sleep=no_sleep)
    assert (hit.outcome, hit.principal, miss.outcome, d.checked) == ("ok", "alice", "busy", 0)
    throttle.abandon(held.pop())
    checked = await guarded_login(throttle, "10.0.0.2", "bob", lambda: d.authenticate("bob", "pw"),
                                  cached=cache_of(d, "bob", "pw"), sleep=no_sleep)
    assert (checked.outcome, d.checked, throttle.in_flight) == ("ok", 1, 1)


def test_only_checkers_with_a_cache_get_a_lookup() -> None:
    assert cache_of(object(), "alice", "pw") is None
    assert cache_of(Directory(set()), "alice", "pw") is not None


async def test_a_failed_or_cancelled_lookup_holds_nothing() -> None:
    throttle = AuthThrottle()

    async def broken() -> str | None:
        raise OSError("directory unavailable")

    async def never() -> str | None:
        return None

    login = await guarded_login(throttle, "10.0.0.1", "alice", never, cached=broken,
                                sleep=no_sleep)
    assert login.outcome == "error"
    stuck = asyncio.Event()

    async def hangs() -> str | None:
        await stuck.wait()
        return None

    task = asyncio.create_task(guarded_login(throttle, "10.0.0.1", "alice", never,
                                             cached=hangs, sleep=no_sleep))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert throttle.in_flight == 0
    # the pair's whole budget of attempts in flight (max_failures) is free again
    again = [throttle.begin("10.0.0.1", "alice", verify=False) for _ in range(10)]
    assert all(isinstance(a, Attempt) for a in again)
