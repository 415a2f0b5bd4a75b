"""The mailbox database: folders, messages, flags, change log, delivery, quotas, retention."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from clustermail.mail.store import (
    DatabaseSettings,
    FolderExistsError,
    FolderNotFoundError,
    InvalidFlagError,
    InvalidFolderNameError,
    MailboxDatabase,
    MailboxNotFoundError,
    MessageNotFoundError,
    NotMountedError,
    QuotaExceededError,
    QuotaLimits,
    QuotaState,
    check,
    flags,
    index,
    uidl,
)
from tests.support.mail_data import USERS, message

A, B, C = USERS


def test_special_use_folders_created_with_mailbox(db: MailboxDatabase) -> None:
    folders = {f.name: f for f in db.list_folders(A)}
    assert {name: f.special_use for name, f in folders.items()} == {
        "INBOX": None,
        "Sent": "\\Sent",
        "Drafts": "\\Drafts",
        "Trash": "\\Trash",
        "Junk": "\\Junk",
        "Archive": "\\Archive",
    }
    assert all(f.subscribed for f in folders.values())
    validities = [f.uidvalidity for f in folders.values()]
    assert all(v > 0 for v in validities) and len(set(validities)) == len(validities)


def test_folder_hierarchy_rename_delete_subscribe(db: MailboxDatabase) -> None:
    db.create_folder_sync(A, "Projects/2024/Q1")
    names = [f.name for f in db.list_folders(A)]
    assert {"Projects", "Projects/2024", "Projects/2024/Q1"} <= set(names)
    with pytest.raises(FolderExistsError):
        db.create_folder_sync(A, "Projects")
    with pytest.raises(InvalidFolderNameError):
        db.create_folder_sync(A, "bad//name")
    validity = {f.name: f.uidvalidity for f in db.list_folders(A)}
    db.subscribe_sync(A, "Projects/2024")
    db.deliver_sync(message(1), [A], "Projects/2024")
    moved = db.rename_folder_sync(A, "Projects", "Work")
    assert sorted(moved) == [
        ("Projects", "Work"),
        ("Projects/2024", "Work/2024"),
        ("Projects/2024/Q1", "Work/2024/Q1"),
    ]
    after = {f.name: f.uidvalidity for f in db.list_folders(A)}
    assert after["Work/2024"] == validity["Projects/2024"]  # rename keeps UIDVALIDITY
    assert "Work/2024" in db.subscriptions(A)
    assert db.status(A, "Work/2024").messages == 1
    db.delete_folder_sync(A, "Work")
    assert "Work" not in {f.name for f in db.list_folders(A)}
    assert "Work/2024" in {f.name for f in db.list_folders(A)}  # inferiors stay
    with pytest.raises(InvalidFolderNameError):
        db.delete_folder_sync(A, "inbox")
    db.create_folder_sync(A, "Work")
    recreated = {f.name: f.uidvalidity for f in db.list_folders(A)}["Work"]
    assert recreated not in validity.values()  # never reused


def test_rename_inbox_moves_messages(db: MailboxDatabase) -> None:
    db.deliver_sync(message(1), [A])
    db.rename_folder_sync(A, "INBOX", "Old")
    assert db.status(A, "INBOX").messages == 0
    assert db.status(A, "Old").messages == 1
    assert check(db).ok


def test_deliver_list_fetch_and_structure(db: MailboxDatabase) -> None:
    raw = message(7)
    result = db.deliver_sync(raw, [A, "nobody@example.test"], internaldate=1_700_000_000)
    ok, unknown = result.recipients
    assert ok.delivered and ok.uid == 1 and ok.folder == "INBOX"
    assert not unknown.delivered and unknown.code == "5.1.1"
    listing = db.list_messages(A, "INBOX")
    assert len(listing) == 1
    assert listing[0].uid == 1 and listing[0].size == len(raw)
    assert listing[0].internaldate == 1_700_000_000
    assert listing[0].flags == flags.RECENT
    assert db.fetch_raw(A, "INBOX", 1) == raw
    assert db.fetch_range(A, "INBOX", 1, 0, 4) == b"From"
    assert db.fetch_structure(A, "INBOX", 1).envelope[1] == "hello 7"
    with pytest.raises(MessageNotFoundError):
        db.fetch_raw(A, "INBOX", 2)
    with pytest.raises(FolderNotFoundError):
        db.list_messages(A, "Nope")
    with pytest.raises(MailboxNotFoundError):
        db.list_messages("nobody", "INBOX")
    status = db.status(A, "INBOX")
    assert (status.messages, status.recent, status.unseen, status.uidnext) == (1, 1, 1, 2)
    assert uidl(ok.uidvalidity or 0, 1) == f"{ok.uidvalidity}.1"


def test_single_instance_storage(db: MailboxDatabase, db_path: Path) -> None:
    db.deliver_sync(message(1, 5000), [A, B, C])
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*), sum(refcount) FROM body").fetchone() == (1, 3)
    db.set_flags_sync(A, "INBOX", [1], ["\\Deleted"])
    db.expunge_sync(A, "INBOX")
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*), sum(refcount) FROM body").fetchone() == (1, 2)
    assert db.fetch_raw(B, "INBOX", 1) == message(1, 5000)


def test_flags_modseq_and_condstore(db: MailboxDatabase) -> None:
    for n in range(3):
        db.deliver_sync(message(n), [A])
    hms = db.status(A, "INBOX").highestmodseq
    res = db.set_flags_sync(A, "INBOX", [1, 2], ["\\Seen", "$Label1"])
    assert res.modseq == hms + 1 and [c.uid for c in res.changed] == [1, 2]
    assert res.changed[0].flags == flags.SEEN | flags.RECENT
    assert res.changed[0].keywords == "$Label1"
    again = db.set_flags_sync(A, "INBOX", [1], ["\\Seen"])
    assert again.changed == [] and again.modseq == res.modseq  # no change, no new modseq
    cond = db.set_flags_sync(A, "INBOX", [1, 3], ["\\Flagged"], unchanged_since=hms)
    assert cond.failed == [1] and [c.uid for c in cond.changed] == [3]
    removed = db.set_flags_sync(A, "INBOX", [2], ["$Label1"], "remove")
    assert removed.changed[0].keywords is None
    replaced = db.set_flags_sync(A, "INBOX", [1], ["\\Answered"], "set")
    assert replaced.changed[0].flags == flags.ANSWERED | flags.RECENT
    listing = db.list_messages(A, "INBOX")
    assert listing.flags[0] == flags.ANSWERED | flags.RECENT
    assert listing.keywords == {}
    db.set_flags_sync(A, "INBOX", [3], ["Junk"])
    assert db.list_messages(A, "INBOX").keywords == {3: "Junk"}
    with pytest.raises(InvalidFlagError):
        db.set_flags_sync(A, "INBOX", [1], ["\\Recent"])
    assert db.status(A, "INBOX").unseen == 2  # only 2 is still \\Seen


def test_copy_move_expunge_and_changes(db: MailboxDatabase) -> None:
    for n in range(4):
        db.deliver_sync(message(n), [A])
    start = db.status(A, "INBOX").highestmodseq
    copied = db.copy_sync(A, "INBOX", [1, 2], "Archive")
    archive = db.status(A, "Archive")
    assert copied.uidvalidity == archive.uidvalidity
    assert (copied.source_uids, copied.dest_uids) == ([1, 2], [1, 2])
    moved = db.move_sync(A, "INBOX", [3], "Archive")
    assert moved.dest_uids == [3] and moved.expunged == [3]
    db.set_flags_sync(A, "INBOX", [1, 4], ["\\Deleted"])
    assert db.expunge_sync(A, "INBOX", [4]) == [4]  # UID EXPUNGE: only the listed ones
    changes = db.changes_since(A, "INBOX", start)
    assert changes.expunged == [3, 4]
    assert [c.uid for c in changes.changed] == [1]
    assert db.expunge_sync(A, "INBOX") == [1]
    assert list(db.list_messages(A, "INBOX").uids) == [2]
    assert db.quota(A).used_messages == 4  # INBOX 2 + Archive 1, 2, 3
    assert check(db).ok


def test_uids_never_reused_after_expunge_and_remount(db_path: Path) -> None:
    db_path.parent.mkdir()
    db = MailboxDatabase(db_path)
    db.mount(1)
    db.create_mailbox_sync(A)
    for n in range(3):
        db.deliver_sync(message(n), [A])
    db.set_flags_sync(A, "INBOX", [1, 2, 3], ["\\Deleted"])
    db.expunge_sync(A, "INBOX")
    validity = db.status(A, "INBOX").uidvalidity
    db.dismount()
    with pytest.raises(NotMountedError):
        db.status(A, "INBOX")
    db.mount(1)
    assert db.status(A, "INBOX").uidvalidity == validity
    assert db.deliver_sync(message(9), [A]).recipients[0].uid == 4
    db.dismount()
    other = MailboxDatabase(db_path)
    other.mount(2)
    assert other.status(A, "INBOX").uidvalidity == validity
    other.dismount()


async def test_async_api_and_listeners(db: MailboxDatabase) -> None:
    seen: list[frozenset[str]] = []
    db.add_listener(seen.append)
    res = await db.deliver(message(1), [A, B])
    assert [r.uid for r in res.recipients] == [1, 1]
    app = await db.append(A, "Drafts", message(2), flag_names=["\\Draft"], internaldate=1)
    assert app.uid == 1
    assert (await db.set_flags(A, "Drafts", [1], ["\\Seen"])).changed
    assert (await db.claim_recent(A, "INBOX")) == [1]
    assert (await db.claim_recent(A, "INBOX")) == []
    assert (await db.copy(A, "Drafts", [1], "Sent")).dest_uids == [1]
    assert (await db.move(A, "Sent", [1], "Trash")).expunged == [1]
    await db.set_flags(A, "Trash", [1], ["\\Deleted"])
    assert await db.expunge(A, "Trash") == [1]
    await db.create_folder(A, "X")
    await db.rename_folder(A, "X", "Y")
    await db.subscribe(A, "Y", False)
    await db.delete_folder(A, "Y")
    assert frozenset({A, B}) in seen
    assert all(s <= {A, B} for s in seen)


async def test_group_commit_batches_concurrent_deliveries(db: MailboxDatabase) -> None:
    before = db.stats.commits
    results = await asyncio.gather(*(db.deliver(message(n), [A]) for n in range(200)))
    commits = db.stats.commits - before
    assert sorted(r.recipients[0].uid or 0 for r in results) == list(range(1, 201))
    assert commits < 50, f"200 concurrent deliveries took {commits} commits"
    assert db.stats.largest_batch > 1


def test_quota_tiers(db: MailboxDatabase) -> None:
    # sizes well above the few hundred bytes each message's stored structure adds
    limits = QuotaLimits(warning=20_000, prohibit_send=40_000, prohibit_send_receive=60_000)
    db.set_quota_sync(A, limits)
    assert db.may_send(A).accepted
    db.deliver_sync(message(0, 25_000), [A])  # crosses the warning limit: one warning message
    assert db.quota(A).state is QuotaState.WARNING
    assert db.status(A, "INBOX").messages == 2
    warning = db.fetch_raw(A, "INBOX", 2)
    assert b"Subject: Your mailbox is almost full" in warning
    db.deliver_sync(message(1, 1_000), [A])
    assert db.status(A, "INBOX").messages == 3  # at most one warning a day
    db.deliver_sync(message(2, 15_000), [A])
    assert db.quota(A).state is QuotaState.PROHIBIT_SEND
    refused_send = db.may_send(A)
    assert not refused_send.accepted and refused_send.code == "5.2.2"
    full = db.deliver_sync(message(3, 30_000), [A, B]).recipients
    assert not full[0].delivered and full[0].code == "5.2.2" and full[0].permanent
    assert full[1].delivered  # B uses the database default: unlimited
    db.update_settings_sync(quota_full_permanent=False)
    temp = db.deliver_sync(message(4, 30_000), [A]).recipients[0]
    assert temp.code == "4.2.2" and not temp.permanent
    huge = db.deliver_sync(message(5, 70_000), [A]).recipients[0]
    assert huge.code == "5.2.2"  # can never fit: permanent anyway
    with pytest.raises(QuotaExceededError):
        db.append_sync(A, "INBOX", message(6, 30_000))
    db.set_quota_sync(A, None)
    assert db.deliver_sync(message(7, 30_000), [A]).recipients[0].delivered
    assert not db.quota(A).custom


def test_database_default_quota(db: MailboxDatabase) -> None:
    db.update_settings_sync(quota=QuotaLimits(prohibit_send_receive=1_000))
    assert not db.deliver_sync(message(0, 2_000), [B]).recipients[0].delivered
    db.dismount()
    db.mount(1)
    assert db.settings.quota.prohibit_send_receive == 1_000  # stored in the database file


def test_deleted_item_retention(db: MailboxDatabase) -> None:
    db.update_settings_sync(retention_days=7)
    for n in range(3):
        db.deliver_sync(message(n), [A])
    db.set_flags_sync(A, "INBOX", [1, 2], ["\\Deleted", "\\Seen"])
    assert db.expunge_sync(A, "INBOX") == [1, 2]
    assert db.deleted_items(A) == 2
    recovered = db.recover_deleted_sync(A)
    assert [(r.folder, r.uid) for r in recovered] == [("INBOX", 4), ("INBOX", 5)]
    assert db.fetch_raw(A, "INBOX", 4) == message(0)
    assert db.list_messages(A, "INBOX").flags[1] == flags.SEEN | flags.DELETED
    db.create_folder_sync(A, "Old")
    db.deliver_sync(message(9), [A], "Old")
    db.delete_folder_sync(A, "Old")
    assert db.purge_deleted_items_sync() == 0  # still inside the window
    assert [r.folder for r in db.recover_deleted_sync(A)] == ["Old"]  # recreated
    db.update_settings_sync(retention_days=0)
    db.set_flags_sync(A, "Old", [1], ["\\Deleted"])
    db.expunge_sync(A, "Old")
    assert db.deleted_items(A) == 0
    assert check(db).ok


def test_purge_after_window(db_path: Path) -> None:
    db_path.parent.mkdir()
    now = [1_000_000.0]
    db = MailboxDatabase(db_path, clock=lambda: now[0], settings=DatabaseSettings(retention_days=1))
    db.mount(1)
    db.create_mailbox_sync(A)
    db.deliver_sync(message(1), [A])
    db.set_flags_sync(A, "INBOX", [1], ["\\Deleted"])
    db.expunge_sync(A, "INBOX")
    now[0] += 2 * 86400
    assert db.purge_deleted_items_sync() == 1
    assert db.recover_deleted_sync(A) == []
    assert check(db).ok
    db.dismount()


def test_delete_mailbox(db: MailboxDatabase, db_path: Path) -> None:
    db.deliver_sync(message(1), [A, B])
    db.delete_mailbox_sync(A)
    assert A not in db.list_mailboxes()
    assert db.fetch_raw(B, "INBOX", 1) == message(1)
    assert check(db).ok


def test_background_checkpoint_and_unclean_mount(
    db: MailboxDatabase, db_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from clustermail.mail.store import checkpoint

    monkeypatch.setattr(checkpoint, "THRESHOLD_BYTES", 64 * 1024)
    for n in range(40):
        db.deliver_sync(message(n, 20_000), [A])
    crashed = tmp_path / "crashed.sqlite"
    crashed.write_bytes(db_path.read_bytes())  # what a killed owner leaves behind
    Path(str(crashed) + "-wal").write_bytes(Path(str(db_path) + "-wal").read_bytes())
    assert db._checkpointer is not None
    deadline = time.monotonic() + 10
    while db._checkpointer.checkpoints == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert db._checkpointer.checkpoints > 0
    info = MailboxDatabase(crashed).mount(2)
    assert info.unclean and info.seconds >= 0
    assert db.status(A, "INBOX").messages == 40
    assert check(db).ok


def test_a_reused_wal_is_checkpointed_per_threshold_written_not_per_commit(
    db: MailboxDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a checkpoint has reset the WAL, SQLite reuses the file at its old size; a
    checkpoint (and its fsync of the database file) must still come once per
    THRESHOLD_BYTES written, not after every commit."""
    from clustermail.mail.store import checkpoint

    monkeypatch.setattr(checkpoint, "THRESHOLD_BYTES", 64 * 1024)
    for n in range(20):  # grow the WAL past the threshold, then let it be checkpointed
        db.deliver_sync(message(n, 20_000), [A])
    assert db._checkpointer is not None
    deadline = time.monotonic() + 10
    while db._checkpointer.checkpoints == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    before, commits = db._checkpointer.checkpoints, db.stats.commits
    for n in range(20, 220):
        db.deliver_sync(message(n, 2_000), [A])
    written = (db.stats.commits - commits) * (2_000 + checkpoint.COMMIT_OVERHEAD)
    assert db._checkpointer.checkpoints - before <= written // (64 * 1024) + 2
    assert db.status(A, "INBOX").messages == 220


