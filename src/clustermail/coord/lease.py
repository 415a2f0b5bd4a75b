"""Keeping a lease alive in the background, and knowing the moment it is lost.

The holder of a lease (a node agent) must stop acting as owner *before* the
store can expire its lease and let another node take over. The keeper tracks
a local deadline, ``safe_until``: the send time of the last successful renewal
plus the TTL, minus a safety margin. Measuring from the send time (not the
reply) keeps the local deadline earlier than the store's. A timer fires at
that deadline whatever the renewal calls are doing, so a hung call can never
delay the fence.

When the store has several endpoints (etcd members), no renewal attempt may
spend the whole budget on one of them: a frozen or partitioned member keeps its
connection looking healthy and answers nothing. An attempt then gets half the
time left before ``safe_until`` (at least a renew interval); giving up on it
moves the store to its next endpoint, and the retry still has the other half.
With one endpoint there is nowhere else to go, and an attempt may take it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from clustermail.coord.api import CoordError, Lease, LeaseNotFound, Store


class LeaseKeeper:
    """Renews one lease every ``renew_interval`` seconds until stopped or lost.

    ``lost`` is set (and every ``on_lost`` callback called, synchronously, once)
    when the lease is gone: the store said it does not exist, or no renewal
    succeeded before ``safe_until``.
    """

    def __init__(
        self,
        store: Store,
        lease: Lease,
        *,
        renew_interval: float,
        safety_margin: float,
        granted_at: float | None = None,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        if renew_interval + safety_margin >= lease.ttl:
            raise ValueError(
                f"renew interval {renew_interval}s plus safety margin {safety_margin}s "
                f"must be shorter than the lease TTL {lease.ttl}s"
            )
        self.store = store
        self.lease = lease
        self.renew_interval = renew_interval
        self.safety_margin = safety_margin
        start = granted_at if granted_at is not None else time.monotonic()
        self.safe_until = start + lease.ttl - safety_margin
        self.lost = asyncio.Event()
        self.reason = ""
        self.renewals = 0
        #: Called with each successful renewal's round trip in seconds (metrics).
        self.on_renewed: Callable[[float], None] | None = None
        #: Called with the new ``safe_until`` as soon as a renewal moves it, so whoever
        #: relays the deadline (to processes that fence on it) is never a tick late.
        self.on_extended: Callable[[float], None] | None = None
        self._callbacks: list[Callable[[str], None]] = [on_lost] if on_lost else []
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def id(self) -> int:
        return self.lease.id

    def on_lost(self, callback: Callable[[str], None]) -> None:
        self._callbacks.append(callback)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._arm(loop)
        self._task = loop.create_task(self._run(), name=f"lease-{self.lease.id:x}")

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        # loop.time() is time.monotonic() for the default loop.
        delay = self.safe_until - time.monotonic()
        self._timer = loop.call_later(max(0.0, delay), self._deadline_passed)

    def _deadline_passed(self) -> None:
        if time.monotonic() >= self.safe_until:
            self._lose(
                f"lease {self.lease.id:x} not renewed before its safe deadline "
                f"(TTL {self.lease.ttl}s minus margin {self.safety_margin}s)"
            )
        else:  # renewed meanwhile; re-arm for the new deadline
            self._arm(asyncio.get_running_loop())

    def _lose(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.reason = reason
        self.lost.set()
        if self._timer is not None:
            self._timer.cancel()
        for callback in self._callbacks:
            callback(reason)

    async def _run(self) -> None:
        while not self.lost.is_set():
            sent = time.monotonic()
            budget = self.safe_until - sent
            if budget <= 0:
                self._deadline_passed()
                return
            attempt = budget
            if self.store.endpoint_count > 1:
                attempt = min(budget, max(self.renew_interval, budget / 2))
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancel
                # that lands as the renewal completes (gh-86296), and stop() then waited
                # forever for a keeper that went on renewing.
                async with asyncio.timeout(attempt):
                    # The store's TTL includes any backstop: our peers expire the lease
                    # at its TTL without it (``Store.expire_overdue``).
                    ttl = await self.store.keep_alive_once(self.lease.id) - self.lease.backstop
            except LeaseNotFound:
                self._lose(f"lease {self.lease.id:x} expired or was revoked in the store")
                return
            except (CoordError, TimeoutError):
                # Keep trying quickly until the deadline timer fires.
                await asyncio.sleep(min(self.renew_interval / 4, 0.1))
                continue
            self.renewals += 1
            if self.on_renewed is not None:
                self.on_renewed(time.monotonic() - sent)
            if sent + ttl - self.safety_margin > self.safe_until:
                self.safe_until = sent + ttl - self.safety_margin
                self._arm(asyncio.get_running_loop())
                if self.on_extended is not None:
                    self.on_extended(self.safe_until)
            await asyncio.sleep(self.renew_interval)

    async def stop(self, *, revoke: bool = True) -> None:
        """Stops renewing; by default revokes the lease so its keys vanish now."""
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if revoke and not self.lost.is_set():
            with contextlib.suppress(CoordError):
                await self.store.revoke(self.lease.id)
