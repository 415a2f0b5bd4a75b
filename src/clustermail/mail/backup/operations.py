"""The store operations an administrator asks for, run on the machine holding the disk.

One function, :func:`run_operation`, runs a request's operation (``backup``, ``restore``,
``reset``, ``drop_recovery``, ``recover``) against a :class:`Site`: the owner's mail_store
resource while the virtual server serves (it dismounts the one database a restore or reset
needs, and mounts it again), or the admin command itself for a virtual server that is
offline (nothing is mounted; it holds the disk's admin lock). Parameters and results are
plain JSON, so the same request runs in either place and its result travels through the
coordination store.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from clustermail.mail.backup.create import Progress, create_backup
from clustermail.mail.backup.manage import list_chains, prune
from clustermail.mail.backup.recovery import drop_recovery, merge_mailbox
from clustermail.mail.backup.reset import reset_database
from clustermail.mail.backup.restore import (
    RestoreReport,
    recovery_path,
    restore_all,
    restore_database,
)
from clustermail.mail.backup.sets import BackupError, BackupSet
from clustermail.mail.store.database import MailboxDatabase
from clustermail.mail.store.storage_group import MailStore

#: A result: the JSON document and the text for a person.
Result = tuple[dict[str, Any], str]


class Site(Protocol):
    """Where an operation runs: a virtual server's mail store on this machine."""

    vs: str
    root: Path  # the mail store: <disk>/<path>
    queue: Path  # the relay queue's file
    backups: Path  # the default backup directory
    epoch: int | None

    @property
    def serving(self) -> bool:
        """True inside the owner's running resource (databases are mounted here)."""

    @property
    def store(self) -> MailStore | None:
        """The mounted mail store (the owner's), if any."""

    async def take_offline(self, storage_group: str, database: str) -> None:
        """Dismount one database (the others keep serving)."""

    async def bring_online(self, storage_group: str, database: str) -> None:
        """Mount it again."""

    async def record_identity(self, storage_group: str, database: str,
                              db_id: str | None) -> None:
        """The cluster's record of a database (:mod:`clustermail.mail.directory.databases`):
        the id a restore put in place, or None after a reset (its next mount creates it new
        and records it)."""

    def live_database(
        self, storage_group: str, database: str
    ) -> AbstractAsyncContextManager[MailboxDatabase]:
        """The mounted live database, for the length of a merge."""


class CreateBackup(Protocol):
    """Makes a backup set (:func:`create_backup`'s arguments); returns it and the PID of
    the process that made it."""

    async def __call__(
        self, root: Path, backups: Path, *, virtual_server: str, incremental: bool,
        storage_groups: Sequence[str] | None, queue: Path | None, epoch: int | None,
        progress: Progress | None,
    ) -> tuple[BackupSet, int]: ...


async def in_thread(
    root: Path, backups: Path, *, virtual_server: str, incremental: bool,
    storage_groups: Sequence[str] | None, queue: Path | None, epoch: int | None,
    progress: Progress | None,
) -> tuple[BackupSet, int]:
    """A backup in a thread of this process (a command beside an offline virtual server;
    the owner runs its backups in a child process, :mod:`.process`)."""
    done = await asyncio.to_thread(
        create_backup, root, backups, virtual_server=virtual_server, incremental=incremental,
        storage_groups=storage_groups, queue=queue, epoch=epoch, progress=progress)
    return done, os.getpid()


def split_database(value: str) -> tuple[str, str]:
    sg, sep, db = value.partition("/")
    if not sep or not sg or not db or "/" in db:
        raise BackupError(f"expected SG/DB such as SG1/DB1, got {value!r}")
    return sg, db


def _backups(params: Mapping[str, Any], site: Site) -> Path:
    to = params.get("to")
    return Path(str(to)) if to else site.backups


async def run_operation(op: str, params: Mapping[str, Any], site: Site,
                        progress: Progress | None = None,
                        create: CreateBackup = in_thread) -> Result:
    """Runs one operation; BackupError (a StoreError) with a clear text when it cannot.
    ``create`` makes a backup's set (the owner's: in a child process)."""
    if op == "backup":
        return await _backup(params, site, progress, create)
    if op == "restore":
        return await _restore(params, site, progress)
    if op == "reset":
        return await _reset(params, site)
    if op == "drop_recovery":
        sg = params.get("storage_group")
        gone = await asyncio.to_thread(drop_recovery, site.root, str(sg) if sg else None)
        return ({"vs": site.vs, "dropped": [str(p) for p in gone]},
                f"dropped {len(gone)} recovery database(s) of {site.vs}")
    if op == "recover":
        return await _recover(params, site)
    raise BackupError(f"unknown store operation {op!r}")


async def _backup(params: Mapping[str, Any], site: Site, progress: Progress | None,
                  create: CreateBackup) -> Result:
    backups = _backups(params, site)
    incremental = bool(params.get("incremental"))
    if incremental and params.get("full_if_none"):  # a schedule's first incremental
        chains = await asyncio.to_thread(list_chains, backups, site.vs)
        incremental = bool(chains)
    groups = params.get("storage_groups")
    done, pid = await create(
        site.root, backups, virtual_server=site.vs, incremental=incremental,
        storage_groups=[str(g) for g in groups] if groups else None, queue=site.queue,
        epoch=site.epoch, progress=progress)
    doc: dict[str, Any] = {
        "id": done.id, "kind": done.kind, "vs": site.vs, "path": str(done.path),
        "process": pid,
        "bytes": sum(f["size"] for f in done.files.values()),
        "seconds": round(done.finished - done.created, 3),
        "databases": {f"{d.storage_group}/{d.name}": d.txn for d in done.databases},
    }
    keep = params.get("keep")
    if keep:
        pruned = await asyncio.to_thread(prune, backups, int(keep), site.vs)
        doc["pruned"] = pruned.deleted
    return doc, done.id