def test_the_wal_restarts_under_a_steady_stream_of_commits(
    db: MailboxDatabase, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint on another connection never ends between two commits of a busy
    writer, and SQLite restarts the WAL only then: the writer finishes each background
    round itself, so the WAL stays near the threshold instead of holding every commit."""
    from clustermail.mail.store import checkpoint

    monkeypatch.setattr(checkpoint, "THRESHOLD_BYTES", 64 * 1024)
    for n in range(300):  # 6 MB, back to back
        db.deliver_sync(message(n, 20_000), [A])
    wal = Path(str(db_path) + "-wal").stat().st_size
    assert wal < 2 * 1024 * 1024, f"the WAL grew to {wal} bytes"
    assert db.status(A, "INBOX").messages == 300


async def test_deliveries_across_index_chunks_keep_the_index_true(db: MailboxDatabase) -> None:
    """Delivery reads the folder's last index chunk with its mailbox and folder rows: past
    several chunk boundaries, in batches and alone, the index still matches the table."""
    total = 2 * index.CHUNK_ENTRIES + 7
    for n in range(index.CHUNK_ENTRIES - 3):
        db.deliver_sync(message(n), [A, B])
    await asyncio.gather(
        *(db.deliver(message(n), [A, B], "Nope") for n in range(index.CHUNK_ENTRIES - 3, total))
    )
    for box in (A, B):
        assert list(db.list_messages(box, "INBOX").uids) == list(range(1, total + 1))
    assert not db.check_sync().problems
