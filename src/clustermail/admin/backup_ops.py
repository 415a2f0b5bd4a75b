"""Backup, restore and recovery as the administrator asks for them: one async function per
operation, for the CLI and the REST API alike. Each returns ``(JSON document, text)`` and
raises :class:`AdminError` with one clear line.

Where an operation on a virtual server's mail store runs:

* the virtual server has an owner → a store request (:mod:`clustermail.mail.backup.requests`)
  that the owner's mail_store resource claims and runs while the virtual server serves
  (a restore dismounts only its database); this function waits on it, reporting progress;
* nobody owns it (offline, failed) → here, on this machine, which must hold its disk, under
  the mail store's admin lock (so the virtual server cannot mount it meanwhile).

Backup sets are plain directories: ``list``, ``verify`` and ``prune`` read them from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clustermail.admin import intents
from clustermail.admin.errors import AdminError
from clustermail.admin.mail_local import Location, locate, mounted
from clustermail.cluster import keys as cluster_keys
from clustermail.cluster.hostspec import substitute
from clustermail.cluster.records import OwnerRecord, RecordError
from clustermail.cluster.view import ClusterView
from clustermail.coord import CoordError, Store
from clustermail.mail import backup
from clustermail.mail.backup import requests as rq
from clustermail.mail.backup.operations import run_operation, split_database
from clustermail.mail.queue.store import queue_path
from clustermail.mail.store import StoreError, admin_lock
from clustermail.mail.store.database import MailboxDatabase
from clustermail.mail.store.storage_group import MailStore

Result = tuple[dict[str, Any], str]
#: progress(what, bytes done, bytes in all).
Progress = Callable[[str, int, int], None]
#: note(text): a line about what is happening (waiting for the owner…).
Note = Callable[[str], None]

#: How long the owner has to pick a request up before the command gives up.
CLAIM_TIMEOUT = 30.0


def _quiet(*_: Any) -> None:
    pass


# --------------------------------------------------------------------------- where


def backup_dir(view: ClusterView, vs: str, data_dir: Path) -> Path:
    """The virtual server's backup directory as seen from this machine: its mail_store's
    ``backup_path`` (``{data}`` = ``data_dir``), by default ``<data>/backups``."""
    server = intents.applied_config(view).virtual_server(vs)
    stores = [r for r in server.resources if r.type == "mail_store"] if server else []
    raw = stores[0].properties.get("backup_path") if stores else None
    if not raw:
        return (data_dir / "backups").resolve()
    values = {"data": str(data_dir.resolve()), "vs": vs, "python": sys.executable}
    return Path(substitute(str(raw), values)).resolve()


def backup_dirs(view: ClusterView | None, data_dir: Path, vs: str | None = None) -> list[Path]:
    """Every backup directory of the cluster's virtual servers (or of ``vs``)."""
    if view is None or view.config is None:
        return [(data_dir / "backups").resolve()]
    names = [vs] if vs else [n for n in view.vs_names() if _has_store(view, n)]
    dirs: list[Path] = []
    for name in names:
        path = backup_dir(view, name, data_dir)
        if path not in dirs:
            dirs.append(path)
    return dirs or [(data_dir / "backups").resolve()]


def log_bytes(root: Path, storage_group: str, database: str) -> int | None:
    """The size of a database's transaction log on this machine (None: not here)."""
    from clustermail.mail.store import layout as layout_mod
    from clustermail.mail.store.translog.manifest import StorageGroupLogs

    try:
        layout = layout_mod.load(root)
        if layout is None:
            return None
        group = layout.group(storage_group)
        directory = StorageGroupLogs(layout_mod.log_path(root, group), group.name).log_dir(
            database)
        return sum(p.stat().st_size for p in directory.glob("*.log"))
    except (StoreError, OSError):
        return None


def _has_store(view: ClusterView, vs: str) -> bool:
    server = intents.applied_config(view).virtual_server(vs)
    return server is not None and any(r.type == "mail_store" for r in server.resources)


# --------------------------------------------------------------------------- dispatch


