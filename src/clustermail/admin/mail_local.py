"""Reaching a virtual server's mailbox databases from an admin command on this machine.

`user move`, `user recover-deleted` and `store check --repair` write into databases
that a resource host may have mounted. The design, chosen as the simplest safe one
for a local cluster: the command mounts the one database it needs itself, from the
disk path of the applied configuration (``{data}`` = ``--data``), with the virtual
server's current fencing epoch read from the store, and writes through the
database's own write path. SQLite serialises the two writers; every write batch
checks the epoch, so if the virtual server fails over meanwhile (a newer epoch
mounts), the command's writes are refused and it stops: it can never write over a
newer owner. It refuses to run unless the virtual server's owner runs on this host
(or nobody owns it) and the disk is here: SQLite's locking is only trusted on a
local file system. Across machines, run it on the owner's machine.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from clustermail.admin import intents
from clustermail.admin.errors import AdminError
from clustermail.cluster.hostspec import substitute
from clustermail.cluster.resources.base import ResourceError
from clustermail.cluster.resources.disk import check_epoch
from clustermail.cluster.view import ClusterView
from clustermail.mail.store import LayoutError, MailboxDatabase, MailStore, StoreError


@dataclass(frozen=True, slots=True)
class Location:
    """Where a virtual server's mail store lives, and who owns it now."""

    vs: str
    disk: Path
    root: Path
    epoch: int
    owner: str | None  # node name
    owner_host: str | None

    def database_path(self, storage_group: str, database: str) -> Path:
        return self.root / storage_group / f"{database}.sqlite"


def locate(view: ClusterView, vs: str, data_dir: Path) -> Location:
    """The mail store of ``vs`` per the applied configuration; AdminError if it has none."""
    intents.check_vs(view, vs)
    server = intents.applied_config(view).virtual_server(vs)
    assert server is not None
    stores = [r for r in server.resources if r.type == "mail_store"]
    if not stores:
        raise AdminError(f"virtual server {vs} has no mail_store resource in the configuration")
    store = stores[0]
    disks = [r for d in store.depends_on if (r := server.resource(d)) and r.type == "disk"]
    if not disks:
        raise AdminError(f"the mail_store resource of {vs} depends on no disk resource")
    raw = str(disks[0].properties.get("path", ""))
    if "{node}" in raw:
        raise AdminError(f"the disk path of {vs} ({raw}) depends on the node; "
                         "run this on the owner's machine with --data set accordingly")
    values = {"data": str(data_dir.resolve()), "vs": vs, "python": sys.executable}
    disk = Path(substitute(raw, values))
    root = disk / str(store.properties.get("path", "mail"))
    owner_record = view.owner.get(vs)
    epoch = max(view.epoch_of(vs), owner_record.epoch if owner_record is not None else 0)
    owner = owner_record.node if owner_record is not None else None
    node = view.nodes.get(owner) if owner is not None else None
    host = (node.host or None) if node is not None else None
    return Location(vs, disk, root, epoch, owner, host)


def require_here(loc: Location) -> None:
    """AdminError unless the mail store can be written safely from this machine."""
    if loc.owner is not None and loc.owner_host not in (None, socket.gethostname()):
        raise AdminError(
            f"{loc.vs} runs on node {loc.owner} on host {loc.owner_host}: run this command "
            "on that machine"
        )
    if not (loc.root / "storage.json").is_file():
        raise AdminError(
            f"no mail store of {loc.vs} at {loc.root}: bring {loc.vs} online once (its "
            "mail_store creates it), or give the --data directory of the machine with its disk"
        )


@contextmanager
def mounted(loc: Location, storage_group: str, database: str) -> Iterator[MailboxDatabase]:
    """One database of ``loc`` mounted in this process with the current epoch."""
    require_here(loc)
    try:
        check_epoch(loc.disk, loc.epoch)
        db = MailStore(loc.root, create=False).database(storage_group, database)
    except ResourceError as exc:
        raise AdminError(str(exc)) from exc
    except LayoutError:
        raise AdminError(
            f"database {storage_group}/{database} does not exist on {loc.vs}'s disk yet: "
            f"{loc.vs}'s mail_store creates it when online"
        ) from None
    if not db.path.exists():
        raise AdminError(f"database {storage_group}/{database} of {loc.vs} was never mounted "
                         f"({db.path} is missing): bring {loc.vs} online first")
    try:
        db.mount(loc.epoch, owner=f"clustermail admin ({socket.gethostname()}:{os.getpid()})")
    except StoreError as exc:
        raise AdminError(str(exc)) from exc
    try:
        yield db
    finally:
        db.dismount()