def restore_doc(reports: list[RestoreReport]) -> dict[str, Any]:
    return {"restored": [{"database": f"{r.storage_group}/{r.database}", "path": str(r.path),
                          "chain": r.chain, "txn": r.txn, "rolled_forward": r.rolled_forward,
                          "from_sets": r.from_sets, "stopped": r.stopped,
                          "log_restarted": r.log_restarted, "seconds": round(r.seconds, 3)}
                         for r in reports]}


async def _restore(params: Mapping[str, Any], site: Site, progress: Progress | None) -> Result:
    backups = _backups(params, site)
    from_id = str(params.get("from") or "")
    if not from_id:
        raise BackupError("restore needs the backup id (--from ID; see `backup list`)")
    roll_forward = bool(params.get("roll_forward", True))
    until = params.get("until")
    until_time = None if until is None else float(until)
    if params.get("all"):
        if site.serving:
            raise BackupError(
                f"restore --all rebuilds every database and the relay queue of {site.vs}: "
                f"take it offline first (clustermail vs offline {site.vs}), run the restore "
                f"on the machine with its disk, then clustermail vs online {site.vs}")
        server = await asyncio.to_thread(
            restore_all, site.root, backups, from_id=from_id, roll_forward=roll_forward,
            until=until_time, queue=site.queue, progress=progress)
        for r in server.databases:
            await site.record_identity(r.storage_group, r.database, r.db_id)
        doc = restore_doc(server.databases)
        doc["queue_restored"] = server.queue_restored
        doc["queue_dropped"] = server.queue_dropped
        doc["queue_kept"] = server.queue_kept
        return doc, "\n".join(server.lines())
    sg, db = split_database(str(params.get("database") or ""))
    recovery = bool(params.get("recovery"))

    def restore() -> RestoreReport:
        return restore_database(site.root, backups, sg, db, from_id=from_id,
                                roll_forward=roll_forward, until=until_time,
                                recovery=recovery, store=site.store, progress=progress)

    if recovery:
        report = await asyncio.to_thread(restore)
        lines = [*report.lines(), f"  in the recovery storage group ({report.path}); merge a "
                 "mailbox back with: clustermail user recover ADDRESS --from-recovery"]
        return restore_doc([report]), "\n".join(lines)
    report = await _offline_while(
        site, sg, db, restore, lambda r: site.record_identity(sg, db, r.db_id))
    return restore_doc([report]), "\n".join(report.lines())


async def _offline_while(site: Site, sg: str, db: str, work: Any,
                         then: Callable[[Any], Awaitable[None]] | None = None) -> Any:
    """Runs ``work`` (blocking) with one database dismounted, ``then`` with its result,
    and mounts the database again."""
    await site.take_offline(sg, db)
    try:
        done = await asyncio.to_thread(work)
        if then is not None:
            await then(done)
    except BaseException:
        try:
            await site.bring_online(sg, db)
        except Exception as exc:  # the first error is the one to report; add this one
            raise BackupError(f"{sg}/{db} stays dismounted: {exc}") from exc
        raise
    try:
        await site.bring_online(sg, db)
    except Exception as exc:
        raise BackupError(f"{sg}/{db} was restored but does not mount: {exc}") from exc
    return done


async def _reset(params: Mapping[str, Any], site: Site) -> Result:
    sg, db = split_database(str(params.get("database") or ""))
    confirm = bool(params.get("confirm"))
    if not confirm:  # refused before anything is dismounted
        await asyncio.to_thread(reset_database, site.root, sg, db, confirm=False)
    report = await _offline_while(
        site, sg, db, lambda: reset_database(site.root, sg, db, confirm=True,
                                             store=site.store),
        lambda _: site.record_identity(sg, db, None))
    when = "now" if site.serving else "at its next mount"
    return ({"vs": site.vs, "database": f"{sg}/{db}", "kept": [str(p) for p in report.kept]},
            f"{sg}/{db} of {site.vs} is a new empty database {when}; kept beside it: "
            + (", ".join(p.name for p in report.kept) or "nothing"))


async def _recover(params: Mapping[str, Any], site: Site) -> Result:
    address = str(params.get("address") or "")
    # The mailbox's identity in its database (its id; the address for older mailboxes).
    mailbox = str(params.get("mailbox") or address)
    sg, db = str(params.get("storage_group") or ""), str(params.get("database") or "")
    folder = params.get("folder")
    since = params.get("since")
    source = recovery_path(site.root, sg, db)
    if not source.exists():
        raise BackupError(
            f"no recovery database for {sg}/{db} of {site.vs} ({source}): restore one first "
            f"with clustermail restore {site.vs} {sg}/{db} --from ID --recovery")
    async with site.live_database(sg, db) as live:
        report = await merge_mailbox(live, source, mailbox,
                                     folder=None if folder is None else str(folder),
                                     since=None if since is None else float(since))
    return ({"address": address, "copied": report.copied, "skipped": report.skipped,
             "folders_created": report.folders_created, "per_folder": report.per_folder},
            f"recovered {report.copied} message(s) into {address} from the recovery "
            f"storage group ({report.skipped} already there)")


__all__ = ["CreateBackup", "Result", "Site", "in_thread", "restore_doc", "run_operation",
           "split_database"]
