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
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path, PurePosixPath
from typing import Any

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
from clustermail.mail.directory import Directory, MailboxEntry
from clustermail.mail.directory import model as dm
from clustermail.mail.directory.cache import RELOADED
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
        if not await asyncio.to_thread(db.has_mailbox, entry.address):
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(db.create_mailbox_sync, entry.address,
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
        await asyncio.to_thread(check_epoch, disk.path, self.ctx.epoch)
        try:
            self.directory = Directory(await self.ctx.store())
            cache = await self.directory.start_cache(on_error=self.ctx.log.warning)
            cache.add_listener(self._on_change)
            plan, homed = await self._wanted()
            started = time.perf_counter()
            report = ProvisionReport()
            self.store, infos = await asyncio.to_thread(self._mount, plan, homed, report)
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
            await self._provision(report)
        except BaseException as exc:
            await self._stop()
            translated = _resource_error(self.ctx.resource, exc, self.ctx.vs)
            if translated is exc:
                raise
            raise translated from exc
        loop = asyncio.get_running_loop()
        self._follower = loop.create_task(self._follow(), name=f"{self.ctx.resource} follower")
        self._purger = loop.create_task(self._purge_loop(), name=f"{self.ctx.resource} purger")

    async def offline(self) -> None:
        await self._stop()

    async def quick_check(self) -> bool:
        if self._fenced is not None:
            return False
        ok = self._mounted and all(
            db.mounted and db.failed is None for db in self.store.databases()
        )
        if ok:
            export_sizes(self.store)
        return ok

    async def thorough_check(self) -> bool:
        if not await self.quick_check():
            return False

        def check() -> None:
            assert self._disk is not None
            check_epoch(self._disk, self.ctx.epoch)
            for db in self.store.databases():
                db.list_mailboxes()  # a read query: the file is readable and sane

        try:
            await asyncio.to_thread(check)
        except (ResourceError, StoreError, OSError) as exc:
            self.ctx.log.error(f"mail store check failed: {exc}")
            return False
        return True

    # ------------------------------------------------------------------ internals

    def _mount(
        self, plan: Layout, homed: list[HomedMailbox], report: ProvisionReport
    ) -> tuple[MailStore, list[Any]]:
        assert self.root is not None
        store = MailStore(self.root)
        ensure_layout(store, plan, homed, self.settings, report)
        infos = store.mount(self.ctx.epoch)
        try:
            for db in store.databases():
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
        homed = [HomedMailbox(e.address, e.storage_group, e.database, e.quota) for e in entries]
        return plan, homed

    async def _provision(self, report: ProvisionReport | None = None) -> None:
        """One pass: plan and homed mailboxes in, disk brought in line, status out."""
        async with self._lock:
            cache = self.directory.cache
            revision = cache.revision if cache is not None else 0
            plan, homed = await self._wanted()
            names = {b.name for b in homed}
            self._applied = {k: v for k, v in self._applied.items() if k in names}
            todo = [b for b in homed if self._applied.get(b.name) != b]
            report = report or ProvisionReport()

            def apply() -> None:
                ensure_layout(self.store, plan, todo, self.settings, report)
                ensure_mailboxes(self.store, todo, report)

            await asyncio.to_thread(apply)
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
        tasks = [t for t in (self._follower, self._purger) if t is not None]
        self._follower = self._purger = None
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


def _resource_error(name: str, exc: BaseException, vs: str) -> BaseException:
    """A clear ResourceError for what went wrong while coming online."""
    if isinstance(exc, ResourceError | asyncio.CancelledError) or not isinstance(exc, Exception):
        return exc
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
    },
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
