"""Cluster-level metrics, served by the admin service at ``/metrics``.

Computed from one view of the store at scrape time (no state kept here), plus the
admin service's own counters (failed logins, failover durations it watched).
Node-level and resource-host metrics are served by each node agent (see
:mod:`clustermail.cluster.metrics`).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from clustermail.admin.api.context import ApiContext
from clustermail.admin.status import build_status
from clustermail.cluster.view import ClusterView, read_view

VS_STATES = ("online", "online_pending", "partially_online", "offline_pending", "offline",
             "failed")
NODE_STATES = ("up", "paused", "draining", "down")


class _ViewCollector(Collector):
    def __init__(self, view: ClusterView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        view = self.view
        status = build_status(view)
        state = GaugeMetricFamily("clustermail_vs_state", "1 for the state a virtual server "
                                  "is in", labels=["vs", "state"])
        owner = GaugeMetricFamily("clustermail_vs_owner", "1 for the node that owns a "
                                  "virtual server", labels=["vs", "node"])
        epoch = GaugeMetricFamily("clustermail_vs_epoch", "The fencing epoch of a virtual "
                                  "server's current ownership", labels=["vs"])
        failovers = GaugeMetricFamily("clustermail_vs_failovers_recorded", "Failovers in a "
                                      "virtual server's kept history (7 days)", labels=["vs"])
        for vs in status["virtual_servers"]:
            for name in VS_STATES:
                state.add_metric([vs["name"], name], 1.0 if vs["state"] == name else 0.0)
            if vs["owner"]:
                owner.add_metric([vs["name"], vs["owner"]], 1.0)
            if vs["epoch"] is not None:
                epoch.add_metric([vs["name"]], float(vs["epoch"]))
            history = view.failures.get(vs["name"])
            failovers.add_metric([vs["name"]], float(len(history.entries) if history else 0))
        nodes = GaugeMetricFamily("clustermail_node_state", "1 for the state a node is in",
                                  labels=["node", "state"])
        for node in status["nodes"]:
            for name in NODE_STATES:
                nodes.add_metric([node["name"], name], 1.0 if node["state"] == name else 0.0)
        leader = GaugeMetricFamily("clustermail_leader", "1 for the node that leads",
                                   labels=["node"])
        if view.leader:
            leader.add_metric([view.leader], 1.0)
        problems = GaugeMetricFamily("clustermail_store_malformed_records",
                                     "Records in the store that could not be read")
        problems.add_metric([], float(len(view.problems)))
        yield from (state, owner, epoch, failovers, nodes, leader, problems)


async def exposition(ctx: ApiContext) -> tuple[bytes, str]:
    """The Prometheus text of the cluster's metrics and the admin service's own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ViewCollector(await read_view(ctx.store)))
    text = generate_latest(registry)
    from clustermail.admin.api.service_metrics import SERVICE_REGISTRY

    return text + generate_latest(SERVICE_REGISTRY), CONTENT_TYPE_LATEST