@dataclass
class LocalSite:
    """An offline virtual server's mail store, worked on from this command."""

    vs: str
    root: Path
    queue: Path
    backups: Path
    epoch: int | None
    location: Location
    #: The coordination store, for the cluster's records of the databases.
    coord: Store | None = None

    @property
    def serving(self) -> bool:
        return False

    @property
    def store(self) -> MailStore | None:
        return None

    async def take_offline(self, storage_group: str, database: str) -> None:
        pass  # nothing is mounted: the admin lock keeps the virtual server out

    async def bring_online(self, storage_group: str, database: str) -> None:
        pass  # it mounts when the virtual server comes online

    async def record_identity(self, storage_group: str, database: str,
                              db_id: str | None) -> None:
        from clustermail.mail.directory import Directory
        from clustermail.mail.directory.databases import DatabaseRecord

        if self.coord is None:
            return  # its next mount records what it finds
        directory = Directory(self.coord)
        try:
            if db_id is None:
                await directory.forget_database(self.vs, storage_group, database)
            else:
                await directory.record_database(DatabaseRecord(
                    self.vs, storage_group, database, db_id, time.time(),
                    f"clustermail restore on {socket.gethostname()}", self.epoch))
        finally:
            await directory.close()

    @contextlib.asynccontextmanager
    async def live_database(self, storage_group: str,
                            database: str) -> AsyncIterator[MailboxDatabase]:
        with mounted(self.location, storage_group, database) as db:
            yield db


async def store_operation(
    store: Store, data_dir: Path, vs: str, op: str, params: dict[str, Any], *,
    progress: Progress = _quiet, note: Note = _quiet, timeout: float | None = None,
    claim_timeout: float = CLAIM_TIMEOUT,
) -> Result:
    """Runs ``op`` on ``vs``'s mail store: through its owner, or here if it has none."""
    view = await intents.current_view(store)
    loc = locate(view, vs, data_dir)
    owner = view.owner.get(vs)
    what = op.replace("_", "-")
    if owner is not None:
        if op == "restore" and params.get("all"):
            raise AdminError(
                f"restore --all rebuilds every database and the relay queue of {vs}, which "
                f"runs on {owner.node}: take it offline first (clustermail vs offline {vs}), "
                f"run the restore on the machine with its disk, then clustermail vs online "
                f"{vs}")
        note(f"asking {owner.node}, the owner of {vs}, to run the {what}")
        try:
            return await run_on_owner(store, vs, op, params, progress=progress, note=note,
                                      timeout=timeout, claim_timeout=claim_timeout)
        except NoOwnerError:
            note(f"{vs} stopped running on {owner.node} before it picked the {what} up")
            view = await intents.current_view(store)
            loc = locate(view, vs, data_dir)
    return await run_here(view, loc, data_dir, op, params, progress=progress, note=note,
                          store=store)


class StillRunningError(AdminError):
    """The operation outlived the caller's timeout; it goes on where it runs."""


class NoOwnerError(AdminError):
    """The virtual server lost its owner before the request was claimed (it was
    withdrawn): run it here instead."""


async def run_here(view: ClusterView, loc: Location, data_dir: Path, op: str,
                   params: dict[str, Any], *, progress: Progress = _quiet,
                   note: Note = _quiet, store: Store | None = None) -> Result:
    """``op`` on an offline virtual server's disk, from this machine (``store``: the
    coordination store, where a restore or reset updates the cluster's record of the
    database)."""
    vs = loc.vs
    building = op == "restore" and params.get("all")
    if not building and not (loc.root / "storage.json").is_file():
        raise AdminError(
            f"no mail store of {vs} at {loc.root}: give the --data directory of the machine "
            f"with its disk" + ("" if op != "restore" else
                                f", or rebuild it with clustermail restore {vs} --all "
                                "--from ID"))
    note(f"{vs} is not online anywhere: running the {op.replace('_', '-')} here, on its "
         f"disk {loc.disk}")
    site = LocalSite(vs, loc.root, queue_path(loc.disk), backup_dir(view, vs, data_dir),
                     loc.epoch, loc, store)
    holder = f"clustermail {op} on {socket.gethostname()}"
    try:
        with admin_lock.exclusive(loc.root, holder):
            return await run_operation(op, params, site, progress)
    except admin_lock.StoreBusyError as exc:
        raise AdminError(f"{vs}: {exc}; run this while it is online (its owner runs it), "
                         f"or take it offline (clustermail vs offline {vs})") from None
    except (StoreError, OSError) as exc:
        raise AdminError(_describe(exc)) from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")
    return str(exc)


