"""The ``mail_store`` resource: the virtual server's storage groups, mounted from its disk.

Online: check the disk's fencing epoch, open the mail store at ``<disk>/<path>``, add
the storage groups and databases the directory plans or homes mailboxes on, mount
everything with the owner's epoch (a database last mounted with a newer epoch refuses:
safety rule 1), then create every mailbox the directory homes here. A watch on the
directory keeps doing that while online, so `clustermail user add` works against a
running cluster. Offline: dismount cleanly (WAL checkpointed into the files).

Other resources (SMTP, IMAP4, POP3) depend on this one and use :attr:`store`,
:attr:`directory` and :meth:`database_for`.

Properties (all optional): ``path`` (subdirectory of the disk, default "mail"),
``max_message_size`` (bytes), ``quota_warning``, ``quota_prohibit_send``,
``quota_prohibit_send_receive`` (bytes: the databases' default quota),
``retention_days`` (deleted-item retention). Given ones are applied to every database
at each online; absent ones leave each database's own setting alone.

Backups (see docs/backup.md): ``backup_path`` (default ``{data}/backups``),
``backup_schedule`` (full backups: "daily 02:00" UTC, "every 6h"),
``backup_incremental_schedule``, ``backup_keep`` (chains kept by scheduled backups) and
``backup_max_rate`` (MB/s, default 50, 0 for unpaced: the pace of every backup the owner
runs, in a child process of its own).
While online the resource runs the administrators' store requests (backup, restore of one
database while the others serve, reset, recovery; :mod:`clustermail.mail.backup.worker`)
and the schedule, and holds the mail store's admin lock
(:mod:`clustermail.mail.store.admin_lock`) so no offline command works on it meanwhile.

A database whose file is lost or unreadable is never re-created empty: it stays dismounted
(:attr:`MailStoreResource.lost`) while the others serve, and the event log says how to
restore it; the thorough check does the same for a file that vanishes while mounted. Two
records say a database existed: its storage group's manifest beside the logs, and the
cluster's record in the coordination store (:mod:`clustermail.mail.directory.databases`,
written when a database is first mounted), which survives a disk lost entirely (files,
logs and manifest): a database the cluster records is never created again on an empty
disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from clustermail.cluster import eventlog
from clustermail.cluster.model import PropertyValue
from clustermail.cluster.resource_schema import PropertyKind, PropertySpec, ResourceType
from clustermail.cluster.resources import (
    Properties,
    PropertyError,
    Resource,
    ResourceContext,
    ResourceError,
)
from clustermail.cluster.resources.disk import DiskResource, check_epoch
from clustermail.coord import CoordError
from clustermail.mail.backup.schedule import EXAMPLES, ScheduleError, parse_schedule
from clustermail.mail.backup.worker import OwnerSite, RequestWorker, plan_from
from clustermail.mail.directory import Directory, DisconnectedEntry, MailboxEntry
from clustermail.mail.directory import model as dm
from clustermail.mail.directory.cache import RELOADED
from clustermail.mail.directory.databases import DatabaseRecord
from clustermail.mail.queue.store import queue_path
from clustermail.mail.store import admin_lock
from clustermail.mail.store.database import MailboxDatabase
from clustermail.mail.store.errors import (
    DatabaseOpenError,
    FencedError,
    LayoutError,
    MountRefusedError,
    NotMountedError,
    StoreError,
)
from clustermail.mail.store.layout import Layout
from clustermail.mail.store.provision import (
    HomedMailbox,
    ProvisionReport,
    ensure_layout,
    ensure_mailboxes,
)
from clustermail.mail.store.quota import QuotaLimits
from clustermail.mail.store.storage_group import MailStore
from clustermail.mail.store.translog.errors import DatabaseLostError
from clustermail.mail.store.types import DatabaseSettings

#: Pause before retrying a provisioning pass that failed (the store was unreachable…).
RETRY_DELAY = 1.0
#: How often deleted items past their database's retention window are purged.
PURGE_INTERVAL = 3600.0


class NotHomedHereError(StoreError):
    """A mailbox that this virtual server does not serve (homed elsewhere, or its
    database does not exist here yet)."""


def settings_from(properties: Properties) -> tuple[DatabaseSettings, dict[str, Any]]:
    """Database settings for new databases, and the explicitly given ones to enforce."""
    given: dict[str, Any] = {}
    if "max_message_size" in properties:
        given["max_message_bytes"] = properties.integer("max_message_size", minimum=1)
    if "retention_days" in properties:
        given["retention_days"] = properties.number("retention_days")
    limits = {
        field: properties.integer(f"quota_{field}")
        for field in ("warning", "prohibit_send", "prohibit_send_receive")
        if f"quota_{field}" in properties
    }
    if limits:
        given["quota"] = QuotaLimits(**limits)
    return DatabaseSettings(**given), given


def check_subpath(owner: str, value: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        raise PropertyError(
            f"{owner}: property 'path': expected a subdirectory of the disk such as \"mail\", "
            f"got {value!r}"
        )
    return value


class MailStoreResource(Resource):
    #: The mounted mail store (set while online).
    store: MailStore
    #: The recipient directory, with a live cache (set while online).
    directory: Directory

    def __init__(self, ctx: ResourceContext, properties: Properties) -> None:
        super().__init__(ctx, properties)
        self.path = check_subpath(ctx.resource, properties.string("path", "mail"))
        self.settings, self._enforced = settings_from(properties)
        self.root: Path | None = None
        self._disk: Path | None = None
        self._mounted = False
        self._fenced: str | None = None
        self._lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None
        self._purger: asyncio.Task[None] | None = None
        self._applied: dict[str, HomedMailbox] = {}
        self.backup_path = Path(properties.string("backup_path", str(ctx.data_dir / "backups")))
        self.backup_plan = plan_from(properties)
        self._admin_lock: int | None = None
        self._worker: asyncio.Task[None] | None = None
        #: Databases an administrator's request dismounted on purpose (restore, reset):
        #: not a failure of the resource while that runs.
        self.maintenance: set[tuple[str, str]] = set()
        #: Databases that would not mount (their file lost or unreadable), with why: they
        #: stay dismounted while the others serve, until restored or reset.
        self.lost: dict[tuple[str, str], str] = {}
        #: The database ids the cluster's records hold, as this owner last read or wrote them.
        self._recorded: dict[tuple[str, str], str] = {}
        #: Called with (storage group, database) when a database is mounted again.
        self.mount_listeners: list[Callable[[str, str], None]] = []

    # ------------------------------------------------------------------ public API

    def database_for(self, entry: MailboxEntry) -> MailboxDatabase:
        """The mounted database holding ``entry``'s mailbox. NotHomedHereError when the
        directory homes it on another virtual server; NotMountedError while offline."""
        if entry.server != self.ctx.vs:
            raise NotHomedHereError(
                f"mailbox {entry.address} is homed on virtual server {entry.server}, "
                f"not on {self.ctx.vs}"
            )
        if not self._mounted:
            raise NotMountedError(self.root or self.path)
        try:
            return self.store.database(entry.storage_group, entry.database)
        except LayoutError:
            raise NotHomedHereError(
                f"mailbox {entry.address}: database {entry.storage_group}/{entry.database} "
                f"does not exist on {self.ctx.vs} yet"
            ) from None

    async def mailbox_database(self, entry: MailboxEntry) -> MailboxDatabase:
        """Like :meth:`database_for`, and creates the mailbox first if the directory
        change that homed it here has not been applied yet."""
        db = self.database_for(entry)
        if not await asyncio.to_thread(db.has_mailbox, entry.mailbox_id):
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(db.create_mailbox_sync, entry.mailbox_id,
                                        quota_limits=entry.quota)
        return db

    async def purge_deleted_items(self) -> int:
        """Deletes the retained deleted items past each database's retention window
        (run every PURGE_INTERVAL while online); returns how many went."""

        def purge() -> int:
            return sum(db.purge_deleted_items_sync() for db in self.store.databases())

        purged = await asyncio.to_thread(purge)
        if purged:
            self.ctx.log.info(f"purged {purged} deleted item(s) past their retention window")
        return purged

    # ------------------------------------------------------------------ resource

    async def online(self) -> None:
        disk = self.ctx.dependency(DiskResource)
        self._disk, self.root = disk.path, disk.path / self.path
        self._fenced = None
        self.maintenance.clear()
        self.lost.clear()
        await asyncio.to_thread(check_epoch, disk.path, self.ctx.epoch)
        try:
            self._admin_lock = await asyncio.to_thread(admin_lock.hold_shared, self.root)
            self.directory = Directory(await self.ctx.store())
            cache = await self.directory.start_cache(on_error=self.ctx.log.warning)
            cache.add_listener(self._on_change)
            plan, homed = await self._wanted()
            records = await self.directory.database_records(self.ctx.vs)
            self._recorded = {k: r.id for k, r in records.items()}
            started = time.perf_counter()
            report = ProvisionReport()
            self.store, infos = await asyncio.to_thread(self._mount, plan, homed, report,
                                                        records)
            self._mounted = True
            unclean = [str(i.path.relative_to(self.root)) for i in infos if i.unclean]
            self.ctx.log.info(
                f"mounted {len(infos)} database(s) with epoch {self.ctx.epoch} in "
                f"{time.perf_counter() - started:.3f} s"
                + (f"; recovered after an unclean shutdown: {', '.join(unclean)}"
                   if unclean else ""),
                databases=[str(i.path.relative_to(self.root)) for i in infos],
                seconds=[round(i.seconds, 4) for i in infos],
                unclean=unclean,
            )
            for (sg, db), why in self.lost.items():
                await self._event(f"database {sg}/{db} stays dismounted, the others serve: "
                                  f"{why}")
            await self._record_identities()  # before any delivery: SMTP depends on us
            await self._provision(report)
            await self._record_disconnected()
        except BaseException as exc:
            await self._stop()
            translated = _resource_error(self.ctx.resource, exc, self.ctx.vs)
            if translated is exc:
                raise
            raise translated from exc
        loop = asyncio.get_running_loop()
        self._follower = loop.create_task(self._follow(), name=f"{self.ctx.resource} follower")
        self._purger = loop.create_task(self._purge_loop(), name=f"{self.ctx.resource} purger")
        site = OwnerSite(self.ctx.vs, self.root, queue_path(disk.path), self.backup_path,
                         self.ctx.epoch, self.store, self.dismount_database,
                         self.mount_database, self.record_identity)
        worker = RequestWorker(await self.ctx.store(), site, self.ctx.node, self.ctx.log,
                               self.backup_plan, self._event)
        self._worker = loop.create_task(worker.run(), name=f"{self.ctx.resource} requests")

    async def dismount_database(self, storage_group: str, database: str) -> None:
        """Takes one database out of service (a restore or reset of it); the others keep
        serving, and deliveries to it wait in the relay queue."""
        db = self.store.database(storage_group, database)
        self.maintenance.add((storage_group, database))
        await asyncio.to_thread(db.dismount)
        self.ctx.log.info(f"database {storage_group}/{database} dismounted for an "
                          "administrator's request")

    async def mount_database(self, storage_group: str, database: str) -> None:
        """Mounts a database again after :meth:`dismount_database` (it stays in
        maintenance, dismounted, if that fails) and provisions its mailboxes again."""
        db = self.store.database(storage_group, database)
        info = await asyncio.to_thread(db.mount, self.ctx.epoch)
        self.maintenance.discard((storage_group, database))
        self.lost.pop((storage_group, database), None)
        self._applied = {k: v for k, v in self._applied.items()
                         if (v.storage_group, v.database) != (storage_group, database)}
        self._dirty.set()
        self.ctx.log.info(f"database {storage_group}/{database} mounted again with epoch "
                          f"{self.ctx.epoch} in {info.seconds:.3f} s")
        try:
            await self._record_identities()
        except CoordError as exc:  # mounted all the same; the next pass records it
            self.ctx.log.warning(f"cannot record {storage_group}/{database}'s id: {exc}")
            self._dirty.set()
        for listener in list(self.mount_listeners):
            listener(storage_group, database)

    async def record_identity(self, storage_group: str, database: str,
                              db_id: str | None) -> None:
        """The cluster's record of a database after a restore (its id) or a reset (None:
        dropped, so that its next mount creates it new and records that)."""
        if db_id is None:
            await self.directory.forget_database(self.ctx.vs, storage_group, database)
            self._recorded.pop((storage_group, database), None)
        else:
            await self._record(storage_group, database, db_id)

    async def _record_identities(self) -> None:
        """Records every mounted database the cluster does not know by its current id (a
        new database, one mounted before records existed, a restored or reset one)."""
        for info in self.store.list_databases():
            journal = self.store.database(info.storage_group, info.name).journal
            if journal is None:
                continue
            db_id = journal.log.db_id.hex()
            key = (info.storage_group, info.name)
            if self._recorded.get(key) != db_id:
                await self._record(info.storage_group, info.name, db_id)

    async def _record(self, storage_group: str, database: str, db_id: str) -> None:
        key = (storage_group, database)
        before = self._recorded.get(key)
        await self.directory.record_database(DatabaseRecord(
            self.ctx.vs, storage_group, database, db_id, time.time(), self.ctx.node,
            self.ctx.epoch))
        self._recorded[key] = db_id
        if before is not None and before != db_id:
            await self._event(f"database {storage_group}/{database} is now database {db_id} "
                              f"(the cluster recorded {before}: restored from another "
                              "database's backup, or reset)")

    async def offline(self) -> None:
        await self._stop()

    async def quick_check(self) -> bool:
        if self._fenced is not None:
            return False
        ok = self._mounted and all(
            db.mounted and db.failed is None for db in self._in_service()
        )
        if ok:
            export_sizes(self.store)
        return ok

    def _in_service(self) -> list[MailboxDatabase]:
        """The databases that should be mounted (not those an administrator took out, nor
        lost ones waiting for a restore)."""
        out = self.store.list_databases()
        return [self.store.database(i.storage_group, i.name) for i in out
                if not self._out_of_service(i.storage_group, i.name)]

    def _out_of_service(self, storage_group: str, database: str) -> bool:
        return (storage_group, database) in self.maintenance or (
            storage_group, database) in self.lost

    async def thorough_check(self) -> bool:
        if not await self.quick_check():
            return False

        def check() -> list[MailboxDatabase]:
            assert self._disk is not None
            check_epoch(self._disk, self.ctx.epoch)
            gone = [db for db in self._in_service() if not db.path.exists()]
            for db in self._in_service():
                if db not in gone:
                    db.list_mailboxes()  # a read query: the file is readable and sane
            return gone

        try:
            for db in await asyncio.to_thread(check):
                await self._lose(db)
        except (ResourceError, StoreError, OSError) as exc:
            self.ctx.log.error(f"mail store check failed: {exc}")
            return False
        return True

    async def _lose(self, db: MailboxDatabase) -> None:
        """A mounted database whose file vanished: out of service, so the others go on
        serving and deliveries to it wait in the queue, until it is restored."""
        sg = db.path.parent.name
        await asyncio.to_thread(db.dismount)  # its log has every acknowledged change
        self.lost[(sg, db.name)] = f"{db.path} is missing"
        await self._event(
            f"database {sg}/{db.name}: {db.path} disappeared while mounted; it is dismounted, "
            f"the others serve. Restore it: clustermail restore {self.ctx.vs} {sg}/{db.name} "
            "--from <backup id> (see clustermail backup list); its log has every change "
            "since")

    async def _event(self, message: str) -> None:
        """A line in this host's log and in the cluster event log (`clustermail log`)."""
        entry = eventlog.note(self.ctx.node, "mail_store", f"{self.ctx.vs}: {message}",
                              vs=self.ctx.vs, resource=self.ctx.resource)
        with contextlib.suppress(CoordError):  # the host's own log has it
            await eventlog.append(await self.ctx.store(), entry)

    # ------------------------------------------------------------------ internals

    def _mount(
        self, plan: Layout, homed: list[HomedMailbox], report: ProvisionReport,
        records: Mapping[tuple[str, str], DatabaseRecord],
    ) -> tuple[MailStore, list[Any]]:
        assert self.root is not None
        store = MailStore(self.root)
        ensure_layout(store, plan, homed, self.settings, report)
        recorded_lost = lost_by_records(store, records)
        infos, refused = store.mount_available(self.ctx.epoch, (DatabaseLostError,
                                                                DatabaseOpenError),
                                               skip=set(recorded_lost))
        refused.update(recorded_lost)
        for (sg, name), exc in refused.items():
            self.lost[(sg, name)] = str(_resource_error(self.ctx.resource, exc, self.ctx.vs))
        try:
            for db in store.databases():
                if not db.mounted:
                    continue
                changes = {k: v for k, v in self._enforced.items()
                           if getattr(db.settings, k) != v}
                if changes:
                    db.update_settings_sync(**changes)
        except BaseException:
            store.dismount()
            raise
        return store, infos

    async def _wanted(self) -> tuple[Layout, list[HomedMailbox]]:
        plan = await self.directory.storage_layout(self.ctx.vs)
        entries = await self.directory.list_mailboxes(server=self.ctx.vs)
        homed = [HomedMailbox(e.mailbox_id, e.storage_group, e.database, e.quota, e.address)
                 for e in entries]
        return plan, homed

    async def _provision(self, report: ProvisionReport | None = None) -> None:
        """One pass: plan and homed mailboxes in, disk brought in line, status out."""
        async with self._lock:
            cache = self.directory.cache
            revision = cache.revision if cache is not None else 0
            plan, homed = await self._wanted()
            names = {b.name for b in homed}
            self._applied = {k: v for k, v in self._applied.items() if k in names}
            # Mailboxes of a dismounted database wait for its mount (which applies them).
            todo = [b for b in homed if self._applied.get(b.name) != b
                    and not self._out_of_service(b.storage_group, b.database)]
            report = report or ProvisionReport()

            def apply() -> None:
                ensure_layout(self.store, plan, todo, self.settings, report)
                ensure_mailboxes(self.store, todo, report)

            await asyncio.to_thread(apply)
            await self._record_identities()  # a database the plan added is recorded
            for box in todo:
                if box.name not in report.failed:
                    self._applied[box.name] = box
            if report.created or report.updated or report.errors:
                log = self.ctx.log.warning if report.errors else self.ctx.log.info
                log(f"directory applied: {report.summary()}", revision=revision)
            await self.directory.publish_provisioned(self.ctx.vs, {
                "revision": revision, "node": self.ctx.node, "epoch": self.ctx.epoch,
                "mailboxes": len(names), "errors": report.errors[:10], "time": time.time(),
            })
            if report.failed:
                self._dirty.set()  # try those again after the pause in _follow

    async def _record_disconnected(self) -> None:
        """Records the mailboxes of our databases that no address points to and nothing
        records yet (removed before mailboxes had ids, or restored from a backup), so
        `user disconnected` lists them. Best effort: it is tried again at each online."""

        def held() -> list[DisconnectedEntry]:
            now = time.time()
            return [
                DisconnectedEntry(name, name if "@" in name else "", "", self.ctx.vs,
                                  info.storage_group, info.name, now)
                for info in self.store.list_databases()
                for name in self.store.database(info.storage_group, info.name).list_mailboxes()
            ]

        try:
            added = await self.directory.record_found(await asyncio.to_thread(held))
        except (CoordError, StoreError) as exc:
            self.ctx.log.warning(f"cannot record the disconnected mailboxes: {exc}")
            return
        if added:
            self.ctx.log.info(
                f"recorded {len(added)} mailbox(es) no address points to as disconnected: "
                + ", ".join(added[:10]) + (" …" if len(added) > 10 else ""))

    def _on_change(self, keys: frozenset[str]) -> None:
        mine = dm.STORAGE + self.ctx.vs
        if any(k in (RELOADED, mine) or k.startswith(dm.MAILBOXES) for k in keys):
            self._dirty.set()

    async def _follow(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._provision()
            except asyncio.CancelledError:
                raise
            except (FencedError, NotMountedError, MountRefusedError) as exc:
                self._fenced = str(exc)
                self.ctx.log.error(f"mail store stopped applying the directory: {exc}")
                return
            except Exception as exc:  # the store unreachable, a disk error: retry later
                self.ctx.log.warning(f"applying the directory failed, will retry: {exc}")
                self._dirty.set()
            if self._dirty.is_set():  # a failure asked for another pass: not at once
                await asyncio.sleep(RETRY_DELAY)

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            try:
                await self.purge_deleted_items()
            except StoreError as exc:  # fenced or a disk error: the checks report it
                self.ctx.log.warning(f"purging deleted items failed: {exc}")

    async def _stop(self) -> None:
        tasks = [t for t in (self._worker, self._follower, self._purger) if t is not None]
        self._worker = self._follower = self._purger = None
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if hasattr(self, "directory"):
            await self.directory.close()
        if hasattr(self, "store"):
            await asyncio.to_thread(self.store.dismount)
            if self._mounted:
                self.ctx.log.info("mail store dismounted")
        self._mounted = False
        self._applied.clear()
        lock, self._admin_lock = self._admin_lock, None
        if lock is not None:
            os.close(lock)  # after the dismount: an offline command may start now


def lost_by_records(
    store: MailStore, records: Mapping[tuple[str, str], DatabaseRecord]
) -> dict[tuple[str, str], DatabaseLostError]:
    """The databases the cluster records whose file is missing while the disk's own
    manifest does not know them either (an empty or replaced disk): mounting would create
    them empty, so they are refused. One the manifest knows is refused by its mount."""
    out: dict[tuple[str, str], DatabaseLostError] = {}
    for (sg, name), record in sorted(records.items()):
        try:
            db = store.database(sg, name)
            logs = store.storage_group(sg).logs
            if db.path.exists() or (logs is not None and logs.entry(name) is not None):
                continue
        except StoreError:  # not in the layout, or an unreadable manifest: mount says it
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.created))
        out[(sg, name)] = DatabaseLostError(
            sg, name, db.path, "is missing and so are the disk's records of it",
            f"database {record.id} (first mounted {when}"
            + (f" on {record.node}" if record.node else "") + ")", whole_store=True)
    return out


