"""The lab's cluster: the sample cluster's virtual servers with real addresses on the
lab's bridge (``ip_address`` in interface mode, gratuitous ARP) on N machines."""

from __future__ import annotations

from typing import Any

from clustermail.admin import sample_cluster
from clustermail.cluster.config import config_from_dict
from clustermail.cluster.model import ClusterConfig


def node_names(machines: int) -> list[str]:
    return [f"node{i}" for i in range(1, machines + 1)]


def machine_address(subnet: str, index: int) -> str:
    """node1 is .11, node2 .12, …"""
    return f"{subnet}.{10 + index}"


def client_address(subnet: str) -> str:
    return f"{subnet}.100"


def vs_address(subnet: str, index: int) -> str:
    """mail1 is .201, mail2 .202, …"""
    return f"{subnet}.{200 + index}"


def lab_config(subnet: str, machines: int, devices: dict[str, str],
               timing: str = "default") -> ClusterConfig:
    """mail1..mail3, each preferring its own node and the last node (the standby), each
    with its shared disk on a block device (``devices``: virtual server → device);
    ``timing`` is the lease profile ("default" or "fast")."""
    nodes = node_names(machines)
    standby = nodes[-1]
    servers: dict[str, Any] = {}
    for i, name in enumerate(sample_cluster.VIRTUAL_SERVERS, 1):
        first = nodes[(i - 1) % (len(nodes) - 1)]
        servers[name] = {
            "preferred_owners": [first, standby],
            "failback": "never",
            # The lab is for injecting faults: many failovers in an hour are the point.
            "failover_threshold": 20,
            "resources": {
                "ip": {"type": "ip_address", "properties": {
                    "address": vs_address(subnet, i), "mode": "interface",
                    "interface": "eth0", "prefix": 24, "arp": True}},
                "name": {"type": "network_name", "depends_on": ["ip"],
                         "properties": {"name": name}},
                # Mounted in the owner's mount namespace only: other machines see an
                # empty folder there.
                "disk": {"type": "disk", "properties": {
                    "path": f"{{data}}/disks/{name}", "device": devices[name],
                    "fstype": "ext4", "mount_options": "noatime"}},
                **sample_cluster.mail_resources(),
            },
        }
    data = {
        "cluster": {"name": "clustermail-lab", "placement": "active-passive",
                    "timing": timing},
        "nodes": {name: {} for name in nodes},
        "virtual_servers": servers,
    }
    return config_from_dict(data, "the lab's cluster")
