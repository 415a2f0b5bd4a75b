"""A node's metrics endpoint over a real socket: the agent's own series and its resource
hosts' (sent as text over the event pipe), labelled with the virtual server."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from clustermail.cluster.host_protocol import MetricsEvent, decode_event, encode_event
from clustermail.cluster.metrics import HostedGroup, NodeCounters, NodeState, serve


def host_text(received: int) -> str:
    registry = CollectorRegistry()
    counter = Counter("clustermail_messages_received", "Messages", registry=registry)
    counter.inc(received)
    return generate_latest(registry).decode()


async def get(port: int, path: str) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = (await asyncio.wait_for(reader.read(), 5)).decode()
    writer.close()
    head, _, body = raw.partition("\r\n\r\n")
    return head.splitlines()[0], body


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_node_metrics_endpoint() -> None:
    counters = NodeCounters()
    counters.lease_renewed(0.003)
    counters.lease_renewed(0.2)
    counters.resource_failed("mail1", "smtp")
    groups = {"mail1": HostedGroup("online", {"ip": "online", "smtp": "online"},
                                   host_text(7)),
              "mail2": HostedGroup("online_pending", {"ip": "online"}, host_text(2))}
    state = NodeState("node1", True, groups, counters, rejoin_failures=1)
    server = await serve("127.0.0.1:0", lambda: state)
    port = server.sockets[0].getsockname()[1]
    try:
        status, body = await get(port, "/metrics")
        assert status == "HTTP/1.1 200 OK"
        got = samples(body)
        node = (("node", "node1"),)
        assert got[("clustermail_node_up", node)] == 1.0
        assert got[("clustermail_node_leader", node)] == 1.0
        assert got[("clustermail_messages_received_total",
                    (("node", "node1"), ("vs", "mail1")))] == 7.0
        assert got[("clustermail_messages_received_total",
                    (("node", "node1"), ("vs", "mail2")))] == 2.0
        assert got[("clustermail_resource_state", (("node", "node1"), ("resource", "smtp"),
                                                   ("state", "online"), ("vs", "mail1")))] == 1.0
        assert got[("clustermail_resource_check_failures_total",
                    (("node", "node1"), ("resource", "smtp"), ("vs", "mail1")))] == 1.0
        assert got[("clustermail_lease_renewal_seconds_count", node)] == 2.0
        assert got[("clustermail_lease_renewal_seconds_bucket",
                    (("le", "0.005"), ("node", "node1")))] == 1.0
        assert got[("clustermail_node_rejoin_failures_total", node)] == 1.0
        status, _ = await get(port, "/other")
        assert status == "HTTP/1.1 404 Not Found"
        # A broken report from one host does not break the node's scrape.
        groups["mail2"].metrics = "this is { not prometheus"
        status, body = await get(port, "/metrics")
        assert status == "HTTP/1.1 200 OK" and "vs=\"mail1\"" in body
    finally:
        server.close()
        await server.wait_closed()


def test_metrics_events_cross_the_pipe() -> None:
    event = MetricsEvent("# HELP x y\nx 1.0\n", 12.5)
    assert decode_event(encode_event(event)) == event
