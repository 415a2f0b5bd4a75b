"""Delivery into this virtual server's mailbox databases: one transaction per database
for all of a message's recipients there (the store's group commit batches it further)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from clustermail.mail.backends import MailboxRef, MailStoreService
from clustermail.mail.store import MailboxDatabase, MessageTooLargeError, StoreError


async def database_of(mail_store: MailStoreService, entry: MailboxRef) -> MailboxDatabase:
    """The mailbox's database. The real mail_store resource also offers
    ``mailbox_database``, which first creates a mailbox the directory has just homed here
    (so mail to a brand-new user is not refused while its mailbox is being created)."""
    create_first = getattr(mail_store, "mailbox_database", None)
    if create_first is not None:
        db: MailboxDatabase = await create_first(entry)
        return db
    return mail_store.database_for(entry)


@dataclass(frozen=True, slots=True)
class LocalResult:
    address: str
    delivered: bool
    code: str  # enhanced status code
    reason: str

    @property
    def permanent(self) -> bool:
        return not self.delivered and self.code.startswith("5")


#: The store's refusal of a recipient whose mailbox its database does not hold.
NO_SUCH_MAILBOX = "5.1.1"


async def deliver_local(
    mail_store: MailStoreService, message: bytes, entries: Sequence[MailboxRef]
) -> list[LocalResult]:
    """Delivers ``message`` to each entry's mailbox; returns after every commit, one result
    per entry (in order). Store failures are temporary (4.3.0), a message over the
    database's size limit permanent (5.3.4).

    A mailbox the directory has just homed here may not exist yet: the store refuses it
    (5.1.1), and where the mail store can create such mailboxes (``mailbox_database``, see
    :func:`database_of`) they are created and delivered to again. Looking first, for every
    recipient of every message, cost a database read on a worker thread each time."""
    results: dict[str, tuple[bool, str, str]] = {}
    groups: dict[int, tuple[MailboxDatabase, list[str]]] = {}
    for entry in entries:
        try:
            db = mail_store.database_for(entry)
        except StoreError as exc:
            results[entry.mailbox_id] = (False, "4.3.0", str(exc))
            continue
        groups.setdefault(id(db), (db, []))[1].append(entry.mailbox_id)
    await _deliver_groups(message, groups, results)
    if getattr(mail_store, "mailbox_database", None) is not None:
        missing = [e for e in entries
                   if e.mailbox_id in results and results[e.mailbox_id][1] == NO_SUCH_MAILBOX]
        if missing:
            groups.clear()
            for entry in missing:
                try:
                    db = await database_of(mail_store, entry)  # creates the mailbox
                except StoreError as exc:
                    results[entry.mailbox_id] = (False, "4.3.0", str(exc))
                    continue
                groups.setdefault(id(db), (db, []))[1].append(entry.mailbox_id)
            await _deliver_groups(message, groups, results)
    return [
        LocalResult(e.address, *results.get(e.mailbox_id, (False, "4.3.0", "not delivered")))
        for e in entries
    ]


async def _deliver_groups(
    message: bytes,
    groups: dict[int, tuple[MailboxDatabase, list[str]]],
    results: dict[str, tuple[bool, str, str]],
) -> None:
    """One delivery per database (by mailbox id, the name of a mailbox's data in its
    database); each recipient's outcome into ``results``."""

    async def one(db: MailboxDatabase, mailboxes: list[str]) -> None:
        try:
            outcome = await db.deliver(message, mailboxes)
        except MessageTooLargeError as exc:
            results.update({mb: (False, "5.3.4", str(exc)) for mb in mailboxes})
            return
        except StoreError as exc:
            results.update({mb: (False, "4.3.0", f"mail store: {exc}") for mb in mailboxes})
            return
        for r in outcome.recipients:
            results[r.mailbox] = (r.delivered, r.code, r.reason)

    if len(groups) == 1:  # the usual case: no task per database (gather makes one each)
        await one(*next(iter(groups.values())))
    elif groups:
        await asyncio.gather(*(one(db, ids) for db, ids in groups.values()))
