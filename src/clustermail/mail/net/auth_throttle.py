"""Login throttling as pure policy: no asyncio, no sockets; the clock is injected.

One :class:`AuthThrottle` per virtual server is shared by SMTP, POP3 and IMAP4, so a
password guesser gets one budget, not one per protocol. A login attempt is
:meth:`~AuthThrottle.begin` (before the password is checked) and then exactly one of
:meth:`~AuthThrottle.failure`, :meth:`~AuthThrottle.success` or
:meth:`~AuthThrottle.abandon`. Counted:

* **per (client network, account)**: each failure within ``window`` doubles the delay
  before it is answered (``base_delay`` up to ``max_delay``); ``max_failures`` locks that
  pair for ``lockout`` seconds. A success clears only that pair — logging in to one's own
  account never resets the count of anyone else's.
* **per account**, from every network: ``account_max_failures`` within ``window`` locks
  the account for ``account_lockout`` seconds, doubling with each further lock up to
  ``account_max_lockout`` (like Dovecot's auth penalty, per account). A network that has
  logged in to the account successfully within ``known_for`` seconds is *familiar* and
  is not held by the account lock (only by its own pair's), so a guesser elsewhere
  cannot lock the owner out.
* **per client network**, over every account (password spraying):
  ``client_max_failures`` within ``window`` locks the network for ``lockout`` seconds;
  successes do not clear it.

Attempts in flight count as failures until they end, so 50 parallel connections get the
budget that is left, not 50 guesses. IPv4 clients are counted per address, IPv6 clients
per /64 (``ipv6_prefix``): one host usually owns a whole /64.

The password hash is expensive (argon2id: ~0.15 s of a core), so at most
``max_in_flight`` checks are queued or running at once — a wait of about a second on two
cores; above that an attempt is refused at once (``busy``: the protocol answers a
temporary error) instead of queueing: to a familiar pair at once, to others after
``busy_delay``. The last ``reserved_for_familiar`` of those places are kept for familiar
(network, account) pairs, so a flood from new addresses cannot starve returning users;
``max_in_flight_per_client`` keeps one network's unfamiliar attempts, and
``max_in_flight_per_account`` one account's attempts (even with the right password, from
many addresses), from taking all the others.

A login the directory can answer from its cache of verified logins costs no hash, so it
takes no verification slot: it starts with ``begin(..., verify=False)`` (locks and
failure budgets apply, the slot limits do not), asks the cache, and only on a miss asks
:meth:`~AuthThrottle.verify` for a slot. A miss refused ``busy`` there told the client
that its password is not the cached one without counting a failure, so such misses are
counted (``misses``, per pair, network and account like failures, never locking): once
a budget's misses reach its failure limit, an attempt made while the slots are full is
refused before the cache is asked, as every attempt was before the cache existed.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal, TypeVar

#: Entries kept per table before the oldest expired ones are pruned; past
#: ``MAX_ENTRIES`` the oldest are dropped even if not expired (bounded memory).
PRUNE_AT = 10_000
MAX_ENTRIES = 100_000
#: Account names longer than this are cut (a key, not an address: nothing is looked up).
MAX_ACCOUNT = 256

Reason = Literal["locked", "busy"]
K = TypeVar("K", str, tuple[str, str])


@dataclass(frozen=True, slots=True)
class Attempt:
    """One login attempt admitted by :meth:`AuthThrottle.begin`."""

    network: str
    account: str
    familiar: bool
    started: float
    #: Holds a verification slot (False while only the login cache is asked).
    verifying: bool = True


@dataclass(frozen=True, slots=True)
class Refused:
    """Not checked: ``locked`` (too many failures) or ``busy`` (too many checks queued);
    the answer waits ``retry_after`` (at most the throttle's ``max_delay``)."""

    reason: Reason
    retry_after: float


@dataclass
class _Count:
    failures: int = 0
    first: float = 0.0  # start of the current window
    in_flight: int = 0
    locked_until: float = 0.0
    locks: int = 0  # account locks so far (the backoff exponent)
    verifying: int = 0  # of in_flight, those holding a verification slot
    misses: int = 0  # cache misses refused busy in this window (never lock)


def client_network(address: str, ipv6_prefix: int = 64) -> str:
    """The key a client address is counted under: an IPv4 address itself, an IPv6
    address's /``ipv6_prefix`` network (an IPv4-mapped IPv6 address as IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        net = ipaddress.IPv6Network((int(ip), ipv6_prefix), strict=False)
        return str(net)
    return str(ip)


def account_key(username: str) -> str:
    return username.strip().lower()[:MAX_ACCOUNT]


def _backoff(base: float, count: int, cap: float) -> float:
    return float(min(cap, base * 2.0 ** min(max(count - 1, 0), 30)))


@dataclass
class AuthThrottle:
    max_failures: int = 10
    window: float = 600.0
    base_delay: float = 0.25
    max_delay: float = 5.0
    lockout: float = 300.0
    account_max_failures: int = 30
    account_lockout: float = 60.0
    account_max_lockout: float = 3600.0
    client_max_failures: int = 100
    known_for: float = 30 * 86400.0
    max_in_flight: int = 16
    reserved_for_familiar: int = 4
    max_in_flight_per_client: int = 4
    max_in_flight_per_account: int = 4
    busy_delay: float = 1.0
    ipv6_prefix: int = 64
    clock: Callable[[], float] = time.monotonic
    _pairs: dict[tuple[str, str], _Count] = field(default_factory=dict)
    _accounts: dict[str, _Count] = field(default_factory=dict)
    _clients: dict[str, _Count] = field(default_factory=dict)
    _familiar: dict[tuple[str, str], float] = field(default_factory=dict)
    in_flight: int = 0

    # ------------------------------------------------------------------ one attempt

    def begin(self, client: str, username: str, *, verify: bool = True) -> Attempt | Refused:
        """Admits a login attempt (counted as a failure until it ends) or refuses it
        without checking the password. ``verify=False``: the attempt asks the login
        cache first and takes no verification slot (see :meth:`verify`)."""
        now = self.clock()
        network = client_network(client, self.ipv6_prefix)
        account = account_key(username)
        familiar = self._is_familiar(network, account, now)
        pair = self._count(self._pairs, (network, account), now)
        acct = self._count(self._accounts, account, now)
        net = self._count(self._clients, network, now)
        refused = self._check(pair, acct, net, familiar, now, cached=not verify)
        if refused is not None:
            return refused
        for entry in (pair, acct, net):
            entry.in_flight += 1
        attempt = Attempt(network, account, familiar, now, verifying=False)
        if verify:
            self._take_slot(acct, net)
            attempt = replace(attempt, verifying=True)
        return attempt

    def verify(self, attempt: Attempt) -> Attempt | Refused:
        """An attempt begun with ``verify=False`` missed the login cache: it takes a
        verification slot (the attempt to carry on with) or is refused ``busy`` and ended
        (its miss counted, see the module's documentation)."""
        if attempt.verifying:
            return attempt
        now = self.clock()
        pair, acct, net = self._entries(attempt, now)
        busy = self._busy(acct, net, attempt.familiar)
        if busy is not None:
            for entry in (pair, acct, net):
                entry.misses += 1
            self._end(attempt, now)
            return busy
        self._take_slot(acct, net)
        return replace(attempt, verifying=True)

    def _take_slot(self, acct: _Count, net: _Count) -> None:
        acct.verifying += 1
        net.verifying += 1
        self.in_flight += 1

    def _check(
        self, pair: _Count, acct: _Count, net: _Count, familiar: bool, now: float,
        cached: bool = False,
    ) -> Refused | None:
        locked = max(pair.locked_until, net.locked_until,
                     0.0 if familiar else acct.locked_until) - now
        if locked > 0:
            return Refused("locked", locked)
        # Attempts in flight count as failures: only the budget that is left may run at
        # once (one at a time once it is spent; the next failure locks again).
        budgets = [(pair, self.max_failures), (net, self.client_max_failures)]
        if not familiar:
            budgets.append((acct, self.account_max_failures))
        if any(e.in_flight >= max(1, limit - e.failures) for e, limit in budgets):
            return Refused("locked", 1.0)
        busy = self._busy(acct, net, familiar)
        if busy is not None and cached \
                and all(e.misses + e.in_flight < limit for e, limit in budgets):
            return None  # may ask the cache: a hit needs no slot, a miss is counted
        return busy

    def _busy(self, acct: _Count, net: _Count, familiar: bool) -> Refused | None:
        """Refused when no verification slot is free for this kind of attempt."""
        if familiar:
            if self.in_flight >= self.max_in_flight \
                    or acct.verifying >= self.max_in_flight_per_account:
                return Refused("busy", 0.0)  # a returning user: told at once
        elif self.in_flight >= max(1, self.max_in_flight - self.reserved_for_familiar) \
                or net.verifying >= self.max_in_flight_per_client \
                or acct.verifying >= self.max_in_flight_per_account:
            # Answered after busy_delay (nothing is held meanwhile but the connection),
            # so a flood of refused attempts cannot spin at wire speed.
            return Refused("busy", self.busy_delay)
        return None

    def failure(self, attempt: Attempt) -> float:
        """The password was wrong (or the account disabled); returns how long to wait
        before answering."""
        now = self.clock()
        pair, acct, net = self._end(attempt, now)
        for entry in (pair, acct, net):
            entry.failures += 1
        if pair.failures >= self.max_failures:
            pair.locked_until = now + self.lockout
        if net.failures >= self.client_max_failures:
            net.locked_until = now + self.lockout
        if acct.failures >= self.account_max_failures:
            acct.locks += 1
            acct.locked_until = now + _backoff(
                self.account_lockout, acct.locks, self.account_max_lockout
            )
            acct.failures = 0  # the next lock needs as many failures again
        self._prune(now)
        return _backoff(self.base_delay, pair.failures, self.max_delay)

    def success(self, attempt: Attempt) -> None:
        """The password was right: the pair starts over and becomes familiar."""
        now = self.clock()
        self._end(attempt, now)
        key = (attempt.network, attempt.account)
        self._pairs.pop(key, None)
        self._familiar.pop(key, None)
        self._familiar[key] = now  # re-inserted: the dict stays ordered by last success
        self._prune(now)

    def abandon(self, attempt: Attempt) -> None:
        """The check could not be made (directory unavailable): counts nothing."""
        self._end(attempt, self.clock())

    # ------------------------------------------------------------------ queries

    def locked(self, client: str, username: str) -> float:
        """Seconds before ``client`` may try ``username`` again (0: it may now)."""
        now = self.clock()
        network = client_network(client, self.ipv6_prefix)
        account = account_key(username)
        empty = _Count(first=now)
        refused = self._check(
            self._pairs.get((network, account), empty), self._accounts.get(account, empty),
            self._clients.get(network, empty), self._is_familiar(network, account, now), now,
        )
        return refused.retry_after if refused is not None and refused.reason == "locked" else 0.0

    def reset(self) -> None:
        """Forgets everything except attempts still in flight (tests, administrators)."""
        _forget(self._pairs)
        _forget(self._accounts)
        _forget(self._clients)
        self._familiar.clear()

    # ------------------------------------------------------------------ bookkeeping

    def _is_familiar(self, network: str, account: str, now: float) -> bool:
        seen = self._familiar.get((network, account))
        return seen is not None and now - seen <= self.known_for

    def _count(self, table: dict[K, _Count], key: K, now: float) -> _Count:
        entry = table.get(key)
        if entry is None:
            entry = table[key] = _Count(first=now)
        elif now - entry.first > self.window and entry.locked_until <= now:
            entry.failures = entry.misses = 0  # a new window: earlier ones no longer count
            entry.first = now
        return entry

    def _entries(self, attempt: Attempt, now: float) -> tuple[_Count, _Count, _Count]:
        return (
            self._count(self._pairs, (attempt.network, attempt.account), now),
            self._count(self._accounts, attempt.account, now),
            self._count(self._clients, attempt.network, now),
        )

    def _end(self, attempt: Attempt, now: float) -> tuple[_Count, _Count, _Count]:
        entries = self._entries(attempt, now)
        for entry in entries:
            entry.in_flight = max(0, entry.in_flight - 1)
        if attempt.verifying:
            _, acct, net = entries
            acct.verifying = max(0, acct.verifying - 1)
            net.verifying = max(0, net.verifying - 1)
            self.in_flight = max(0, self.in_flight - 1)
        return entries

    def _prune(self, now: float) -> None:
        _prune_table(self._pairs, now, self.window)
        _prune_table(self._accounts, now, self.window)
        _prune_table(self._clients, now, self.window)
        if len(self._familiar) > MAX_ENTRIES:
            for key in list(self._familiar)[: len(self._familiar) - MAX_ENTRIES]:
                del self._familiar[key]


def _prune_table(table: dict[K, _Count], now: float, window: float) -> None:
    if len(table) < PRUNE_AT:
        return
    for key, entry in list(table.items()):
        idle = now - entry.first > window and entry.locked_until <= now
        if idle and not entry.in_flight:
            del table[key]
    excess = len(table) - MAX_ENTRIES
    if excess > 0:  # still too many: the oldest go, whatever they hold
        for key in [k for k, e in table.items() if not e.in_flight][:excess]:
            del table[key]



def _forget(table: dict[K, _Count]) -> None:
    for key, entry in list(table.items()):
        if entry.in_flight:
            entry.failures, entry.misses, entry.locked_until, entry.locks = 0, 0, 0.0, 0
        else:
            del table[key]
