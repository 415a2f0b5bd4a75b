"""A node's Prometheus metrics: the agent's own and those of the resource hosts it runs.

Served at ``http://<node's metrics address>/metrics`` by a small asyncio HTTP
server in the agent's event loop (nothing to start, nothing to stop but a
socket). The agent's metrics are computed at scrape time from its state; each
resource host's arrive as text every few seconds over its event pipe
(``metrics`` events) and are served again with ``vs`` and ``node`` labels.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from clustermail.logutil import log_event

RESOURCE_STATES = ("online_pending", "online", "offline_pending", "offline", "failed")
#: Lease renewal round trips, in seconds.
LEASE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REQUEST_TIMEOUT = 5.0


@dataclass
class HostedGroup:
    """What the agent knows of one virtual server it runs."""

    state: str
    resources: Mapping[str, str]
    #: The resource host's last metrics (Prometheus text), "" before the first.
    metrics: str = ""


@dataclass
class NodeCounters:
    """Counters the agent keeps (monotonic while the process lives)."""

    check_failures: dict[tuple[str, str], int] = field(default_factory=dict)
    lease_renewals: list[int] = field(default_factory=lambda: [0] * (len(LEASE_BUCKETS) + 1))
    lease_renewal_sum: float = 0.0
    fenced: int = 0

    def resource_failed(self, vs: str, resource: str) -> None:
        key = (vs, resource)
        self.check_failures[key] = self.check_failures.get(key, 0) + 1

    def lease_renewed(self, seconds: float) -> None:
        index = next((i for i, b in enumerate(LEASE_BUCKETS) if seconds <= b),
                     len(LEASE_BUCKETS))
        self.lease_renewals[index] += 1
        self.lease_renewal_sum += seconds


@dataclass
class NodeState:
    """A snapshot the collector reads: filled in by the agent at scrape time."""

    node: str
    leader: bool
    groups: Mapping[str, HostedGroup]
    counters: NodeCounters
    rejoin_failures: int = 0


class NodeCollector(Collector):
    def __init__(self, state: NodeState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        s = self.state
        node = s.node
        up = GaugeMetricFamily("clustermail_node_up", "1: this node's agent runs",
                               labels=["node"])
        up.add_metric([node], 1.0)
        leader = GaugeMetricFamily("clustermail_node_leader", "1 when this node leads",
                                   labels=["node"])
        leader.add_metric([node], 1.0 if s.leader else 0.0)
        hosted = GaugeMetricFamily("clustermail_node_hosted_state", "1 for the state of "
                                   "each virtual server this node runs",
                                   labels=["node", "vs", "state"])
        resources = GaugeMetricFamily("clustermail_resource_state", "1 for the state of each "
                                      "resource this node runs",
                                      labels=["node", "vs", "resource", "state"])
        for vs, group in sorted(s.groups.items()):
            hosted.add_metric([node, vs, group.state], 1.0)
            for res, res_state in sorted(group.resources.items()):
                for name in RESOURCE_STATES:
                    resources.add_metric([node, vs, res, name], float(res_state == name))
        failures = CounterMetricFamily("clustermail_resource_check_failures", "Resources "
                                       "that failed (a check, or coming online) on this node",
                                       labels=["node", "vs", "resource"])
        for (vs, res), count in sorted(s.counters.check_failures.items()):
            failures.add_metric([node, vs, res], float(count))
        buckets, total = [], 0
        for bound, count in zip([*map(str, LEASE_BUCKETS), "+Inf"],
                                s.counters.lease_renewals, strict=True):
            total += count
            buckets.append((bound, float(total)))
        lease = HistogramMetricFamily("clustermail_lease_renewal_seconds", "Round trip of "
                                      "the node lease's renewals", labels=["node"])
        lease.add_metric([node], buckets, s.counters.lease_renewal_sum)
        fenced = CounterMetricFamily("clustermail_node_fenced", "Times this node lost its "
                                     "lease and killed its resource hosts", labels=["node"])
        fenced.add_metric([node], float(s.counters.fenced))
        rejoin = CounterMetricFamily("clustermail_node_rejoin_failures", "Failed attempts to "
                                     "rejoin the cluster", labels=["node"])
        rejoin.add_metric([node], float(s.rejoin_failures))
        yield from (up, leader, hosted, resources, failures, lease, fenced, rejoin)
        yield from host_families(node, {vs: g.metrics for vs, g in s.groups.items()})


def host_families(node: str, texts: Mapping[str, str]) -> list[Metric]:
    """The resource hosts' metrics, one family per name, with ``vs`` and ``node`` labels."""
    families: dict[str, Metric] = {}
    for vs, text in sorted(texts.items()):
        if not text:
            continue
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError:
            continue  # one bad report must not break the node's scrape
        for family in parsed:
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation,
                                                        family.type, family.unit)
            for sample in family.samples:
                labels = {**sample.labels, "vs": vs, "node": node}
                merged.samples.append(Sample(sample.name, labels, sample.value,
                                             sample.timestamp, sample.exemplar))
    return list(families.values())


def exposition(state: NodeState) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(state))
    return generate_latest(registry)


async def serve(address: str, snapshot: Callable[[], NodeState]) -> asyncio.Server:
    """Serves ``GET /metrics`` (HTTP/1.0 style: one request per connection)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                request = await reader.readline()
                while await reader.readline() not in (b"\r\n", b"\n", b""):
                    pass  # headers: nothing we need
            parts = request.decode("latin-1").split()
            if len(parts) >= 2 and parts[0] in ("GET", "HEAD") \
                    and parts[1].split("?")[0] in ("/metrics", "/"):
                body = exposition(snapshot())
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE_LATEST}\r\n"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
                writer.write(head.encode() + (body if parts[0] == "GET" else b""))
            else:
                body = b"not found: the metrics are at /metrics\n"
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
                             + f"Content-Length: {len(body)}\r\n".encode()
                             + b"Connection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, int(port), reuse_address=True)
    log_event("metrics", message=f"serving metrics at http://{address}/metrics")
    return server
