"""The sample cluster's shape with the cluster layer's own resources only, for tests
of that layer: node1..node4, mail1..mail3 on 127.0.0.11..13 in active/passive
(node4 the standby), each with an address, a network name, a disk and a `banner`
process standing in for the mail services. Placement golden files call it "seed".
"""

from __future__ import annotations

from typing import Any

from clustermail.cluster.config import config_from_dict
from clustermail.cluster.model import ClusterConfig

NODES = ("node1", "node2", "node3", "node4")
BANNER_PORT = 2525


def _virtual_server(index: int) -> dict[str, Any]:
    name, address = f"mail{index}", f"127.0.0.{10 + index}"
    return {
        "preferred_owners": [f"node{index}", "node4"],
        "failback": "never",
        "resources": {
            "ip": {"type": "ip_address", "properties": {"address": address}},
            "name": {"type": "network_name", "depends_on": ["ip"], "properties": {"name": name}},
            "disk": {"type": "disk", "properties": {"path": f"{{data}}/disks/{name}"}},
            "banner": {
                "type": "process",
                "depends_on": ["ip", "name", "disk"],
                "properties": {
                    "command": ["{python}", "-m", "clustermail.cluster.banner",
                                "--address", address, "--port", str(BANNER_PORT)],
                    "tcp_check": f"{address}:{BANNER_PORT}",
                },
            },
        },
    }


def banner_cluster_config() -> ClusterConfig:
    data = {
        "cluster": {"name": "clustermail", "placement": "active-passive", "timing": "default"},
        "nodes": {name: {} for name in NODES},
        "virtual_servers": {f"mail{i}": _virtual_server(i) for i in (1, 2, 3)},
    }
    return config_from_dict(data, "<banner cluster>")