async def run_on_owner(
    store: Store, vs: str, op: str, params: dict[str, Any], *,
    progress: Progress = _quiet, note: Note = _quiet, timeout: float | None = None,
    claim_timeout: float = CLAIM_TIMEOUT,
) -> Result:
    """Writes the request and waits for its owner to run it (watching its record)."""
    request = rq.new_request(vs, op, params, claim_timeout=claim_timeout)
    revision = await rq.submit(store, request)
    changed: asyncio.Queue[None] = asyncio.Queue()

    async def watch() -> None:
        with contextlib.suppress(CoordError):
            async for _ in store.watch(request.key, revision + 1):
                changed.put_nowait(None)

    watcher = asyncio.create_task(watch())
    started = time.monotonic()
    shown: rq.RequestProgress | None = None
    claimed_by: str | None = None
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await changed.get()
            found = await rq.read(store, vs, request.id)
            if found is None:
                raise AdminError(f"the {op} request {request.id} of {vs} was deleted")
            current, revision = found
            if current.progress is not None and current.progress != shown:
                shown = current.progress
                progress(shown.what, shown.done, shown.total)
            if current.state == rq.DONE:
                return dict(current.result or {}), current.text
            if current.state == rq.FAILED:
                raise AdminError(f"{op} of {vs} failed"
                                 + (f" on {current.node}" if current.node else "")
                                 + f": {current.error}")
            if current.state == rq.PENDING and await store.get(
                    cluster_keys.OWNER + vs) is None:
                if await rq.withdraw(store, current, revision):
                    raise NoOwnerError(f"{vs} has no owner")
                continue
            if current.state == rq.PENDING and time.time() > current.claim_by:
                if await rq.withdraw(store, current, revision):
                    raise AdminError(
                        f"the owner of {vs} did not pick the {op} up within "
                        f"{claim_timeout:.0f} s (is its mail store online? see clustermail "
                        f"status); if it cannot come online, take it offline (clustermail "
                        f"vs offline {vs}) and run this again on the machine with its disk")
                continue
            if current.state == rq.RUNNING:
                if claimed_by is None:
                    claimed_by = current.node
                    note(f"{current.node} runs it (request {request.id})")
                await _check_owner(store, current, revision)
            if timeout is not None and time.monotonic() - started > timeout:
                raise StillRunningError(
                    f"the {op} of {vs} still runs on {current.node or 'its owner'} after "
                    f"{timeout:.0f} s; it goes on there (request {request.id})")
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _check_owner(store: Store, request: rq.StoreRequest, revision: int) -> None:
    """Fails a running request whose claimant no longer owns the virtual server."""
    key = cluster_keys.OWNER + request.vs
    kv = await store.get(key)
    try:
        owner = None if kv is None else OwnerRecord.from_store(key, kv.value)
    except RecordError:
        owner = None
    if owner is not None and (owner.node, owner.epoch) == (request.node, request.epoch):
        return
    error = (f"{request.node} stopped owning {request.vs} while it ran the {request.op} "
             "(a failover): it did not finish; run it again")
    if await rq.fail_if(store, request, revision, error):
        raise AdminError(f"{request.op} of {request.vs}: {error}")


# --------------------------------------------------------------------------- operations


async def backup_create(
    store: Store, data_dir: Path, vs: str, *, storage_groups: list[str] | None = None,
    to: Path | None = None, incremental: bool = False, **run: Any,
) -> Result:
    params: dict[str, Any] = {"incremental": incremental}
    if storage_groups:
        params["storage_groups"] = storage_groups
    if to is not None:
        params["to"] = str(to.resolve())
    return await store_operation(store, data_dir, vs, "backup", params, **run)


async def restore(
    store: Store, data_dir: Path, vs: str, *, from_id: str, database: str | None = None,
    all_databases: bool = False, roll_forward: bool = True, until: float | None = None,
    recovery: bool = False, to: Path | None = None, **run: Any,
) -> Result:
    if all_databases == (database is not None):
        raise AdminError("give either SG/DB or --all")
    if all_databases and recovery:
        raise AdminError("--recovery restores one database: give SG/DB")
    if recovery and until is None:
        # The recovery group is for what was deleted since the backup: rolled forward with
        # the live log it would lose it again. --until rolls forward to a chosen moment.
        roll_forward = False
    if database is not None:
        try:
            split_database(database)
        except backup.BackupError as exc:
            raise AdminError(str(exc)) from None
    params: dict[str, Any] = {"from": from_id, "database": database, "all": all_databases,
                              "roll_forward": roll_forward, "until": until,
                              "recovery": recovery}
    if to is not None:
        params["to"] = str(to.resolve())
    return await store_operation(store, data_dir, vs, "restore", params, **run)


async def store_reset(store: Store, data_dir: Path, vs: str, database: str, *,
                      confirm: bool, **run: Any) -> Result:
    if not confirm:
        raise AdminError(f"store reset replaces {vs} {database} with an EMPTY database (its "
                         "file and log are kept beside it); repeat with --confirm to do it")
    try:
        split_database(database)
    except backup.BackupError as exc:
        raise AdminError(str(exc)) from None
    return await store_operation(store, data_dir, vs, "reset",
                                 {"database": database, "confirm": True}, **run)


