"""What the API's handlers share: the store, where it runs, accounts, history."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clustermail.admin.api.accounts import Accounts
from clustermail.admin.api.auth import Authenticator
from clustermail.cluster import eventlog
from clustermail.coord import Store

if TYPE_CHECKING:
    from clustermail.admin.api.history import History


@dataclass
class ApiContext:
    store: Store
    #: The node the admin service runs on (the event log's "node" of its entries).
    node: str
    #: That node's data directory ({data} of the cluster file: disks, queues, logs).
    data_dir: Path
    accounts: Accounts
    auth: Authenticator
    history: History | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    async def log_change(self, user: str, action: str, message: str, *, vs: str = "",
                         resource: str = "", **fields: Any) -> None:
        """Writes an administrator's change to the cluster event log, with who made it."""
        entry = eventlog.note(self.node, "admin_change", f"{user}: {message}", vs=vs,
                              resource=resource,
                              extra={"user": user, "action": action, "via": "api", **fields})
        await eventlog.append(self.store, entry)
