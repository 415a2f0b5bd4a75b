"""The login throttle as pure policy (the clock injected): what one client, one account
and one flood can and cannot do."""

from __future__ import annotations

import pytest

from clustermail.mail.net import auth_throttle as at
from clustermail.mail.net.auth_throttle import Attempt, AuthThrottle, Refused, client_network


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admitted(t: AuthThrottle, client: str, account: str) -> Attempt:
    attempt = t.begin(client, account)
    assert isinstance(attempt, Attempt), attempt
    return attempt


def fail(t: AuthThrottle, client: str, account: str) -> float:
    return t.failure(admitted(t, client, account))


def succeed(t: AuthThrottle, client: str, account: str) -> None:
    t.success(admitted(t, client, account))


def refused(t: AuthThrottle, client: str, account: str) -> str:
    r = t.begin(client, account)
    assert isinstance(r, Refused), r
    return r.reason


def test_a_login_to_ones_own_account_does_not_reset_anothers_failures() -> None:
    t = AuthThrottle(max_failures=3, clock=Clock())
    for _ in range(3):
        fail(t, "10.0.0.1", "bob")
    assert refused(t, "10.0.0.1", "bob") == "locked"
    succeed(t, "10.0.0.1", "mallory")  # the guesser's own account
    assert refused(t, "10.0.0.1", "bob") == "locked"
    assert t.locked("10.0.0.1", "bob") > 0
    # ... while bob's own success clears bob's count from that address only
    succeed(t, "10.0.0.2", "bob")
    assert refused(t, "10.0.0.1", "bob") == "locked"


