"""The sample cluster that `clustermail up` runs: the Exchange 2003 documentation's
four nodes and three virtual servers in active/passive (node4 is the standby), each
serving mail on its own loopback address, and one demo mailbox per virtual server;
plus the cluster's own group (the admin service on 127.0.0.10) and each node's
Prometheus metrics on 127.0.0.1:9101-9104.

It names the mail resource types, so it lives in the admin layer, which may import
every layer; the cluster layer knows no sample.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from clustermail.cluster.config import config_from_dict
from clustermail.cluster.model import ClusterConfig

NODES = ("node1", "node2", "node3", "node4")
VIRTUAL_SERVERS = ("mail1", "mail2", "mail3")
DOMAIN = "example.test"
USERS = {"mail1": "alice", "mail2": "bob", "mail3": "carol"}
#: The cluster's own group: its address and the admin service's ports there.
CLUSTER_GROUP = "cluster"
CLUSTER_ADDRESS = "127.0.0.10"
ADMIN_PORTS = {"http": 8080, "https": 8443}
#: Each node agent's Prometheus metrics: node1 on 9101 ... node4 on 9104.
METRICS_HOST = "127.0.0.1"
METRICS_FIRST_PORT = 9101

#: Ports on each virtual server's address (unprivileged, so no root is needed).
PORTS = {
    "smtp": 2525,
    "submission": 2587,
    "submissions": 2465,
    "imap": 2143,
    "imaps": 2993,
    "pop3": 2110,
    "pop3s": 2995,
}


def mail_resources() -> dict[str, Any]:
    """The mail resources of one virtual server, as in the TOML file."""
    loopback_ok = {"allow_plaintext_on_loopback": True}
    return {
        # A full backup every night into clustermail-data/backups (the default
        # backup_path), the newest 7 kept; the owner runs it, wherever it runs.
        "store": {"type": "mail_store", "depends_on": ["disk"],
                  "properties": {"backup_schedule": "daily 02:00", "backup_keep": 7}},
        "smtp": {
            "type": "smtp",
            "depends_on": ["store", "ip", "name"],
            "properties": {
                "port": PORTS["smtp"],
                "submission_port": PORTS["submission"],
                "submissions_port": PORTS["submissions"],
                **loopback_ok,
            },
        },
        "imap4": {
            "type": "imap4",
            "depends_on": ["store", "ip"],
            "properties": {"port": PORTS["imap"], "tls_port": PORTS["imaps"], **loopback_ok},
        },
        "pop3": {
            "type": "pop3",
            "depends_on": ["store", "ip"],
            "properties": {"port": PORTS["pop3"], "tls_port": PORTS["pop3s"], **loopback_ok},
        },
    }


def _virtual_server(index: int) -> dict[str, Any]:
    name, address = f"mail{index}", f"127.0.0.{10 + index}"
    return {
        # Exchange 2003 N+1: each virtual server has its own active node, node4 is the standby.
        "preferred_owners": [f"node{index}", "node4"],
        "failback": "never",
        "resources": {
            "ip": {"type": "ip_address", "properties": {"address": address}},
            "name": {"type": "network_name", "depends_on": ["ip"], "properties": {"name": name}},
            "disk": {"type": "disk", "properties": {"path": f"{{data}}/disks/{name}"}},
            **mail_resources(),
        },
    }


def cluster_group() -> dict[str, Any]:
    """The cluster's own group: its address and the admin service (API, console, metrics)."""
    return {
        "kind": "cluster",
        "preferred_owners": list(NODES),
        "failback": "never",
        "resources": {
            "ip": {"type": "ip_address", "properties": {"address": CLUSTER_ADDRESS}},
            "admin": {"type": "admin_service", "depends_on": ["ip"],
                      "properties": {"http_port": ADMIN_PORTS["http"],
                                     "https_port": ADMIN_PORTS["https"]}},
        },
    }


def sample_config() -> ClusterConfig:
    """node1..node4; mail1..mail3 on 127.0.0.11..13, each with SMTP, IMAP4 and POP3; the
    cluster group on 127.0.0.10."""
    data = {
        "cluster": {"name": "clustermail", "placement": "active-passive", "timing": "default"},
        "nodes": {name: {"metrics": f"{METRICS_HOST}:{METRICS_FIRST_PORT + i}"}
                  for i, name in enumerate(NODES)},
        "virtual_servers": {name: _virtual_server(i)
                            for i, name in enumerate(VIRTUAL_SERVERS, 1)}
        | {CLUSTER_GROUP: cluster_group()},
    }
    return config_from_dict(data, "the sample cluster")


def passwords_path(data_dir: Path) -> Path:
    return data_dir / "passwords.json"


def load_passwords(data_dir: Path) -> dict[str, str]:
    path = passwords_path(data_dir)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def save_passwords(data_dir: Path, passwords: dict[str, str]) -> None:
    path = passwords_path(data_dir)
    tmp = path.with_suffix(".tmp")
    # Readable by the owner only: these are real credentials of the demo users.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(passwords, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def new_password() -> str:
    return secrets.token_urlsafe(12)
