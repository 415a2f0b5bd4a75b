"""Bring a mail store's disk in line with what the directory plans for it: the storage
groups and databases of the plan and of the homed mailboxes, and the homed mailboxes in
their databases, with their quota overrides. Blocking (run it in a thread); never deletes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from clustermail.mail.store.errors import (
    FencedError,
    MailboxExistsError,
    NotMountedError,
    StoreError,
)
from clustermail.mail.store.layout import Layout
from clustermail.mail.store.quota import QuotaLimits
from clustermail.mail.store.storage_group import MailStore
from clustermail.mail.store.types import DatabaseSettings


class HomedMailbox(NamedTuple):
    """A mailbox the directory homes on this virtual server: ``name`` is its id, the
    name of its data in the database; ``address`` is for messages."""

    name: str
    storage_group: str
    database: str
    quota: QuotaLimits | None
    address: str = ""

    def __str__(self) -> str:
        return self.name if self.address in ("", self.name) else f"{self.address} ({self.name})"


@dataclass
class ProvisionReport:
    created: list[str] = field(default_factory=list)  # "SG2", "SG2/DB3", "mailbox a@b"
    updated: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)  # mailboxes not (fully) provisioned

    def summary(self) -> str:
        parts = []
        if self.created:
            more = len(self.created) - 10
            parts.append(f"created {', '.join(self.created[:10])}"
                         + (f" and {more} more" if more > 0 else ""))
        if self.updated:
            parts.append(f"updated {len(self.updated)} quota override(s)")
        if self.errors:
            parts.append(f"{len(self.errors)} error(s): {'; '.join(self.errors[:3])}")
        return "; ".join(parts) or "nothing to do"


def ensure_layout(
    store: MailStore,
    plan: Layout,
    mailboxes: Iterable[HomedMailbox],
    settings: DatabaseSettings,
    report: ProvisionReport,
) -> None:
    """Adds the planned and the homed storage groups and databases that the disk lacks
    (mounted at once when the store is mounted)."""
    wanted = [(g.name, db) for g in plan.storage_groups for db in g.databases]
    wanted += [(b.storage_group, b.database) for b in mailboxes]
    for group, db in dict.fromkeys(wanted):
        try:
            if group not in store.layout.names():
                store.add_storage_group(group)
                report.created.append(group)
            if db not in store.layout.group(group).databases:
                store.add_database(group, db, settings=settings)
                report.created.append(f"{group}/{db}")
        except StoreError as exc:
            report.errors.append(f"cannot create {group}/{db}: {exc}")


def ensure_mailboxes(
    store: MailStore, mailboxes: Iterable[HomedMailbox], report: ProvisionReport
) -> None:
    """Creates missing mailboxes and applies quota overrides (mounted store)."""
    existing: dict[tuple[str, str], set[str]] = {}
    for box in mailboxes:
        where = (box.storage_group, box.database)
        try:
            db = store.database(*where)
            if where not in existing:
                existing[where] = set(db.list_mailboxes())
            if box.name not in existing[where]:
                try:
                    db.create_mailbox_sync(box.name, quota_limits=box.quota)
                    report.created.append(f"mailbox {box}")
                except MailboxExistsError:
                    pass  # created meanwhile (a `user move` copying into it)
                existing[where].add(box.name)
                continue
            current = db.quota(box.name)
            if (box.quota is None and current.custom) or (
                box.quota is not None and (not current.custom or current.limits != box.quota)
            ):
                db.set_quota_sync(box.name, box.quota)
                report.updated.append(box.name)
        except (FencedError, NotMountedError):
            raise  # not this mailbox's problem: the store itself must stop
        except StoreError as exc:
            report.errors.append(f"mailbox {box} in {'/'.join(where)}: {exc}")
            report.failed.add(box.name)
