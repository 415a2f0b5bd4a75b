"""The sample cluster that `clustermail up` runs: the Exchange 2003 documentation's
four nodes and three virtual servers, each serving mail on its own loopback address.

The cluster layer's generic default (`cluster.config.default_cluster_config`)
knows nothing of mail; this module adds the mail resources, so it lives in the
admin layer, which may import every layer.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from clustermail.cluster.config import config_from_dict, default_cluster_config
from clustermail.cluster.model import ClusterConfig

DOMAIN = "example.test"
USERS = {"mail1": "alice", "mail2": "bob", "mail3": "carol"}

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
        "store": {"type": "mail_store", "depends_on": ["disk"], "properties": {}},
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


def seed_config() -> ClusterConfig:
    data = default_cluster_config().to_dict()
    for vs in data["virtual_servers"].values():
        resources = vs["resources"]
        resources.pop("banner", None)
        resources.update(mail_resources())
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
