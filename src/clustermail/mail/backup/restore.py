"""Restore a database from a backup chain and roll it forward with its live log.

The new file is built beside the old one (``<db>.sqlite.restoring``): the full set's image,
then every incremental set's records, then — unless told not to — the live log's records
to the last committed change (or to ``until``). It is checked (SQLite's integrity check,
the store's own checks, its change counter equal to where replay ended) before it replaces
anything; a file it replaces is kept beside it (``.replaced-<time>``), never deleted.

A restore that stops before the end of the live log (``--no-roll-forward``, ``--until``,
or a gap) takes the database back in time: the log's later records describe a history
that no longer happened, so that log is set aside and a new one starts at the restored
state. Restores into the recovery storage group (``<root>/_recovery/<group>/``) touch
neither the live database nor its log.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from clustermail.fsutil import fsync_dir
from clustermail.mail.backup import sets
from clustermail.mail.backup.create import Progress
from clustermail.mail.backup.sets import BackupError, BackupSet
from clustermail.mail.queue import store as qstore
from clustermail.mail.queue.finished import drop_finished, finished_dir, merge_live
from clustermail.mail.store import layout as layout_mod
from clustermail.mail.store.check import check_file as check_store_file
from clustermail.mail.store.errors import StoreError
from clustermail.mail.store.storage_group import MailStore
from clustermail.mail.store.translog import wal
from clustermail.mail.store.translog.errors import LogError
from clustermail.mail.store.translog.log import DatabaseLog, read_records
from clustermail.mail.store.translog.manifest import StorageGroupLogs, set_aside
from clustermail.mail.store.translog.records import Kind, Record, scan
from clustermail.mail.store.translog.replay import ReplayReport, replay

#: The recovery storage group's directory under the mail store root: not a valid storage
#: group name, so it is never in the layout, never mounted by the resource, never served.
RECOVERY_DIR = "_recovery"


@dataclass
class RestoreReport:
    storage_group: str
    database: str
    path: Path
    chain: list[str]
    image_txn: int
    txn: int  # the restored file's change number
    from_sets: int = 0  # records applied from incremental sets
    rolled_forward: int = 0  # records applied from the live log
    last_change: float | None = None
    stopped: str | None = None  # why roll-forward ended before the log did
    log_restarted: bool = False  # the live log was set aside (restored back in time)
    check: list[str] = field(default_factory=list)
    seconds: float = 0.0
    db_id: str = ""  # the restored database's id (hex)
    roll_forward_seconds: float = 0.0  # of ``seconds``: replaying the live log

    def lines(self) -> list[str]:
        out = [f"restored {self.storage_group}/{self.database} from {self.chain[-1]} "
               f"({len(self.chain)} set(s)) to change {self.txn} in {self.seconds:.2f} s",
               f"  image at change {self.image_txn}; {self.from_sets} record(s) from "
               f"incremental sets, {self.rolled_forward} from the live log"]
        if self.stopped:
            out.append(f"  roll-forward stopped: {self.stopped}")
        if self.log_restarted:
            out.append("  the database went back in time: its log was set aside and a new "
                       "one starts here; take a full backup")
        return out


def recovery_path(root: Path, storage_group: str, database: str) -> Path:
    return root / RECOVERY_DIR / storage_group / f"{database}.sqlite"


def _group_logs(root: Path, storage_group: str) -> StorageGroupLogs:
    layout = layout_mod.load(root)
    if layout is None:
        raise BackupError(f"{root}: no mail store here (no {layout_mod.LAYOUT_FILE})")
    try:
        sg = layout.group(storage_group)
    except StoreError as exc:
        raise BackupError(str(exc)) from None
    return StorageGroupLogs(layout_mod.log_path(root, sg), sg.name)


def set_records(backup: BackupSet, member: str) -> Iterator[Record]:
    """The records stored in an incremental set's member (all of them must be whole)."""
    tmp = backup.path / f".{Path(member).name}.records"
    try:
        with sets.open_member(backup, member) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            end = 0
            for located in scan(fd, 0, payloads=True):
                end = located.end
                yield located.record
            if end != size:
                raise BackupError(f"backup {backup.id}: {member} has a damaged record at "
                                  f"offset {end}")
        finally:
            os.close(fd)
    finally:
        tmp.unlink(missing_ok=True)