def test_failures_are_delayed_more_and_more_and_a_success_clears_the_pair() -> None:
    t = AuthThrottle(base_delay=0.5, max_delay=3.0, clock=Clock())
    assert [fail(t, "c", "alice") for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    succeed(t, "c", "alice")
    assert fail(t, "c", "alice") == 0.5


def test_attempts_in_flight_count_before_the_check() -> None:
    """50 parallel connections get the budget that is left, not 50 guesses."""
    t = AuthThrottle(max_failures=5, max_in_flight=100, max_in_flight_per_client=100,
                     clock=Clock())
    fail(t, "c", "bob")
    results = [t.begin("c", "bob") for _ in range(50)]
    running = [r for r in results if isinstance(r, Attempt)]
    assert len(running) == 4
    assert all(r.reason == "locked" for r in results if isinstance(r, Refused))
    for attempt in running:
        t.failure(attempt)
    assert t.locked("c", "bob") == t.lockout


def test_after_a_lockout_one_guess_at_a_time() -> None:
    clock = Clock()
    t = AuthThrottle(max_failures=3, lockout=30, window=600, clock=clock)
    for _ in range(3):
        fail(t, "c", "bob")
    clock.now += 31
    first = admitted(t, "c", "bob")
    assert refused(t, "c", "bob") == "locked"  # the second must wait for the first
    t.failure(first)
    assert t.locked("c", "bob") == 30  # and that one failure locks again


def test_the_account_is_locked_with_backoff_from_every_network_but_familiar_ones() -> None:
    clock = Clock()
    t = AuthThrottle(max_failures=100, account_max_failures=4, account_lockout=10,
                     account_max_lockout=25, clock=clock)
    succeed(t, "192.0.2.7", "bob")  # bob's own machine: familiar
    for n in range(4):  # a botnet: one guess per address
        fail(t, f"10.0.0.{n}", "bob")
    assert refused(t, "10.0.9.9", "bob") == "locked"
    assert t.locked("10.0.9.9", "bob") == 10
    succeed(t, "192.0.2.7", "bob")  # the owner is not locked out ...
    clock.now += 11
    for n in range(4):
        fail(t, f"10.0.1.{n}", "bob")
    assert t.locked("10.0.9.9", "bob") == 20  # ... and each further lock doubles
    clock.now += 21
    for n in range(4):
        fail(t, f"10.0.2.{n}", "bob")
    assert t.locked("10.0.9.9", "bob") == 25  # up to the maximum
    assert t.locked("10.0.9.9", "alice") == 0


def test_one_network_spraying_many_accounts_is_locked() -> None:
    t = AuthThrottle(client_max_failures=5, clock=Clock())
    for n in range(5):
        fail(t, "10.0.0.1", f"user{n}")
    assert refused(t, "10.0.0.1", "someone-else") == "locked"
    succeed(t, "10.0.0.2", "user0")
    assert refused(t, "10.0.0.1", "user9") == "locked"  # a success elsewhere changes nothing


def test_ipv6_clients_are_counted_per_64() -> None:
    assert client_network("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert client_network("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_network("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert client_network("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_network("192.0.2.1") == "192.0.2.1"
    assert client_network("fe80::1%eth0") == "fe80::/64"
    assert client_network("unknown") == "unknown"
    t = AuthThrottle(max_failures=3, clock=Clock())
    for n in range(3):  # a new address of the same /64 for every guess
        fail(t, f"2001:db8:1:2::{n + 1:x}", "bob")
    assert refused(t, "2001:db8:1:2::ffff", "bob") == "locked"
    assert isinstance(t.begin("2001:db8:1:3::1", "bob"), Attempt)


def test_a_full_password_queue_refuses_at_once_but_keeps_places_for_familiar_pairs() -> None:
    t = AuthThrottle(max_in_flight=6, reserved_for_familiar=2, max_in_flight_per_client=2,
                     clock=Clock())
    succeed(t, "192.0.2.7", "alice")
    flood = [t.begin(f"10.0.0.{n}", f"u{n}") for n in range(10)]
    assert sum(isinstance(a, Attempt) for a in flood) == 4  # 6 places, 2 reserved
    assert [r.reason for r in flood if isinstance(r, Refused)] == ["busy"] * 6
    assert isinstance(t.begin("192.0.2.7", "alice"), Attempt)  # a returning user gets in
    assert isinstance(t.begin("192.0.2.7", "alice"), Attempt)
    assert refused(t, "192.0.2.7", "alice") == "busy"  # the queue is full now
    # one network cannot take every place
    t2 = AuthThrottle(max_in_flight=10, reserved_for_familiar=0, max_in_flight_per_client=3,
                      clock=Clock())
    mine = [t2.begin("10.0.0.1", f"u{n}") for n in range(5)]
    assert sum(isinstance(a, Attempt) for a in mine) == 3
    assert isinstance(t2.begin("10.0.0.2", "u9"), Attempt)


def test_one_account_cannot_fill_the_queue_even_with_the_right_password() -> None:
    """An attacker logging in to its own account from many addresses (each then
    familiar) gets at most max_in_flight_per_account places."""
    t = AuthThrottle(max_in_flight=16, max_in_flight_per_account=4, clock=Clock())
    for n in range(10):
        succeed(t, f"10.0.0.{n}", "mallory")
    mine = [t.begin(f"10.0.0.{n}", "mallory") for n in range(10)]
    assert sum(isinstance(a, Attempt) for a in mine) == 4
    refusals = [r for r in mine if isinstance(r, Refused)]
    assert {r.reason for r in refusals} == {"busy"}
    assert {r.retry_after for r in refusals} == {0.0}  # familiar: told at once
    assert isinstance(t.begin("192.0.2.7", "alice"), Attempt)
    stranger = [t.begin(f"10.9.0.{n}", "bob") for n in range(6)]
    assert {r.retry_after for r in stranger if isinstance(r, Refused)} == {t.busy_delay}


def test_abandoned_checks_count_nothing_and_free_their_place() -> None:
    t = AuthThrottle(max_failures=1, max_in_flight=1, reserved_for_familiar=0, clock=Clock())
    attempt = admitted(t, "c", "bob")
    assert refused(t, "d", "carol") == "busy"
    t.abandon(attempt)
    assert t.in_flight == 0
    assert t.locked("c", "bob") == 0
    assert isinstance(t.begin("d", "carol"), Attempt)


def test_counts_expire_with_the_window() -> None:
    clock = Clock()
    t = AuthThrottle(max_failures=3, window=60, lockout=30, client_max_failures=3,
                     clock=clock)
    for _ in range(2):
        fail(t, "c", "bob")
    clock.now += 61
    assert fail(t, "c", "bob") == t.base_delay  # the earlier two no longer count


def test_memory_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(at, "PRUNE_AT", 50)
    monkeypatch.setattr(at, "MAX_ENTRIES", 100)
    clock = Clock()
    t = AuthThrottle(clock=clock, max_in_flight=10**6, max_in_flight_per_client=10**6)
    for n in range(1000):
        fail(t, f"10.{n // 256}.{n % 256}.1", f"user{n}")
    assert len(t._pairs) <= 100 and len(t._clients) <= 100 and len(t._accounts) <= 100
    clock.now += t.window + 1
    fail(t, "10.9.9.9", "x")
    assert len(t._pairs) <= 50  # expired entries go first
    long = "a" * 100_000
    fail(t, "10.9.9.8", long)
    assert max(len(k[1]) for k in t._pairs) <= at.MAX_ACCOUNT


def test_reset_keeps_attempts_in_flight() -> None:
    t = AuthThrottle(max_failures=2, clock=Clock())
    running = admitted(t, "c", "bob")
    fail(t, "c", "bob")
    t.reset()
    assert t.in_flight == 1
    t.failure(running)
    assert t.in_flight == 0 and t.locked("c", "bob") == 0


def test_a_cache_lookup_takes_no_verification_slot() -> None:
    """Logins answered from the login cache cost no hash: thousands may be asked while
    every slot is held by a slow verification; only a miss needs a slot."""
    t = AuthThrottle(max_in_flight=2, reserved_for_familiar=0, clock=Clock())
    succeed(t, "10.0.0.1", "alice")  # alice is familiar from 10.0.0.1
    slow = [admitted(t, f"10.0.1.{n}", f"new{n}") for n in range(2)]
    assert t.in_flight == 2 and refused(t, "10.0.2.1", "bob") == "busy"
    lookups = [t.begin("10.0.0.1", "alice", verify=False) for _ in range(5)]
    assert all(isinstance(a, Attempt) and not a.verifying for a in lookups)
    assert t.in_flight == 2  # no slot taken
    for a in lookups:
        assert isinstance(a, Attempt)
        t.success(a)  # cache hits
    miss = t.begin("10.0.0.1", "alice", verify=False)
    assert isinstance(miss, Attempt)
    assert t.verify(miss) == Refused("busy", 0.0)  # a miss waits for a slot like any check
    t.failure(slow[0])
    miss = t.begin("10.0.0.1", "alice", verify=False)
    assert isinstance(miss, Attempt)
    checked = t.verify(miss)
    assert isinstance(checked, Attempt) and checked.verifying and t.in_flight == 2
    t.success(checked)
    t.failure(slow[1])
    assert t.in_flight == 0


def test_cache_misses_refused_busy_are_a_bounded_budget() -> None:
    """A miss refused busy tells the client its password is not the cached one without
    a failure being counted: such misses may be asked only up to the failure budget while
    the slots are full; then the attempt is refused before the cache is asked, and
    nothing locks the legitimate user out."""
    t = AuthThrottle(max_in_flight=1, reserved_for_familiar=0, max_failures=3,
                     busy_delay=0.5, clock=Clock())
    slow = admitted(t, "10.0.1.1", "someone")
    for _ in range(3):
        guess = t.begin("10.0.0.1", "alice", verify=False)
        assert isinstance(guess, Attempt)
        assert t.verify(guess) == Refused("busy", 0.5)
    assert t.begin("10.0.0.1", "alice", verify=False) == Refused("busy", 0.5)
    assert t.locked("10.0.0.1", "alice") == 0.0  # never a lock
    t.failure(slow)
    free = t.begin("10.0.0.1", "alice", verify=False)  # a slot is free: asked as before
    assert isinstance(free, Attempt)
    checked = t.verify(free)
    assert isinstance(checked, Attempt)
    t.success(checked)  # ...and a success clears the pair's misses
    assert isinstance(t.begin("10.0.1.2", "other"), Attempt)  # the slot is full again
    assert isinstance(t.begin("10.0.0.1", "alice", verify=False), Attempt)


def test_a_cache_lookup_is_held_by_locks_and_the_failure_budget() -> None:
    t = AuthThrottle(max_failures=2, clock=Clock())
    for _ in range(2):
        fail(t, "10.0.0.1", "alice")
    assert isinstance(t.begin("10.0.0.1", "alice", verify=False), Refused)  # locked
    lookups = [t.begin("10.0.0.2", "alice", verify=False) for _ in range(3)]
    assert [type(a) for a in lookups] == [Attempt, Attempt, Refused]  # in flight count
