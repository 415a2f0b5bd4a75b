"""``store reset``: replace a database with a new empty one (Exchange's "dial tone").

The only way a storage group gets an empty database where it recorded one: the old file
(if any) and its log are kept beside, renamed, and the storage group forgets the database,
so its next mount creates it new (new id, new log starting with the empty file). Mail
delivered afterwards goes to the new database; the old data can still be restored into the
recovery storage group and merged back.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from clustermail.fsutil import fsync_dir
from clustermail.mail.backup.restore import _group_logs
from clustermail.mail.backup.sets import BackupError
from clustermail.mail.store import layout as layout_mod
from clustermail.mail.store.storage_group import MailStore
from clustermail.mail.store.translog.manifest import set_aside


@dataclass
class ResetReport:
    storage_group: str
    database: str
    kept: list[Path] = field(default_factory=list)  # the old file and log, renamed


def reset_database(
    root: Path, storage_group: str, database: str, *, confirm: bool,
    store: MailStore | None = None,
) -> ResetReport:
    """Set the database and its log aside so that the next mount creates it empty. It must
    not be mounted (with ``store``, checked for this process)."""
    if not confirm:
        raise BackupError(
            f"resetting {storage_group}/{database} replaces it with an EMPTY database; "
            "repeat with --confirm to do it")
    logs = _group_logs(root, storage_group)
    layout = layout_mod.load(root)
    if layout is None or database not in layout.group(storage_group).databases:
        raise BackupError(f"storage group {storage_group} has no database {database}")
    if store is not None and store.database(storage_group, database).mounted:
        raise BackupError(f"{storage_group}/{database} is mounted: dismount it first")
    report = ResetReport(storage_group, database)
    path = layout_mod.database_path(root, storage_group, database)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for suffix in ("", "-wal", "-shm"):
        old = Path(str(path) + suffix)
        if old.exists():
            kept = old.with_name(f"{path.name}.replaced-{stamp}{suffix}")
            os.rename(old, kept)
            report.kept.append(kept)
    if path.parent.exists():
        fsync_dir(path.parent)
    if logs.log_dir(database).exists():
        report.kept.append(set_aside(logs.log_dir(database), "replaced"))
    logs.forget(database)
    return report
