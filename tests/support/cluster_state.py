"""A cluster's state written straight into a real SQLite store, as node agents and
administrators would leave it: for tests of the view builder and of one leader cycle
without any node agent process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from clustermail.cluster import keys
from clustermail.cluster.records import (
    ConfigRecord,
    EpochRecord,
    LeaderRecord,
    NodeRecord,
    OwnerRecord,
)
from clustermail.coord import Store, open_store

#: Leases outlive every test; the tests end them by revoking, as an expiry would.
TTL = 60.0


def config(**vs_overrides: Any) -> dict[str, Any]:
    """Three nodes; mail1 prefers node1, mail2 prefers node2; node3 is the standby."""
    servers: dict[str, dict[str, Any]] = {
        "mail1": {"preferred_owners": ["node1", "node3"]},
        "mail2": {"preferred_owners": ["node2", "node3"]},
    }
    for server in servers.values():
        server.update(vs_overrides)
    return {
        "cluster": {"name": "test", "placement": "active-passive"},
        "nodes": {"node1": {}, "node2": {}, "node3": {}},
        "virtual_servers": servers,
    }


@asynccontextmanager
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(f"sqlite://{tmp_path}/cluster.db")
    try:
        yield store
    finally:
        await store.close()


async def apply(store: Store, data: dict[str, Any]) -> None:
    await store.put(keys.CONFIG, ConfigRecord(data).to_store())


async def join(store: Store, node: str) -> int:
    """Registers ``node`` as its agent does; returns its lease (revoke it: the node is gone)."""
    lease = await store.grant(TTL)
    record = NodeRecord(pid=1000, host="test", started=1.0, lease=lease.id)
    await store.put(keys.NODES + node, record.to_store(), lease=lease.id)
    return lease.id


async def elect(store: Store, node: str, lease: int) -> None:
    await store.put(keys.LEADER, LeaderRecord(node).to_store(), lease=lease)


async def own(store: Store, vs: str, node: str, lease: int, epoch: int = 1) -> None:
    """What an agent writes when it takes ``vs``: the owner key on its lease, the epoch."""
    await store.put(keys.OWNER + vs, OwnerRecord(node=node, epoch=epoch).to_store(),
                    lease=lease)
    await store.put(keys.EPOCH + vs, EpochRecord(epoch).to_store())
