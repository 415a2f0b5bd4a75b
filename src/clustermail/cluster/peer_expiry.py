"""Expiring a failed node's lease on time, where the store itself looks only now and then.

etcd checks for expired leases every 500 ms, so a dead node's virtual servers would
wait up to half a second past its lease's TTL before anyone hears of it — a third of
the fast profile's failover. A node's lease is therefore granted with a backstop (one
more second in etcd), and a peer asks the store, three times per renew interval,
whether the lease went unrenewed for its TTL, and revokes it when it did
(``Store.expire_overdue``: the store's clock decides, never ours). Should that peer
be gone or wedged, the store still expires the lease, a backstop later.

Only the leases whose loss starts a failover are asked about, each by one node: the
leader asks about the leases other nodes' ownership keys are bound to (it places
their virtual servers), and a deputy — the first other node by name — asks about the
leader key's. Asking about every node from every node cost a three-member etcd
enough (240 forwarded reads a second with four nodes) to slow planned moves by half.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from clustermail.cluster.records import NodeRecord
from clustermail.coord.api import CoordError, Store

#: Longest one round of checks may take: a store that slow expires the lease itself.
CHECK_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class Watched:
    """A lease to ask about: the node that holds it, and its backstop."""

    node: str
    lease: int
    backstop: float


def watched_leases(nodes: Mapping[str, NodeRecord], leader: str | None, leader_lease: int,
                   owned: Iterable[tuple[str, int]], me: str) -> list[Watched]:
    """The leases ``me`` asks about: as the leader, those of the ownership keys of every
    other node (``owned``: owner and the lease its key is bound to); as the deputy (the
    first node by name other than the leader), the leader key's. The keys' own leases,
    not the node records': a node that lost its lease and rejoined holds its ownership
    under the old lease until that goes. Only leases granted with a backstop, known
    from the holder's record (same agent, same store)."""
    if leader is None:
        return []  # whoever campaigns next places; the store expires leases meanwhile

    def backstop(node: str) -> float:
        rec = nodes.get(node)
        return rec.backstop if rec is not None else 0.0

    if me == leader:
        pairs = {(n, lease) for n, lease in owned if n != me}
    elif me == min((n for n in nodes if n != leader), default=None):
        pairs = {(leader, leader_lease)}
    else:
        pairs = set()
    return [Watched(n, lease, backstop(n)) for n, lease in sorted(pairs)
            if lease and backstop(n) > 0]


async def expire_overdue_peers(
    store: Store,
    watched: Callable[[], list[Watched]],
    interval: float,
    on_expired: Callable[[Watched], Awaitable[None]],
) -> None:
    """Runs until cancelled: every ``interval``, the lease of each node ``watched()``
    names is checked (all at once, so a slow answer about one holds up no other)."""

    async def check(w: Watched) -> None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                expired = await store.expire_overdue(w.lease, w.backstop)
        except (CoordError, TimeoutError):
            return  # the store's own expiry is the backstop
        if expired:
            await on_expired(w)

    while True:
        candidates = watched()
        if candidates:
            await asyncio.gather(*(check(w) for w in candidates))
        await asyncio.sleep(interval)
