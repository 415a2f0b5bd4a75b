"""The `status --json` contract, built from one view of the store.

Stable for scripts and monitoring (documented in docs/cli.md):
``{"cluster", "revision", "leader", "nodes": [{"name", "state", "pid", "leader"}],
"virtual_servers": [{"name", "state", "owner", "address", "reason", "pid", "epoch",
"resources"}]}``. Node states: up, paused, draining, down. Virtual server
states: online, online_pending, partially_online, offline_pending, offline,
failed.
"""

from __future__ import annotations

import socket
from typing import Any

from clustermail.cluster.view import ClusterView


def vs_address(config: dict[str, Any], vs: str) -> str | None:
    resources = config.get("virtual_servers", {}).get(vs, {}).get("resources", {})
    for res in resources.values():
        if res.get("type") == "ip_address":
            address = res.get("properties", {}).get("address")
            return str(address) if address else None
    return None


def node_state(view: ClusterView, node: str) -> str:
    record = view.nodes.get(node)
    if record is None:
        return "down"
    if record.get("draining"):
        return "draining"
    if view.node_admin.get(node, {}).get("paused"):
        return "paused"
    return "up"


def build_status(view: ClusterView) -> dict[str, Any]:
    config = view.config or {}
    here = socket.gethostname()
    nodes = []
    for name in view.node_names():
        record = view.nodes.get(name, {})
        nodes.append(
            {
                "name": name,
                "state": node_state(view, name),
                # A PID means something only on the machine that runs the agent.
                "pid": record.get("pid") if record.get("host") == here else None,
                "leader": view.leader == name,
            }
        )
    servers = []
    for name in view.vs_names():
        status = view.status.get(name)
        assignment = view.assign.get(name, ({}, 0))[0]
        owner = view.owner.get(name, ({}, None))[0]
        if status:
            state = str(status.get("state", "online_pending"))
            reason = str(status.get("reason") or assignment.get("reason", ""))
        elif assignment.get("node"):
            state = "online_pending"
            reason = str(assignment.get("reason", ""))
        else:
            state = "failed" if assignment.get("failed") else "offline"
            reason = str(assignment.get("reason", "not placed yet"))
        servers.append(
            {
                "name": name,
                "state": state,
                "owner": owner.get("node") if owner else None,
                "address": vs_address(config, name),
                "reason": reason,
                "pid": status.get("pid") if status else None,
                "epoch": owner.get("epoch") if owner else None,
                "resources": (status or {}).get("resources", {}),
                "resource_pids": (status or {}).get("resource_pids", {}),
            }
        )
    return {
        "cluster": config.get("cluster", {}).get("name", "clustermail"),
        "revision": view.revision,
        "leader": view.leader,
        "nodes": nodes,
        "virtual_servers": servers,
    }
