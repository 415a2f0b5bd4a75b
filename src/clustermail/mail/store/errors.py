"""Typed errors of the mail store. The protocol edges translate them once (SMTP enhanced
status codes, IMAP response codes, one CLI line); none of them carries a traceback to users."""

from __future__ import annotations

from pathlib import Path


class StoreError(Exception):
    """Base of every error raised by the mail store."""


class DatabaseOpenError(StoreError):
    """A database file is missing, unreadable, corrupt, not SQLite or not a mailbox database."""

    def __init__(self, path: Path | str, detail: str) -> None:
        super().__init__(f"cannot open mailbox database {path}: {detail}")
        self.path = Path(path)
        self.detail = detail


class NotMountedError(StoreError):
    """The database is dismounted (or was never mounted) in this process."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(f"mailbox database {path} is not mounted")
        self.path = Path(path)


class MountRefusedError(StoreError):
    """A mount with a fencing epoch older than the one recorded in the database."""

    def __init__(self, path: Path | str, epoch: int, recorded: int) -> None:
        super().__init__(
            f"mount of {path} with fencing epoch {epoch} refused: "
            f"the database was already mounted with epoch {recorded}"
        )
        self.path = Path(path)
        self.epoch = epoch
        self.recorded = recorded


class FencedError(StoreError):
    """A newer owner mounted the database: this (stale) owner must not write. Nothing of the
    refused transaction was written (safety rule 1)."""

    def __init__(self, path: Path | str, epoch: int, current: int) -> None:
        super().__init__(
            f"write to {path} refused: fenced — this process mounted it with epoch {epoch}, "
            f"but epoch {current} has mounted it since"
        )
        self.path = Path(path)
        self.epoch = epoch
        self.current = current


class CommitError(StoreError):
    """SQLite failed to commit a transaction (disk full, I/O error); nothing was written."""


class LayoutError(StoreError):
    """The disk's layout file is unreadable, or a layout change is invalid."""


class LimitExceededError(LayoutError):
    """Adding a storage group or database would exceed the configured limit."""


class MailboxNotFoundError(StoreError):
    def __init__(self, mailbox: str) -> None:
        super().__init__(f"no mailbox {mailbox!r} in this database")
        self.mailbox = mailbox


class MailboxExistsError(StoreError):
    def __init__(self, mailbox: str) -> None:
        super().__init__(f"mailbox {mailbox!r} already exists")
        self.mailbox = mailbox


class MailboxChangedError(StoreError):
    """A conditional change refused because the mailbox received or lost messages (or
    folders) since the caller looked: nothing was changed."""

    def __init__(self, mailbox: str, detail: str) -> None:
        super().__init__(f"mailbox {mailbox!r} changed meanwhile: {detail}")
        self.mailbox = mailbox


class FolderNotFoundError(StoreError):
    def __init__(self, mailbox: str, folder: str) -> None:
        super().__init__(f"mailbox {mailbox!r} has no folder {folder!r}")
        self.mailbox = mailbox
        self.folder = folder


class FolderExistsError(StoreError):
    def __init__(self, mailbox: str, folder: str) -> None:
        super().__init__(f"mailbox {mailbox!r} already has a folder {folder!r}")
        self.mailbox = mailbox
        self.folder = folder


class InvalidFolderNameError(StoreError):
    """A folder name that is empty, has an empty level, control characters or is too long,
    or an operation not allowed on that folder (deleting INBOX)."""


class MessageNotFoundError(StoreError):
    def __init__(self, folder: str, uid: int) -> None:
        super().__init__(f"folder {folder!r} has no message with UID {uid}")
        self.folder = folder
        self.uid = uid


class MessageTooLargeError(StoreError):
    """A message above the database's maximum message size (SMTP 552 5.3.4)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"message of {size} bytes exceeds the maximum message size of {limit} bytes"
        )
        self.size = size
        self.limit = limit


class QuotaExceededError(StoreError):
    """An APPEND/COPY/MOVE that would take a mailbox over its prohibit-receive quota
    (IMAP [OVERQUOTA])."""

    def __init__(self, mailbox: str, used: int, incoming: int, limit: int) -> None:
        super().__init__(
            f"mailbox {mailbox!r} is over quota: {used} + {incoming} bytes exceeds {limit} bytes"
        )
        self.mailbox = mailbox
        self.used = used
        self.incoming = incoming
        self.limit = limit


class DatabaseCorruptError(DatabaseOpenError):
    """SQLite found the file damaged while reading or writing it."""


def from_sqlite(path: Path | str, exc: Exception) -> StoreError:
    """A clear store error for a SQLite exception raised while using an open database."""
    text = str(exc)
    if "malformed" in text or "not a database" in text:
        return DatabaseCorruptError(path, f"corrupt ({text}); run check with repair or restore")
    if "locked" in text or "busy" in text:
        return CommitError(f"{path}: database is locked by another process ({text})")
    return CommitError(f"{path}: {text}")
