"""The `status --json` contract, built from one view of the store.

Stable for scripts and monitoring (documented in docs/cli.md):
``{"cluster", "revision", "leader", "nodes": [{"name", "state", "pid", "leader",
"metrics_url"}],
"virtual_servers": [{"name", "state", "owner", "address", "reason", "pid", "epoch",
"resources"}]}``. Node states: up, paused, draining, down. Virtual server
states: online, online_pending, partially_online, offline_pending, offline,
failed.
"""

from __future__ import annotations

import socket
from typing import Any

from clustermail.cluster.model import ClusterConfig
from clustermail.cluster.view import ClusterView


def vs_address(config: ClusterConfig | None, vs: str) -> str | None:
    server = config.virtual_server(vs) if config is not None else None
    for res in server.resources if server is not None else ():
        if res.type == "ip_address":
            address = res.properties.get("address")
            return str(address) if address else None
    return None


def node_state(view: ClusterView, node: str) -> str:
    record = view.nodes.get(node)
    if record is None:
        return "down"
    if record.draining:
        return "draining"
    if view.paused(node):
        return "paused"
    return "up"


def build_status(view: ClusterView) -> dict[str, Any]:
    config = view.cluster_config
    here = socket.gethostname()
    nodes = []
    for name in view.node_names():
        record = view.nodes.get(name)
        model = config.node(name) if config is not None else None
        nodes.append(
            {
                "name": name,
                "state": node_state(view, name),
                # A PID means something only on the machine that runs the agent.
                "pid": (record.pid or None) if record is not None and record.host == here else None,
                "leader": view.leader == name,
                # Where the node agent serves its Prometheus metrics (None: not served).
                "metrics_url": model.metrics_url if model is not None else None,
            }
        )
    servers = []
    for name in view.vs_names():
        status = view.status.get(name)
        assignment = view.assignment(name)
        owner = view.owner.get(name)
        if status is not None:
            state = status.state
            reason = status.reason or assignment.reason
        elif assignment.node:
            state = "online_pending"
            reason = assignment.reason
        else:
            state = "failed" if assignment.failed else "offline"
            reason = assignment.reason if name in view.assign else "not placed yet"
        servers.append(
            {
                "name": name,
                "state": state,
                "owner": owner.node if owner is not None else None,
                "address": vs_address(config, name),
                "reason": reason,
                "pid": status.pid if status is not None else None,
                "epoch": owner.epoch if owner is not None else None,
                "resources": dict(status.resources) if status is not None else {},
                "resource_pids": dict(status.resource_pids) if status is not None else {},
            }
        )
    return {
        "cluster": config.name if config is not None else "clustermail",
        "revision": view.revision,
        "leader": view.leader,
        "nodes": nodes,
        "virtual_servers": servers,
    }
