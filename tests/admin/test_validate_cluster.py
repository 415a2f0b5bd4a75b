"""`validate --cluster` in one process against a real SQLite store: nodes registered with
real leases, the node side run by real node request workers with `node run`'s handlers,
one node that never answers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from clustermail.admin import local, validate_node
from clustermail.admin.validate_cluster import validate_cluster
from clustermail.admin.validate_report import FAIL, PASS, WARN
from clustermail.cluster import keys
from clustermail.cluster.config import parse_config
from clustermail.cluster.node_requests import NodeContext, NodeRequestWorker
from clustermail.cluster.records import NodeRecord, OwnerRecord
from clustermail.coord import Store, open_store
from tests.e2e.harness import cluster_toml, free_addresses
from tests.support.etcd_server import EtcdCluster


@pytest.fixture(params=["sqlite", "etcd"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path}/cluster.db"
        return
    etcd = EtcdCluster.start(tmp_path / "etcd", members=1)
    try:
        yield etcd.url
    finally:
        etcd.stop()


@contextlib.asynccontextmanager
async def nodes_answering(store: Store, data: Path, names: list[str]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(NodeRequestWorker(NodeContext(store, n, data),
                                                   validate_node.HANDLERS).run())
             for n in names]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def register(store: Store, names: list[str]) -> None:
    lease = await store.grant(60)
    for n in names:
        record = NodeRecord(pid=os.getpid(), host=socket.gethostname(), started=time.time(),
                            lease=lease.id)
        await store.put(keys.NODES + n, record.to_store(), lease=lease.id)
    # mail1 runs on node1 (for the report; nothing is actually served).
    await store.put(keys.OWNER + "mail1", OwnerRecord("node1", 3).to_store(), lease=lease.id)


async def test_every_node_answers_and_a_silent_one_is_a_bounded_failure(
        tmp_path: Path, store_url: str) -> None:
    url = store_url
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    async with await open_store(url) as store:
        # Addresses nobody else uses (a developer's own cluster may be on 127.0.0.11-13).
        base, port = free_addresses()
        await local.apply_config(store, parse_config(cluster_toml(base, port, mail=True)))
        await register(store, ["node1", "node2", "node3"])  # node4 is down
        async with nodes_answering(store, data, ["node1", "node2"]):
            started = time.monotonic()
            # Generous for loaded CI machines; node3 never answers, whatever the bound.
            report = await validate_cluster(url, timeout=6.0)
            took = time.monotonic() - started
        left = await store.range(keys.NODE_REQUESTS)
    assert took < 20, took
    by_node = {n.node: n for n in report.nodes}
    assert list(by_node) == ["node1", "node2", "node3", "node4"]
    for name in ("node1", "node2"):
        node = by_node[name]
        assert node.answered and node.verdict in (PASS, WARN), node.checks
        names = [c.name for c in node.checks]
        assert names[:3] == ["answer", "clock", "store latency"], names
        assert "data directory" in names
    one = {c.name: c for c in by_node["node1"].checks}
    two = {c.name: c for c in by_node["node2"].checks}
    assert one["mail1"].detail.startswith("online here (epoch 3)")
    assert "mail1 disk" in two and "mail1 address" in two and "mail1 ports" in two
    assert "[online on node1]" in two["mail1 ports"].detail
    assert "[not online anywhere]" in two["mail2 ports"].detail
    silent = by_node["node3"]
    assert not silent.answered and silent.verdict == FAIL
    assert silent.checks[0].detail == "node3 did not answer in 6 s"
    assert by_node["node4"].verdict == WARN and "not running" in by_node["node4"].checks[0].detail
    assert report.verdict == FAIL
    assert {c.name for c in report.checks} >= {"store", "configuration", "clock skew"}
    # Answered requests were deleted, the unanswered one withdrawn: nothing runs later.
    assert left.kvs == []


async def test_an_unreachable_store_and_no_configuration_fail_clearly(tmp_path: Path) -> None:
    report = await validate_cluster("etcd://127.0.0.1:1", timeout=1.0)
    assert [(c.name, c.result) for c in report.checks] == [("store", FAIL)]
    report = await validate_cluster(f"sqlite://{tmp_path}/empty.db", timeout=1.0)
    assert report.checks[-1].name == "configuration" and report.verdict == FAIL
