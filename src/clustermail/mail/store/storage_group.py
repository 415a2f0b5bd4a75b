"""Storage groups and the mail store of one virtual server's disk.

A storage group is a directory of mailbox databases that mount and dismount together, as in
Exchange 2003. :class:`MailStore` is what the mail-store resource of a virtual server opens
on its disk: it reads the layout from the disk, creates the default (SG1/DB1) on a new disk,
lets an administrator add storage groups and databases within the limits, and mounts them
all with the virtual server's fencing epoch.
"""

from __future__ import annotations

import threading
from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path

from clustermail.mail.store import layout as layout_mod
from clustermail.mail.store.database import MailboxDatabase
from clustermail.mail.store.errors import LayoutError
from clustermail.mail.store.layout import Layout, Limits
from clustermail.mail.store.translog.manifest import StorageGroupLogs
from clustermail.mail.store.types import DatabaseSettings, MountInfo


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    storage_group: str
    name: str
    path: Path
    mounted: bool


class StorageGroup:
    def __init__(self, name: str, path: Path, logs: StorageGroupLogs | None = None) -> None:
        self.name = name
        self.path = path
        #: Its transaction logs and its record of its databases.
        self.logs = logs
        self.databases: dict[str, MailboxDatabase] = {}

    def database(self, name: str) -> MailboxDatabase:
        try:
            return self.databases[name]
        except KeyError:
            raise LayoutError(f"storage group {self.name!r} has no database {name!r}") from None

    def mount(self, epoch: int) -> list[MountInfo]:
        """Mount every database; on a failure the ones this call mounted are dismounted."""
        done: list[MailboxDatabase] = []
        infos: list[MountInfo] = []
        try:
            for db in self.databases.values():
                if not db.mounted:
                    infos.append(db.mount(epoch))
                    done.append(db)
        except BaseException:
            for db in done:
                db.dismount()
            raise
        return infos

    def dismount(self) -> None:
        for db in self.databases.values():
            db.dismount()


class MailStore:
    def __init__(
        self, disk: Path | str, *, limits: Limits | None = None, create: bool = True
    ) -> None:
        """Open the store on a virtual server's disk. A disk without a layout gets the default
        one when ``create``; ``limits`` apply to a new layout."""
        self.disk = Path(disk)
        self._lock = threading.Lock()
        self._epoch: int | None = None
        loaded = layout_mod.load(self.disk)
        if loaded is None:
            if not create:
                raise LayoutError(
                    f"{self.disk}: no {layout_mod.LAYOUT_FILE}: not a mail store disk"
                )
            self.disk.mkdir(mode=0o700, parents=True, exist_ok=True)
            loaded = layout_mod.default_layout(limits)
            for sg in loaded.storage_groups:
                (self.disk / sg.name).mkdir(mode=0o700, exist_ok=True)
            layout_mod.save(self.disk, loaded)
        self._layout = loaded
        self._groups: dict[str, StorageGroup] = {}
        for sg in loaded.storage_groups:
            group = StorageGroup(sg.name, self.disk / sg.name, self._logs_of(sg))
            for db in sg.databases:
                group.databases[db] = MailboxDatabase(
                    layout_mod.database_path(self.disk, sg.name, db), name=db, logs=group.logs
                )
            self._groups[sg.name] = group

    @property
    def layout(self) -> Layout:
        return self._layout

    @property
    def epoch(self) -> int | None:
        """The fencing epoch the store is mounted with (None: dismounted)."""
        return self._epoch

    def _logs_of(self, sg: layout_mod.StorageGroupLayout) -> StorageGroupLogs:
        return StorageGroupLogs(layout_mod.log_path(self.disk, sg), sg.name)

    def storage_group(self, name: str) -> StorageGroup:
        try:
            return self._groups[name]
        except KeyError:
            raise LayoutError(f"no storage group {name!r} on {self.disk}") from None

    def database(self, storage_group: str, database: str) -> MailboxDatabase:
        return self.storage_group(storage_group).database(database)

    def databases(self) -> list[MailboxDatabase]:
        return [db for g in self._groups.values() for db in g.databases.values()]

    def list_databases(self) -> list[DatabaseInfo]:
        return [
            DatabaseInfo(g.name, name, db.path, db.mounted)
            for g in self._groups.values()
            for name, db in g.databases.items()
        ]

    def add_storage_group(self, name: str) -> StorageGroup:
        with self._lock:
            new = self._layout.with_storage_group(name)
            (self.disk / name).mkdir(mode=0o700, exist_ok=True)
            layout_mod.save(self.disk, new)
            self._layout = new
            group = self._groups[name] = StorageGroup(
                name, self.disk / name, self._logs_of(new.group(name))
            )
            return group

    def add_database(
        self, storage_group: str, name: str, *, settings: DatabaseSettings | None = None
    ) -> MailboxDatabase:
        """Add a database to a storage group; it is mounted at once if the store is."""
        with self._lock:
            new = self._layout.with_database(storage_group, name)
            db = MailboxDatabase(
                layout_mod.database_path(self.disk, storage_group, name),
                name=name,
                settings=settings,
                logs=self._groups[storage_group].logs,
            )
            if self._epoch is not None:
                db.mount(self._epoch)  # creates the file before the layout names it
            layout_mod.save(self.disk, new)
            self._layout = new
            self._groups[storage_group].databases[name] = db
            return db

    def set_limits(self, limits: Limits) -> None:
        with self._lock:
            new = self._layout.with_limits(limits)
            layout_mod.save(self.disk, new)
            self._layout = new

    def mount(self, epoch: int) -> list[MountInfo]:
        """Mount every storage group with the virtual server's fencing epoch."""
        infos: list[MountInfo] = []
        try:
            for group in self._groups.values():
                infos += group.mount(epoch)
        except BaseException:
            self.dismount()
            raise
        self._epoch = epoch
        return infos

    def mount_available(
        self, epoch: int, refusable: tuple[type[BaseException], ...],
        skip: Set[tuple[str, str]] = frozenset(),
    ) -> tuple[list[MountInfo], dict[tuple[str, str], BaseException]]:
        """Mount every database that mounts; one that fails with a ``refusable`` error
        (its file lost, say) stays dismounted and is returned with the error, while the
        others serve. Any other error dismounts everything and is raised. Databases in
        ``skip`` (storage group, database) are left dismounted."""
        infos: list[MountInfo] = []
        refused: dict[tuple[str, str], BaseException] = {}
        try:
            for group in self._groups.values():
                for name, db in group.databases.items():
                    if db.mounted or (group.name, name) in skip:
                        continue
                    try:
                        infos.append(db.mount(epoch))
                    except refusable as exc:
                        refused[(group.name, name)] = exc
        except BaseException:
            self.dismount()
            raise
        self._epoch = epoch
        return infos, refused

    def dismount(self) -> None:
        self._epoch = None
        for group in self._groups.values():
            group.dismount()

    def find_mailbox(self, mailbox: str) -> MailboxDatabase | None:
        """The mounted database holding a mailbox (the directory will know; this is for tools)."""
        for db in self.databases():
            if db.mounted and db.has_mailbox(mailbox):
                return db
        return None
