"""Backup, restore and recovery of a virtual server's mail store.

* :func:`create_backup` — online full or incremental backup set (``create``);
* :func:`list_chains`, :func:`verify`, :func:`prune` — managing sets (``manage``);
* :func:`restore_database`, :func:`restore_all` — restore with roll-forward (``restore``);
* :func:`merge_mailbox`, :func:`drop_recovery` — the recovery storage group (``recovery``);
* :func:`reset_database` — an explicit new empty database (``reset``).

Run on an administrator's request by a virtual server's owner: ``requests`` (the records in
the coordination store), ``worker`` (the owner's side, with the backup ``schedule``) and
``operations`` (what each request does, also run by the CLI beside an offline server).

The transaction logs these rely on are the store's (:mod:`clustermail.mail.store.translog`).
"""

from __future__ import annotations

from clustermail.mail.backup.create import Progress, create_backup
from clustermail.mail.backup.manage import (
    Chain,
    PruneReport,
    VerifyReport,
    list_chains,
    prune,
    verify,
)
from clustermail.mail.backup.recovery import MergeReport, drop_recovery, merge_mailbox
from clustermail.mail.backup.reset import ResetReport, reset_database
from clustermail.mail.backup.restore import (
    RECOVERY_DIR,
    RestoreReport,
    ServerRestore,
    recovery_path,
    restore_all,
    restore_database,
)
from clustermail.mail.backup.sets import BackupError, BackupSet, DatabaseCopy

__all__ = [
    "RECOVERY_DIR",
    "BackupError",
    "BackupSet",
    "Chain",
    "DatabaseCopy",
    "MergeReport",
    "Progress",
    "PruneReport",
    "ResetReport",
    "RestoreReport",
    "ServerRestore",
    "VerifyReport",
    "create_backup",
    "drop_recovery",
    "list_chains",
    "merge_mailbox",
    "prune",
    "recovery_path",
    "reset_database",
    "restore_all",
    "restore_database",
    "verify",
]