def _resource_error(name: str, exc: BaseException, vs: str) -> BaseException:
    """A clear ResourceError for what went wrong while coming online."""
    if isinstance(exc, ResourceError | asyncio.CancelledError) or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, admin_lock.StoreBusyError):
        return ResourceError(f"{name}: {exc}")  # a restore runs beside: retried later
    if isinstance(exc, DatabaseLostError):  # never re-created empty: restore or reset
        return ResourceError(f"{name}: {exc.describe(vs)}", permanent=True)
    if isinstance(exc, DatabaseOpenError) and exc.path.suffix == ".sqlite":
        where = f"{exc.path.parent.name}/{exc.path.stem}"
        return ResourceError(
            f"{name}: {exc}. Restore it: clustermail restore {vs} {where} --from <backup id>, "
            f"or replace it with a new empty database: clustermail store reset {vs} {where} "
            "--confirm", permanent=True)
    if isinstance(exc, MountRefusedError | LayoutError | DatabaseOpenError):
        return ResourceError(f"{name}: {exc}", permanent=True)  # a restart would not help
    if isinstance(exc, CoordError):
        return ResourceError(f"{name}: cannot read the directory: {exc}")
    if isinstance(exc, StoreError | OSError):
        return ResourceError(f"{name}: {exc}")
    return exc



