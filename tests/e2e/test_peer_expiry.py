"""On etcd, a dead node's lease is revoked by a live peer once its TTL has passed, not on
etcd's next 500 ms expiry check a backstop later (``cluster/peer_expiry.py``)."""

from __future__ import annotations

from pathlib import Path

from clustermail.cluster import eventlog, keys
from clustermail.cluster.records import NodeRecord
from tests.e2e.harness import LocalCluster, banner, cluster_toml, free_addresses, owners
from tests.support.etcd_server import EtcdCluster


async def test_a_peer_revokes_a_dead_nodes_lease_on_time(tmp_path: Path) -> None:
    etcd = EtcdCluster.start(tmp_path / "etcd", members=1)
    base, port = free_addresses()
    toml = cluster_toml(base, port, nodes=2, servers=1, timing="fast")
    try:
        async with LocalCluster(tmp_path, etcd.url, toml) as c:
            c.start_all(2)
            await c.wait_for(lambda s: owners(s) == {"mail1": "node1"}, what="mail1 on node1")
            assert c.store is not None
            kv = await c.store.get(keys.NODES + "node1")
            assert kv is not None
            record = NodeRecord.from_store(kv.key, kv.value)
            assert record.backstop == 1 and record.lease == kv.lease

            c.kill_node("node1")
            await c.wait_for(lambda s: owners(s) == {"mail1": "node2"}, what="mail1 on node2")
            line = banner(f"{base}.11", port)
            assert line is not None and "node2" in line

            # node2 revoked node1's lease (a lease etcd had already expired cannot be
            # revoked: expire_overdue answers False for it) — and only that one: a live
            # node's lease was never taken for overdue while both ran.
            revoked = [e for e in await eventlog.read(c.store)
                       if e.event == "peer_lease_expired"]
            assert [(e.node, e.message.split("'")[0]) for e in revoked] == [("node2", "node1")]
            assert f"{record.lease:x}" in revoked[0].message
    finally:
        etcd.stop()