async def drop_recovery(store: Store, data_dir: Path, vs: str,
                        storage_group: str | None = None, **run: Any) -> Result:
    return await store_operation(store, data_dir, vs, "drop_recovery",
                                 {"storage_group": storage_group}, **run)


async def recover_mailbox(
    store: Store, data_dir: Path, address: str, *, folder: str | None = None,
    since: float | None = None, **run: Any,
) -> Result:
    """Merges ``address``'s messages from its database's recovery copy into the live one."""
    from clustermail.mail.directory import Directory

    directory = Directory(store)
    try:
        entry = await directory.mailbox(address)
    finally:
        await directory.close()
    if entry is None:
        raise AdminError(f"no mailbox {address!r}")
    params = {"address": entry.address, "mailbox": entry.mailbox_id,
              "storage_group": entry.storage_group,
              "database": entry.database, "folder": folder, "since": since}
    return await store_operation(store, data_dir, entry.server, "recover", params, **run)


def _in_dirs(dirs: list[Path], fn: Callable[[Path], Any], set_id: str) -> Any:
    """``fn`` on the first directory holding ``set_id``."""
    for d in dirs:
        if (d / set_id).is_dir():
            return fn(d)
    raise AdminError(f"no backup {set_id!r} in {', '.join(map(str, dirs))} (see backup list)")


async def backup_list(dirs: list[Path], vs: str | None = None) -> Result:
    from clustermail.admin import cluster_backup

    chains: list[dict[str, Any]] = []
    lines: list[str] = []
    for d in dirs:
        try:
            found = await asyncio.to_thread(backup.list_chains, d, vs)
        except backup.BackupError as exc:
            raise AdminError(str(exc)) from None
        for chain in found:
            doc = chain.to_json()
            doc["directory"] = str(d)
            chains.append(doc)
            for s in chain.sets:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.created))
                size = sum(f["size"] for f in s.files.values())
                indent = "" if s.kind == "full" else "  └ "
                lines.append(f"{indent}{s.id}  {s.kind}  {when} UTC  {size / 1e6:,.1f} MB")
    clusters = [] if vs else [c for d in dirs for c in cluster_backup.list_sets(d)]
    for c in clusters:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(c.created))
        lines.append(f"{c.id}  cluster  {when} UTC  {c.keys} keys")
    where = ", ".join(str(d) for d in dirs)
    text = "\n".join(lines) if lines else f"no backups in {where}"
    return ({"directories": [str(d) for d in dirs], "chains": chains,
             "cluster": [c.to_json() for c in clusters]}, text)


async def backup_verify(dirs: list[Path], set_id: str) -> Result:
    from clustermail.admin import cluster_backup

    def run(d: Path) -> Result:
        if cluster_backup.is_cluster_set(d / set_id):
            return cluster_backup.verify(d, set_id)
        report = backup.verify(d, set_id)
        text = "\n".join([f"backup {set_id}: {'ok' if report.ok else 'DAMAGED'}"]
                         + [f"  {line}" for line in report.checked]
                         + [f"  problem: {p}" for p in report.problems])
        return ({"id": set_id, "ok": report.ok, "chain": report.chain,
                 "problems": report.problems, "checked": report.checked}, text)

    return await asyncio.to_thread(_in_dirs, dirs, run, set_id)


async def backup_prune(dirs: list[Path], keep: int, vs: str | None = None) -> Result:
    from clustermail.admin import cluster_backup

    if keep < 1:
        raise AdminError(f"--keep must be at least 1, got {keep}")
    kept: list[str] = []
    deleted: list[str] = []
    for d in dirs:
        try:
            report = await asyncio.to_thread(backup.prune, d, keep, vs)
        except backup.BackupError as exc:
            raise AdminError(str(exc)) from None
        kept += report.kept
        deleted += report.deleted
        if vs is None:
            k, gone = await asyncio.to_thread(cluster_backup.prune, d, keep)
            kept += k
            deleted += gone
    return ({"kept": kept, "deleted": deleted},
            f"kept {len(kept)} set(s), deleted {len(deleted)}"
            + (": " + ", ".join(deleted) if deleted else ""))


__all__ = [
    "CLAIM_TIMEOUT", "LocalSite", "Result", "StillRunningError", "backup_create",
    "backup_dir", "backup_dirs", "backup_list", "backup_prune", "backup_verify",
    "drop_recovery", "recover_mailbox", "restore", "run_here", "run_on_owner",
    "store_operation", "store_reset",
]
