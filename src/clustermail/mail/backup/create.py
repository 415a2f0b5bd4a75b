"""Online backups of a virtual server's mail store: full sets (every database image and
the relay queue) and incremental sets (the log records since the previous set).

Runs in any process on the machine holding the disk — the resource host of the owner or a
command beside it — while deliveries go on: copies come from read transactions, and a
logged database's copy starts under its log lock, so its position is exact. After a full
set is in place, the logs are truncated up to it (never further).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from clustermail.mail.backup import sets, snapshot
from clustermail.mail.backup.sets import BackupError, BackupSet, DatabaseCopy
from clustermail.mail.store import layout as layout_mod
from clustermail.mail.store.errors import StoreError
from clustermail.mail.store.translog.log import DatabaseLog, read_records
from clustermail.mail.store.translog.manifest import StorageGroupLogs
from clustermail.mail.store.translog.records import Kind

#: progress(what, bytes done, bytes in all): called as data is copied.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class _Target:
    storage_group: str
    name: str
    path: Path
    logs: StorageGroupLogs


def _targets(root: Path, storage_groups: Sequence[str] | None) -> list[_Target]:
    layout = layout_mod.load(root)
    if layout is None:
        raise BackupError(f"{root}: no mail store here (no {layout_mod.LAYOUT_FILE})")
    wanted = list(storage_groups) if storage_groups else layout.names()
    out = []
    for name in wanted:
        try:
            sg = layout.group(name)
        except StoreError as exc:
            raise BackupError(str(exc)) from None
        logs = StorageGroupLogs(layout_mod.log_path(root, sg), sg.name)
        out += [_Target(sg.name, db, layout_mod.database_path(root, sg.name, db), logs)
                for db in sg.databases]
    return out


def _db_log(target: _Target) -> DatabaseLog | None:
    entry = target.logs.entry(target.name)
    if entry is None:
        return None  # never mounted with logs: copied without a position
    return target.logs.open_log(target.name, bytes.fromhex(entry.id))


class _Meter:
    """Counts the bytes copied, reports progress, and paces the copy to ``max_rate``."""

    def __init__(self, total: int, progress: Progress | None, max_rate: float | None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.what = ""
        self.progress = progress
        self.max_rate = max_rate
        self.started = time.monotonic()

    def __call__(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.what, min(self.done, self.total), self.total)
        if self.max_rate:
            ahead = self.done / self.max_rate - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)


def create_backup(
    root: Path,
    backups: Path,
    *,
    virtual_server: str,
    incremental: bool = False,
    storage_groups: Sequence[str] | None = None,
    queue: Path | None = None,
    epoch: int | None = None,
    progress: Progress | None = None,
    truncate_logs: bool = True,
    level: int = sets.LEVEL,
    max_rate: float | None = None,
) -> BackupSet:
    """Back up the mail store at ``root`` (``<disk>/<path>``) into ``backups``; returns the
    completed set. ``queue`` is the relay queue file to include (every set has it whole).
    ``max_rate`` (bytes/s) paces the copy, leaving the disk and CPU to deliveries."""
    with sets.locked(backups):
        targets = _targets(root, storage_groups)
        now = time.time()
        kind = "incremental" if incremental else "full"
        parent = _parent(backups, virtual_server, targets) if incremental else None
        backup = BackupSet(
            id=sets.new_id(backups, virtual_server, kind, now), kind=kind,
            virtual_server=virtual_server, created=now,
            parent=parent.id if parent else None,
            chain=parent.chain if parent else "", epoch=epoch,
        )
        if not backup.chain:
            backup.chain = backup.id
        writer = sets.SetWriter(backups, backup, level)
        try:
            sizes = [t.path.stat().st_size for t in targets if t.path.exists()]
            meter = _Meter(sum(sizes) + (_size(queue) if queue else 0), progress, max_rate)
            logs: list[tuple[DatabaseLog, int]] = []
            for t in targets:
                dblog = _db_log(t)
                try:
                    if parent is None:
                        copy = _full(writer, t, dblog, meter)
                    else:
                        if dblog is None:
                            raise BackupError(
                                f"{t.storage_group}/{t.name} has no transaction log yet: "
                                "take a full backup")
                        copy = _incremental(writer, t, dblog, parent, meter)
                    backup.databases.append(copy)
                    if dblog is not None:
                        logs.append((dblog, copy.txn))
                        dblog.close()
                except BaseException:
                    if dblog is not None:
                        dblog.close()
                    raise
            if queue is not None and queue.exists():
                meter.what = "queue"
                with writer.member("queue/queue.sqlite.zst") as out:
                    snap = snapshot.take(queue, out, progress=meter, modseq=False)
                backup.queue = {"file": "queue/queue.sqlite.zst", "size": snap.size,
                                "sha256_image": snap.sha256}
            done = writer.commit()
        except BaseException:
            writer.abort()
            raise
        if parent is None and truncate_logs:
            for dblog, txn in logs:
                with dblog:
                    dblog.truncate(txn)
                dblog.close()
        return done


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _full(writer: sets.SetWriter, t: _Target, dblog: DatabaseLog | None,
          meter: _Meter) -> DatabaseCopy:
    if not t.path.exists():
        raise BackupError(
            f"{t.storage_group}/{t.name}: {t.path} is missing: restore it before backing up")
    meter.what = f"{t.storage_group}/{t.name}"
    name = f"{t.storage_group}/{t.name}.sqlite.zst"
    with writer.member(name) as out:
        snap = snapshot.take(t.path, out, dblog=dblog, progress=meter)
    return DatabaseCopy(
        t.storage_group, t.name, (snap.db_id or b"").hex(), snap.txn, None, name, snap.size,
        snap.highest_modseq, image_sha256=snap.sha256,
    )


def _parent(backups: Path, virtual_server: str, targets: list[_Target]) -> BackupSet:
    mine = [s for s in sets.all_sets(backups) if s.virtual_server == virtual_server]
    if not mine:
        raise BackupError(
            f"no earlier backup of {virtual_server} in {backups}: take a full backup first")
    parent = mine[-1]
    sets.chain_of(backups, parent.id)  # the chain it extends must be whole
    for t in targets:
        parent.database(t.storage_group, t.name)  # BackupError: take a full backup
    return parent


def _incremental(writer: sets.SetWriter, t: _Target, dblog: DatabaseLog, parent: BackupSet,
                 meter: _Meter) -> DatabaseCopy:
    before = parent.database(t.storage_group, t.name)
    if before.id != dblog.db_id.hex():
        raise BackupError(
            f"{t.storage_group}/{t.name} is another database than in backup {parent.id} "
            "(it was reset or replaced): take a full backup")
    with dblog:
        end = dblog.tail.txn
    if end is None or end < before.txn:
        raise BackupError(
            f"{t.storage_group}/{t.name}: its log ends before backup {parent.id}: take a full "
            "backup")
    meter.what = f"{t.storage_group}/{t.name} (log)"
    name = f"{t.storage_group}/{t.name}.log.zst"
    count, size, last, txn = 0, 0, None, before.txn
    with writer.member(name) as out:
        for record in read_records(dblog.directory, dblog.db_id, before.txn):
            if record.txn > end:
                break
            if count == 0 and record.prev_txn > before.txn:
                raise BackupError(
                    f"{t.storage_group}/{t.name}: the log lacks changes {before.txn + 1}.."
                    f"{record.prev_txn} (truncated): take a full backup")
            if record.kind is Kind.GAP and record.txn > txn:
                raise BackupError(
                    f"{t.storage_group}/{t.name}: the log has a gap after change {txn} "
                    "(changes lost before they were logged): take a full backup")
            data = record.encode()
            out.write(data)
            meter(len(data))
            count, size, last, txn = count + 1, size + len(data), record.time, record.txn
    if txn != end:
        raise BackupError(
            f"{t.storage_group}/{t.name}: the log ends at change {txn}, expected {end}")
    return DatabaseCopy(t.storage_group, t.name, before.id, txn, before.txn, name, size,
                        None, count, last)


__all__ = ["Progress", "create_backup"]
