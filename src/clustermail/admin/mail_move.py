"""`clustermail user move`: copy a mailbox to another database, then switch its home.

1. Mount the source and the target database here (see :mod:`mail_local` for why that
   is safe), create the mailbox in the target and copy everything
   (:mod:`clustermail.mail.store.mailbox_copy`).
2. Switch the directory entry with compare-and-swap, expecting the old home: a
   concurrent move makes this one fail before anything is lost.
3. Catch up: copy what was delivered to the source meanwhile (resource hosts may
   still deliver there until their directory cache has the new home), then delete
   the source mailbox *only if nothing arrived since that copy* (one transaction in
   the source). Repeat a few times if mail keeps arriving; if it never settles, the
   source mailbox is kept and the command says so: acknowledged mail is never lost.

What the move does not carry: UIDs and UIDVALIDITY (the target database assigns its
own, so IMAP clients resynchronise once), \\Recent, flag changes and expunges made in
the source during the move, deleted-item retention.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from clustermail.admin.errors import AdminError
from clustermail.admin.mail_local import locate, mounted
from clustermail.cluster.view import ClusterView
from clustermail.mail.directory import Directory, MailboxEntry
from clustermail.mail.store import MailboxChangedError, MailboxExistsError, StoreError
from clustermail.mail.store.mailbox_copy import CopyState, copy_mailbox

CATCH_UP_ROUNDS = 10


@dataclass
class MoveReport:
    address: str
    source: tuple[str, str, str]
    target: tuple[str, str, str]
    messages: int = 0
    bytes: int = 0
    source_deleted: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "address": self.address,
            "from": "/".join(self.source),
            "to": "/".join(self.target),
            "messages": self.messages,
            "bytes": self.bytes,
            "source_deleted": self.source_deleted,
            "notes": self.notes,
        }


async def move_mailbox(
    directory: Directory, view: ClusterView, data_dir: Path, entry: MailboxEntry,
    server: str, storage_group: str, database: str,
) -> MoveReport:
    target_home = (server, storage_group, database)
    if entry.home == target_home:
        raise AdminError(f"{entry.address} is already homed on {'/'.join(target_home)}")
    await directory.check_database(server, storage_group, database)
    report = MoveReport(entry.address, entry.home, target_home)
    src_loc = locate(view, entry.server, data_dir)
    dst_loc = locate(view, server, data_dir)
    address, name = entry.address, entry.mailbox_id  # the mailbox keeps its id
    with (
        mounted(src_loc, entry.storage_group, entry.database) as src,
        mounted(dst_loc, storage_group, database) as dst,
    ):
        if not src.has_mailbox(name):
            report.notes.append("the source database had no data for this mailbox yet")
            await directory.move_mailbox_entry(address, *target_home, expect_home=entry.home,
                                               expect_mailbox_id=name)
            return report
        if dst.has_mailbox(name):  # left over from an interrupted move: nothing serves it
            dst.delete_mailbox_sync(name)
            report.notes.append("removed a partial copy left in the target by an earlier move")
        state = CopyState()
        try:
            with contextlib.suppress(MailboxExistsError):
                dst.create_mailbox_sync(name, quota_limits=entry.quota)
            await copy_mailbox(src, dst, name, state)
            await directory.move_mailbox_entry(address, *target_home, expect_home=entry.home,
                                               expect_mailbox_id=name)
        except BaseException:
            with contextlib.suppress(StoreError):
                dst.delete_mailbox_sync(name)  # the directory still says source: undo
            raise
        try:
            for _ in range(CATCH_UP_ROUNDS):
                await copy_mailbox(src, dst, name, state)
                try:
                    src.delete_mailbox_sync(name, expect_uidnext=state.expected_uidnext())
                except MailboxChangedError:
                    continue  # mail arrived after the last pass: copy it too
                report.source_deleted = True
                break
            else:
                report.notes.append(
                    "mail kept arriving in the source database; the source mailbox was kept "
                    "(its new messages are not in the moved mailbox)"
                )
        except StoreError as exc:
            report.notes.append(f"moved, but the source mailbox was kept: {exc}")
        report.messages, report.bytes = state.messages, state.bytes
    return report