def build(
    chain: list[BackupSet], storage_group: str, database: str, target: Path,
    progress: Progress | None = None,
) -> tuple[int, ReplayReport]:
    """Write the chain's state of one database to ``target``: (image txn, replay of the
    incremental sets)."""
    full = chain[0].database(storage_group, database)
    done = 0
    with sets.open_member(chain[0], full.file) as src, open(target, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(f"{storage_group}/{database}", done, full.size)
        dst.flush()
        os.fsync(dst.fileno())
    db_id = bytes.fromhex(full.id)
    report = ReplayReport(full.txn, full.txn)
    for backup in chain[1:]:
        copy = backup.database(storage_group, database)
        if copy.id != full.id:
            raise BackupError(f"backup {backup.id} holds another database {storage_group}/"
                              f"{database} than {chain[0].id}")
        step = replay(target, set_records(backup, copy.file), start_txn=report.txn,
                      db_id=db_id)
        if step.txn != copy.txn:
            raise BackupError(f"backup {backup.id}: {storage_group}/{database} replays to "
                              f"change {step.txn}, its manifest says {copy.txn}"
                              + (f" ({step.stopped})" if step.stopped else ""))
        report.applied += step.applied
        report.txn, report.time = step.txn, step.time or report.time
    return full.txn, report


def check_file(path: Path, expected_txn: int | None = None) -> list[str]:
    """Problems of a restored file (empty list: it is sound)."""
    try:
        report = check_store_file(path, repair=False, now=time.time())
    except StoreError as exc:
        return [str(exc)]
    problems = list(report.problems)
    if expected_txn is not None:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'log_txn'").fetchone()
        finally:
            conn.close()
        txn = 0 if row is None else int(row[0])
        if txn != expected_txn:
            problems.append(f"its change counter is {txn}, replay ended at {expected_txn}")
    for suffix in ("-wal", "-shm"):  # the check's connection leaves them; nothing in them
        Path(str(path) + suffix).unlink(missing_ok=True)
    return problems


def restore_database(
    root: Path,
    backups: Path,
    storage_group: str,
    database: str,
    *,
    from_id: str,
    roll_forward: bool = True,
    until: float | None = None,
    recovery: bool = False,
    store: MailStore | None = None,
    progress: Progress | None = None,
) -> RestoreReport:
    """Restore ``storage_group/database`` of the mail store at ``root`` from backup
    ``from_id`` (and its chain). The database must not be mounted anywhere (with ``store``,
    that is checked for this process). With ``recovery`` the copy goes to the recovery
    storage group instead and the live database and its log are left alone."""
    started = time.perf_counter()
    if store is not None and not recovery:
        try:
            if store.database(storage_group, database).mounted:
                raise BackupError(f"{storage_group}/{database} is mounted: dismount it first")
        except StoreError as exc:
            if isinstance(exc, BackupError):
                raise
    logs = _group_logs(root, storage_group)  # BackupError without that storage group
    layout = layout_mod.load(root)
    if layout is None or database not in layout.group(storage_group).databases:
        raise BackupError(f"storage group {storage_group} has no database {database}")
    with sets.locked(backups):
        chain = sets.chain_of(backups, from_id)
        copy = chain[-1].database(storage_group, database)
    target = (recovery_path(root, storage_group, database) if recovery
              else layout_mod.database_path(root, storage_group, database))
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    building = target.with_name(target.name + ".restoring")
    for leftover in (building, Path(wal.wal_path(building)), Path(wal.shm_path(building))):
        leftover.unlink(missing_ok=True)
    try:
        image_txn, from_sets = build(chain, storage_group, database, building, progress)
        db_id = bytes.fromhex(copy.id)
        report = RestoreReport(storage_group, database, target, [s.id for s in chain],
                               image_txn, from_sets.txn or 0, from_sets=from_sets.applied,
                               last_change=from_sets.time, db_id=copy.id)
        log_dir = logs.log_dir(database)
        live_end: int | None = None
        foreign = False
        if log_dir.exists():
            dblog = DatabaseLog(log_dir, db_id)
            try:
                with dblog:
                    live_end = dblog.tail.txn
            except LogError:  # another database's log (a reset one): nothing to roll with
                foreign = True
            finally:
                dblog.close()
        if roll_forward and live_end is not None:
            rolling = time.perf_counter()
            step = replay(building, read_records(log_dir, db_id, report.txn),
                          start_txn=report.txn, db_id=db_id, until=until)
            report.roll_forward_seconds = time.perf_counter() - rolling
            report.rolled_forward, report.stopped = step.applied, step.stopped
            report.txn, report.last_change = step.txn or 0, step.time or report.last_change
        elif roll_forward:
            report.stopped = "there is no live log to roll forward with"
        report.check = check_file(building, report.txn)
        if report.check:
            raise BackupError(f"the restored {storage_group}/{database} does not check clean: "
                              + "; ".join(report.check[:5]))
        if not recovery:
            behind = live_end is not None and report.txn < live_end
            _put_in_place(building, target)
            if behind or live_end is None:
                _restart_log(logs, database, db_id, report.txn,
                             set_aside_old=behind or foreign)
                report.log_restarted = behind
            logs.record(database, db_id, report.txn)
        else:
            _put_in_place(building, target)
    except BaseException:
        building.unlink(missing_ok=True)
        raise
    report.seconds = time.perf_counter() - started
    return report


def _put_in_place(building: Path, target: Path) -> None:
    if target.exists():
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        os.rename(target, target.with_name(f"{target.name}.replaced-{stamp}"))
    for suffix in ("-wal", "-shm"):  # the old file's: they must never meet the new one
        old = Path(str(target) + suffix)
        if old.exists():
            old.unlink()
    os.rename(building, target)
    fsync_dir(target.parent)


def _restart_log(logs: StorageGroupLogs, database: str, db_id: bytes, txn: int, *,
                 set_aside_old: bool) -> None:
    """A new log that starts at the restored state (the old one set aside, if any)."""
    log_dir = logs.log_dir(database)
    if set_aside_old and log_dir.exists():
        set_aside(log_dir, "superseded")
    if any(p.suffix == ".log" for p in (log_dir.iterdir() if log_dir.exists() else [])):
        return  # a log that starts at or before this state goes on
    with DatabaseLog(log_dir, db_id) as dblog:
        dblog.append(Record(Kind.GAP, db_id, txn, txn, time.time()))
    dblog.close()


@dataclass
class ServerRestore:
    """What ``restore --all`` did."""

    databases: list[RestoreReport]
    queue_restored: bool = False
    #: Recipients of the restored queue finished after the backup (dropped, not redone).
    queue_dropped: int = 0
    #: Messages of the queue file it replaced that the backup lacked (kept, not lost).
    queue_kept: int = 0

    def lines(self) -> list[str]:
        out = [line for r in self.databases for line in r.lines()]
        if self.queue_restored:
            out.append(f"restored the relay queue as it was in the backup, less "
                       f"{self.queue_dropped} recipient(s) it finished since (the record "
                       f"beside the logs), plus {self.queue_kept} message(s) of the queue it "
                       "replaced that the backup lacked")
        return out


def restore_all(
    root: Path, backups: Path, *, from_id: str, roll_forward: bool = True,
    until: float | None = None, queue: Path | None = None, progress: Progress | None = None,
) -> ServerRestore:
    """Every database of the set (a virtual server rebuilt onto an empty disk: the layout
    is recreated from the set), then the relay queue as it was in the set, less the
    recipients the queue's record of finished ones (beside the logs, if it survived) says
    were delivered or relayed since: nothing is delivered twice
    (:mod:`clustermail.mail.queue.finished`)."""
    with sets.locked(backups):
        chain = sets.chain_of(backups, from_id)
    layout = layout_mod.load(root) or layout_mod.Layout()
    for copy in chain[-1].databases:
        if copy.storage_group not in layout.names():
            layout = layout.with_storage_group(copy.storage_group)
        if copy.name not in layout.group(copy.storage_group).databases:
            layout = layout.with_database(copy.storage_group, copy.name)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    layout_mod.save(root, layout)
    done = ServerRestore([
        restore_database(root, backups, c.storage_group, c.name, from_id=from_id,
                         roll_forward=roll_forward, until=until, progress=progress)
        for c in chain[-1].databases
    ])
    if queue is not None and chain[-1].queue is not None:
        queue.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = queue.with_name(queue.name + ".restoring")
        with sets.open_member(chain[-1], chain[-1].queue["file"]) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        conn = qstore.connect(tmp, create=False)
        try:
            done.queue_dropped = drop_finished(conn, finished_dir(root))
            done.queue_kept = merge_live(conn, queue)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        for suffix in ("-wal", "-shm"):
            Path(str(tmp) + suffix).unlink(missing_ok=True)
        _put_in_place(tmp, queue)
        done.queue_restored = True
    return done


__all__ = ["RECOVERY_DIR", "RestoreReport", "ServerRestore", "recovery_path", "restore_all",
           "restore_database"]