# --------------------------------------------------------------------------- the type


def _subdirectory(value: PropertyValue) -> str | None:
    path = PurePosixPath(str(value))
    if not str(value) or path.is_absolute() or ".." in path.parts:
        return 'a subdirectory of the disk, such as "mail"'
    return None


def _positive_int(value: PropertyValue) -> str | None:
    return "an integer >= 1" if not isinstance(value, int) or value < 1 else None


def _bytes(value: PropertyValue) -> str | None:
    return "a number of bytes >= 0" if not isinstance(value, int) or value < 0 else None


def _days(value: PropertyValue) -> str | None:
    return "a number of days >= 0" if not isinstance(value, int | float) or value < 0 else None


def _rate(value: PropertyValue) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    return None if ok else "a rate in MB/s >= 0 (0: unpaced)"


def _schedule(value: PropertyValue) -> str | None:
    try:
        parse_schedule(str(value))
    except ScheduleError:
        return f"a schedule such as {EXAMPLES}"
    return None


def _non_empty(value: PropertyValue) -> str | None:
    return "a directory" if not str(value) else None


def _backup_rules(props: Mapping[str, PropertyValue]) -> list[tuple[str, str]]:
    if "backup_schedule" in props:
        return []
    return [(name, "needs backup_schedule (the full backups it builds on)")
            for name in ("backup_incremental_schedule", "backup_keep") if name in props]


