"""The admin service's performance history: it scrapes real node metrics endpoints and
reads the store, computing rates and noticing failovers."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from clustermail.admin.api.history import History
from clustermail.cluster import keys
from clustermail.cluster.metrics import HostedGroup, NodeCounters, NodeState, serve
from clustermail.cluster.records import StatusRecord
from tests.support.cluster_state import apply, config, join, own, sqlite_store


def host_text(received: float, sessions: float) -> str:
    registry = CollectorRegistry()
    Counter("clustermail_messages_received", "m", registry=registry).inc(received)
    Gauge("clustermail_sessions_active", "s", ["protocol"], registry=registry) \
        .labels("imap4").set(sessions)
    return generate_latest(registry).decode()


async def test_rates_and_failovers(tmp_path: Path) -> None:
    group = HostedGroup("online", {}, host_text(0, 3))
    state = NodeState("node1", True, {"mail1": group}, NodeCounters())
    server = await serve("127.0.0.1:0", lambda: state)
    port = server.sockets[0].getsockname()[1]
    data = config()
    data["nodes"]["node1"] = {"metrics": f"127.0.0.1:{port}"}
    try:
        async with sqlite_store(tmp_path) as store, aiohttp.ClientSession() as http:
            await apply(store, data)
            lease1 = await join(store, "node1")
            lease2 = await join(store, "node2")
            await own(store, "mail1", "node1", lease1)
            await store.put(keys.STATUS + "mail1", StatusRecord(node="node1", state="online")
                            .to_store(), lease=lease1)
            history = History(store)
            first = await history.take(http)
            assert first["sessions"] == 3.0 and first["online"] == 1
            group.metrics = host_text(50, 5)
            second = await history.take(http)
            assert second["messages_per_s"] > 0 and second["sessions"] == 5.0
            assert second["failovers"] == []
            # mail1 fails over to node2.
            await store.revoke(lease1)
            await own(store, "mail1", "node2", lease2, epoch=2)
            await store.put(keys.STATUS + "mail1", StatusRecord(node="node2", state="online")
                            .to_store(), lease=lease2)
            third = await history.take(http)
            assert [(m["vs"], m["from"], m["to"]) for m in third["failovers"]] == [
                ("mail1", "node1", "node2")]
            assert history.snapshot()["samples"][-1] == third
    finally:
        server.close()
        await server.wait_closed()
