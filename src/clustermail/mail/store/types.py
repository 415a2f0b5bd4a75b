"""Plain result types of the mail store API (what SMTP, IMAP and POP3 are written against)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from clustermail.mail.store.quota import QuotaLimits, QuotaState

DEFAULT_MAX_MESSAGE_BYTES = 35 * 1024 * 1024  # Exchange Online's default; documented in decisions


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """Per-database settings, stored in the database itself so they move with the disk."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    retention_days: float = 0.0  # deleted-item retention window; 0 deletes at expunge
    quota: QuotaLimits = field(default_factory=QuotaLimits)
    quota_full_permanent: bool = True  # 5.2.2 like Exchange; False gives 4.2.2 (retry later)

    def __post_init__(self) -> None:
        if not isinstance(self.max_message_bytes, int) or self.max_message_bytes <= 0:
            raise ValueError(
                f"max_message_bytes must be a positive integer, got {self.max_message_bytes!r}"
            )
        if not isinstance(self.retention_days, int | float) or self.retention_days < 0:
            raise ValueError(f"retention_days must be >= 0, got {self.retention_days!r}")


@dataclass(frozen=True, slots=True)
class MountInfo:
    path: Path
    epoch: int
    seconds: float  # how long the mount took (SQLite's WAL recovery included)
    unclean: bool  # a WAL file was left behind: the last owner did not dismount cleanly


@dataclass(frozen=True, slots=True)
class FolderInfo:
    name: str
    special_use: str | None
    subscribed: bool
    uidvalidity: int


@dataclass(frozen=True, slots=True)
class FolderStatus:
    messages: int
    recent: int
    unseen: int
    uidnext: int
    uidvalidity: int
    highestmodseq: int


@dataclass(frozen=True, slots=True)
class FlagChange:
    uid: int
    flags: int
    keywords: str | None
    modseq: int


@dataclass(frozen=True, slots=True)
class StoreResult:
    """Outcome of set_flags: the changed messages (with the new modseq) and, for CONDSTORE
    UNCHANGEDSINCE, the UIDs that were modified after it and so were left alone."""

    modseq: int
    changed: list[FlagChange]
    failed: list[int]


@dataclass(frozen=True, slots=True)
class AppendResult:
    uidvalidity: int
    uid: int
    modseq: int


@dataclass(frozen=True, slots=True)
class CopyResult:
    """UIDPLUS COPYUID data: source UIDs map pairwise to destination UIDs. ``expunged`` is
    set by move (the source UIDs that left the source folder)."""

    uidvalidity: int
    source_uids: list[int]
    dest_uids: list[int]
    expunged: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FolderChanges:
    """What changed in a folder after a modseq: for IDLE, NOOP and QRESYNC."""

    uidvalidity: int
    highestmodseq: int
    uidnext: int
    changed: list[FlagChange]  # new messages and flag changes, in UID order
    expunged: list[int]


class DeliveryStatus(enum.Enum):
    DELIVERED = "delivered"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class RecipientResult:
    mailbox: str
    status: DeliveryStatus
    code: str  # RFC 3463 enhanced status code: 2.0.0, 4.2.2, 5.2.2, 5.1.1
    reason: str
    folder: str | None = None
    uidvalidity: int | None = None
    uid: int | None = None

    @property
    def delivered(self) -> bool:
        return self.status is DeliveryStatus.DELIVERED

    @property
    def permanent(self) -> bool:
        return self.code.startswith("5")


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """Returned only after the transaction holding every delivered copy was committed."""

    size: int
    recipients: list[RecipientResult]

    @property
    def delivered(self) -> list[RecipientResult]:
        return [r for r in self.recipients if r.delivered]


@dataclass(frozen=True, slots=True)
class QuotaReport:
    used_bytes: int
    used_messages: int
    limits: QuotaLimits
    state: QuotaState
    custom: bool  # the mailbox overrides the database default


@dataclass(frozen=True, slots=True)
class RecoveredMessage:
    folder: str
    uidvalidity: int
    uid: int


def uidl(uidvalidity: int, uid: int) -> str:
    """POP3 UIDL of an INBOX message: stable across failover, never reused."""
    return f"{uidvalidity}.{uid}"