MAIL_STORE_TYPE = ResourceType(
    "mail_store",
    MailStoreResource,
    {
        "path": PropertySpec(PropertyKind.STR, check=_subdirectory),
        "max_message_size": PropertySpec(PropertyKind.INT, check=_positive_int),
        "quota_warning": PropertySpec(PropertyKind.INT, check=_bytes),
        "quota_prohibit_send": PropertySpec(PropertyKind.INT, check=_bytes),
        "quota_prohibit_send_receive": PropertySpec(PropertyKind.INT, check=_bytes),
        "retention_days": PropertySpec(PropertyKind.FLOAT, check=_days),
        "backup_path": PropertySpec(PropertyKind.STR, check=_non_empty),
        "backup_schedule": PropertySpec(PropertyKind.STR, check=_schedule),
        "backup_incremental_schedule": PropertySpec(PropertyKind.STR, check=_schedule),
        "backup_keep": PropertySpec(PropertyKind.INT, check=_positive_int),
        "backup_max_rate": PropertySpec(PropertyKind.FLOAT, check=_rate),
    },
    check=_backup_rules,
)


def export_sizes(store: MailStore) -> None:
    """Each database's file and write-ahead log size, for the metrics (a few stats)."""
    from clustermail.mail import metrics

    for info in store.list_databases():
        size = 0
        for path in (info.path, info.path.with_name(info.path.name + "-wal")):
            with contextlib.suppress(OSError):
                size += path.stat().st_size
        metrics.DATABASE_BYTES.labels(info.storage_group, info.name).set(size)
        logs = store.storage_group(info.storage_group).logs
        if logs is not None:
            log_size = 0
            with contextlib.suppress(OSError):
                log_size = sum(f.stat().st_size for f in logs.log_dir(info.name).iterdir())
            metrics.LOG_BYTES.labels(info.storage_group, info.name).set(log_size)
