"""Expiring a failed node's lease on time, where the store itself looks only now and then.

etcd checks for expired leases every 500 ms, so a dead node's virtual servers would
wait up to half a second past its lease's TTL before anyone hears of it — a third of
the fast profile's failover. A node's lease is therefore granted with a backstop (one
more second in etcd), and a peer asks the store, three times per renew interval,
whether the lease went unrenewed for its TTL, and revokes it when it did
(``Store.expire_overdue``: the store's clock decides, never ours). Should that peer
be gone or wedged, the store still expires the lease, a backstop later.

Only the leases whose loss starts a failover are asked about, each by one node: the
leader asks about every other node that owns a virtual server (it places them), and
a deputy — the first other node by name — asks about the leader's. Asking about
every node from every node cost a three-member etcd enough (240 forwarded reads a
second with four nodes) to slow planned moves by half.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping

from clustermail.cluster.records import NodeRecord
from clustermail.coord.api import CoordError, Store

#: Longest one round of checks may take: a store that slow expires the lease itself.
CHECK_TIMEOUT = 1.0


def watched_peers(nodes: Mapping[str, NodeRecord], leader: str | None,
                  owners: Collection[str], me: str) -> list[tuple[str, NodeRecord]]:
    """The nodes whose leases ``me`` asks about (only those granted with a backstop):
    as the leader, every other node that owns a virtual server; as the deputy (the
    first node by name other than the leader), the leader."""
    if leader is None:
        return []  # whoever campaigns next places; the store expires leases meanwhile
    if me == leader:
        names = [n for n in owners if n != me]
    elif me == min((n for n in nodes if n != leader), default=None):
        names = [leader]
    else:
        names = []
    return [(n, nodes[n]) for n in sorted(set(names))
            if n in nodes and nodes[n].lease and nodes[n].backstop > 0]


async def expire_overdue_peers(
    store: Store,
    watched: Callable[[], list[tuple[str, NodeRecord]]],
    interval: float,
    on_expired: Callable[[str, NodeRecord], Awaitable[None]],
) -> None:
    """Runs until cancelled: every ``interval``, the lease of each node ``watched()``
    names is checked (all at once, so a slow answer about one holds up no other)."""

    async def check(name: str, rec: NodeRecord) -> None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                expired = await store.expire_overdue(rec.lease, rec.backstop)
        except (CoordError, TimeoutError):
            return  # the store's own expiry is the backstop
        if expired:
            await on_expired(name, rec)

    while True:
        candidates = watched()
        if candidates:
            await asyncio.gather(*(check(name, rec) for name, rec in candidates))
        await asyncio.sleep(interval)
