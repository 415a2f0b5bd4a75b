"""The sample cluster's administrator account and the console's address, for `up`
(apart from the admin-user commands, so starting a cluster does not import the API)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from rich.console import Console

from clustermail.admin import sample_cluster
from clustermail.admin.api.accounts import Accounts
from clustermail.admin.api.roles import Role
from clustermail.cluster.model import ClusterConfig
from clustermail.coord import Store

#: The operator account the sample cluster creates.
DEFAULT_ADMIN = "admin"


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def console_url(config: ClusterConfig) -> str | None:
    """Where the cluster group's admin service serves the console (plain HTTP on a
    loopback address when it has one, else HTTPS)."""
    for vs in config.virtual_servers:
        admin = next((r for r in vs.resources if r.type == "admin_service"), None)
        ip = next((r for r in vs.resources if r.type == "ip_address"), None)
        if admin is None or ip is None:
            continue
        address = str(ip.properties.get("address"))
        host = f"[{address}]" if ":" in address else address
        http, https = admin.properties.get("http_port"), admin.properties.get("https_port")
        if http and _is_loopback(address):
            return f"http://{host}:{http}/console/"
        if https:
            return f"https://{host}:{https}/console/"
    return None


async def seed_admin(store: Store, config: ClusterConfig, data_dir: Path,
                     console: Console) -> str | None:
    """The sample cluster's `admin` operator, created once with a random password kept
    in DATA/passwords.json; prints the console's address. Returns the new password."""
    accounts = Accounts(store)
    created = None
    if await accounts.get(DEFAULT_ADMIN) is None:
        created = sample_cluster.new_password()
        await accounts.add(DEFAULT_ADMIN, created, Role.OPERATOR)
        passwords = sample_cluster.load_passwords(data_dir)
        passwords[DEFAULT_ADMIN] = created
        sample_cluster.save_passwords(data_dir, passwords)
    shown = created or f"(in {sample_cluster.passwords_path(data_dir)})"
    console.print(f"console: [bold]{console_url(config)}[/] — log in as "
                  f"[bold]{DEFAULT_ADMIN}[/], password [bold]{shown}[/]")
    return created

