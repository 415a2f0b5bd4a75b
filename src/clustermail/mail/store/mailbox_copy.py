"""Copy one mailbox from a database to another (the data side of a mailbox move).

Folders (with their subscriptions), then every message with its flags, keywords and
internal date, appended through the target database's own write path (group commit:
a batch of appends shares one fsync). Each pass copies only what arrived since the
previous one, folder by folder (tracked by the source folder's UIDVALIDITY, so a
rename during the move is followed), and records each folder's UIDNEXT as it saw it:
:meth:`CopyState.expected_uidnext` is then what ``delete_mailbox_sync`` compares, so
the source is deleted only if nothing arrived after the last pass.

UIDs and UIDVALIDITY are the target database's own (a new database assigns new ones,
so IMAP clients resynchronise the moved mailbox once). \\Recent is not carried over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field

from clustermail.mail.store import flags
from clustermail.mail.store.database import MailboxDatabase
from clustermail.mail.store.types import AppendResult

BATCH_MESSAGES = 200
BATCH_BYTES = 64 * 1024 * 1024


@dataclass
class CopyState:
    #: source UIDVALIDITY -> (folder name, first source UID not copied yet)
    folders: dict[int, tuple[str, int]] = field(default_factory=dict)
    messages: int = 0
    bytes: int = 0

    def expected_uidnext(self) -> dict[str, int]:
        return {name: uidnext for name, uidnext in self.folders.values()}


async def copy_mailbox(
    source: MailboxDatabase, target: MailboxDatabase, mailbox: str, state: CopyState
) -> int:
    """One pass; returns how many messages it copied. The target mailbox must exist."""
    copied = 0
    have = {f.name for f in target.list_folders(mailbox)}
    present = source.list_folders(mailbox)
    live = {f.uidvalidity for f in present}
    for gone in [v for v in state.folders if v not in live]:
        del state.folders[gone]  # deleted at the source meanwhile: its copy stays
    for folder in present:
        known = state.folders.get(folder.uidvalidity)
        if known is not None and known[0] != folder.name and known[0] in have:
            await target.rename_folder(mailbox, known[0], folder.name)  # renamed meanwhile
            have = {f.name for f in target.list_folders(mailbox)}
        if folder.name not in have:
            await target.create_folder(mailbox, folder.name)
            have.add(folder.name)
        if known is None and folder.subscribed:
            await target.subscribe(mailbox, folder.name, True)
        upto = source.status(mailbox, folder.name).uidnext  # copy below this, then record it
        start = known[1] if known is not None else 1
        listing = source.list_messages(mailbox, folder.name)
        pending: list[Awaitable[AppendResult]] = []
        size = 0
        for message in listing:
            if not start <= message.uid < upto:
                continue
            raw = source.fetch_raw(mailbox, folder.name, message.uid)
            names = flags.flag_names(message.flags & ~flags.RECENT,
                                     listing.keywords.get(message.uid))
            pending.append(target.append(mailbox, folder.name, raw, flag_names=names,
                                         internaldate=message.internaldate))
            size += len(raw)
            state.bytes += len(raw)
            if len(pending) >= BATCH_MESSAGES or size >= BATCH_BYTES:
                copied += len(await asyncio.gather(*pending))
                pending, size = [], 0
        copied += len(await asyncio.gather(*pending))
        state.folders[folder.uidvalidity] = (folder.name, upto)
    state.messages += copied
    return copied
