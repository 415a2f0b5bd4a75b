"""`clustermail user purge`: delete a disconnected mailbox's data for good.

1. Find where the mailbox lives (its record under ``disconnected/``) and check its
   database can be written from this machine (see :mod:`mail_local`), before anything
   changes.
2. Mark the record as being purged: from then on it cannot be reconnected, so its data
   is never deleted under an address that was just given it.
3. Delete the mailbox from its database (one transaction: all or nothing), then the
   record. A purge interrupted between 2 and 3 is finished by running it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clustermail.admin.mail_local import locate, mounted, require_here
from clustermail.cluster.view import ClusterView
from clustermail.mail.directory import Directory


@dataclass(frozen=True, slots=True)
class PurgeReport:
    mailbox_id: str
    address: str
    home: tuple[str, str, str]
    found: bool  # False: its database no longer held it (nothing left to delete)
    messages: int
    bytes: int

    def to_dict(self) -> dict[str, object]:
        return {"purged": self.mailbox_id, "address": self.address,
                "home": "/".join(self.home), "found": self.found,
                "messages": self.messages, "bytes": self.bytes}


async def purge_mailbox(
    directory: Directory, view: ClusterView, data_dir: Path, mailbox_id: str
) -> PurgeReport:
    record = await directory.disconnected_mailbox(mailbox_id)
    loc = locate(view, record.server, data_dir)
    require_here(loc)
    await directory.begin_purge(mailbox_id)
    with mounted(loc, record.storage_group, record.database) as db:
        found = db.has_mailbox(mailbox_id)
        messages = size = 0
        if found:
            usage = db.quota(mailbox_id)
            messages, size = usage.used_messages, usage.used_bytes
            db.delete_mailbox_sync(mailbox_id)
    await directory.end_purge(mailbox_id)
    return PurgeReport(mailbox_id, record.address, record.home, found, messages, size)
