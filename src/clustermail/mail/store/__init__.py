"""The mail store: storage groups of mailbox databases on a virtual server's disk.

Layer 3 (mail), pure storage: no sockets, no coordination store. Entry points:

* :class:`MailStore` — the store of one disk: layout, storage groups, mount/dismount with
  the virtual server's fencing epoch;
* :class:`MailboxDatabase` — one SQLite database: delivery (group commit), folders,
  messages, flags, change log, quotas, retention;
* :func:`check` — consistency check and repair of a database;
* :mod:`.mime` — ENVELOPE/BODYSTRUCTURE analysis cached at delivery (IMAP FETCH reads it).
"""

from __future__ import annotations

import time
from pathlib import Path

from clustermail.mail.store import flags
from clustermail.mail.store.check import CheckReport, check_file
from clustermail.mail.store.database import MailboxDatabase
from clustermail.mail.store.errors import (
    CommitError,
    DatabaseCorruptError,
    DatabaseOpenError,
    FencedError,
    FolderExistsError,
    FolderNotFoundError,
    InvalidFolderNameError,
    LayoutError,
    LimitExceededError,
    MailboxChangedError,
    MailboxExistsError,
    MailboxNotFoundError,
    MessageNotFoundError,
    MessageTooLargeError,
    MountRefusedError,
    NotMountedError,
    QuotaExceededError,
    StoreError,
)
from clustermail.mail.store.flags import InvalidFlagError
from clustermail.mail.store.index import FolderListing, MessageSummary
from clustermail.mail.store.layout import Layout, Limits
from clustermail.mail.store.quota import Decision, QuotaLimits, QuotaState
from clustermail.mail.store.storage_group import DatabaseInfo, MailStore, StorageGroup
from clustermail.mail.store.types import (
    AppendResult,
    CopyResult,
    DatabaseSettings,
    DeliveryResult,
    DeliveryStatus,
    FlagChange,
    FolderChanges,
    FolderInfo,
    FolderStatus,
    MountInfo,
    QuotaReport,
    RecipientResult,
    RecoveredMessage,
    StoreResult,
    uidl,
)


def check(database: MailboxDatabase | Path | str, repair: bool = False) -> CheckReport:
    """Check a database (mounted: through it, its repairs fenced like any write; otherwise the
    file offline). ``repair`` fixes what can be fixed; the report says what it changed."""
    if isinstance(database, MailboxDatabase):
        if database.mounted:
            return database.check_sync(repair=repair)
        database = database.path
    return check_file(Path(database), repair=repair, now=time.time())


__all__ = [
    "AppendResult",
    "CheckReport",
    "CommitError",
    "CopyResult",
    "DatabaseCorruptError",
    "DatabaseInfo",
    "DatabaseOpenError",
    "DatabaseSettings",
    "Decision",
    "DeliveryResult",
    "DeliveryStatus",
    "FencedError",
    "FlagChange",
    "FolderChanges",
    "FolderExistsError",
    "FolderInfo",
    "FolderListing",
    "FolderNotFoundError",
    "FolderStatus",
    "InvalidFlagError",
    "InvalidFolderNameError",
    "Layout",
    "LayoutError",
    "LimitExceededError",
    "Limits",
    "MailStore",
    "MailboxChangedError",
    "MailboxDatabase",
    "MailboxExistsError",
    "MailboxNotFoundError",
    "MessageNotFoundError",
    "MessageSummary",
    "MessageTooLargeError",
    "MountInfo",
    "MountRefusedError",
    "NotMountedError",
    "QuotaExceededError",
    "QuotaLimits",
    "QuotaReport",
    "QuotaState",
    "RecipientResult",
    "RecoveredMessage",
    "StorageGroup",
    "StoreError",
    "StoreResult",
    "check",
    "flags",
    "uidl",
]
