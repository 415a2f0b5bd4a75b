"""Backup sets, restore with roll-forward and point-in-time, the recovery storage group,
on real SQLite files while a writer delivers."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from clustermail.mail.backup import (
    BackupError,
    create_backup,
    drop_recovery,
    list_chains,
    merge_mailbox,
    prune,
    recovery_path,
    restore_all,
    restore_database,
    verify,
)
from clustermail.mail.queue import store as qstore
from clustermail.mail.store import MailStore, flags
from tests.mail.backup.support import A, integrity, msg, new_store, tags


def test_backup_while_a_writer_delivers_is_consistent_and_verifies(tmp_path: Path) -> None:
    root, backups = tmp_path / "mail", tmp_path / "backups"
    store = new_store(root)
    db = store.database("SG1", "DB1")
    for i in range(200):
        db.deliver_sync(msg(f"pre{i}", 2000), [A])
    stop = threading.Event()
    delivered: list[str] = []

    def deliver() -> None:
        i = 0
        while not stop.is_set():
            db.deliver_sync(msg(f"during{i}", 1500), [A])
            delivered.append(f"during{i}")
            i += 1

    writer = threading.Thread(target=deliver)
    writer.start()
    seen: list[tuple[str, int, int]] = []
    try:
        time.sleep(0.05)  # the writer is going
        full = create_backup(root, backups, virtual_server="vs1",
                             progress=lambda what, done, total: seen.append((what, done, total)))
        time.sleep(0.05)
    finally:
        stop.set()
        writer.join()
    assert seen and seen[-1][1] == seen[-1][2]  # progress reached the end
    assert full.kind == "full" and full.databases[0].txn > 200
    report = verify(backups, full.id)
    assert report.ok, report.problems
    # The set restores (no roll-forward) to a state that is a prefix of the deliveries.
    out = restore_database(root, backups, "SG1", "DB1", from_id=full.id, recovery=True,
                           roll_forward=False)
    got = tags(out.path)
    assert got[:200] == [f"pre{i}" for i in range(200)]
    assert got[200:] == delivered[: len(got) - 200]
    assert integrity(out.path) == "ok"
    manifest = json.loads((full.path / "manifest.json").read_text())
    entry = manifest["storage_groups"]["SG1"]["databases"]["DB1"]
    assert entry["txn"] == full.databases[0].txn and entry["highest_modseq"] > 200
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    store.dismount()


def test_incremental_chain_restores_to_each_point(tmp_path: Path) -> None:
    root, backups = tmp_path / "mail", tmp_path / "backups"
    store = new_store(root)
    db = store.database("SG1", "DB1")
    for i in range(10):
        db.deliver_sync(msg(f"a{i}"), [A])
    full = create_backup(root, backups, virtual_server="vs1")
    for i in range(10):
        db.deliver_sync(msg(f"b{i}"), [A])
    inc1 = create_backup(root, backups, virtual_server="vs1", incremental=True)
    db.set_flags_sync(A, "INBOX", [1], ["\\Seen"])
    for i in range(10):
        db.deliver_sync(msg(f"c{i}"), [A])
    inc2 = create_backup(root, backups, virtual_server="vs1", incremental=True)
    for i in range(5):
        db.deliver_sync(msg(f"d{i}"), [A])
    want = tags(db)
    assert inc1.parent == full.id and inc2.parent == inc1.id and inc2.chain == full.id
    assert inc2.databases[0].records == 11
    assert verify(backups, inc2.id).ok
    [chain] = list_chains(backups)
    assert [s.id for s in chain.sets] == [full.id, inc1.id, inc2.id]
    store.dismount()
    r1 = restore_database(root, backups, "SG1", "DB1", from_id=inc1.id, recovery=True,
                          roll_forward=False)
    assert tags(r1.path) == want[:20]
    drop_recovery(root)
    # The live database lost: the chain plus the live log bring back everything.
    os.unlink(root / "SG1" / "DB1.sqlite")
    r2 = restore_database(root, backups, "SG1", "DB1", from_id=inc2.id)
    assert r2.stopped is None and r2.from_sets == 21 and r2.rolled_forward >= 5
    store = MailStore(root)
    store.mount(2)
    db = store.database("SG1", "DB1")
    assert tags(db) == want
    assert db.list_messages(A, "INBOX").flags[0] & flags.SEEN
    db.deliver_sync(msg("after"), [A])  # the log goes on from the restored state
    inc3 = create_backup(root, backups, virtual_server="vs1", incremental=True)
    assert verify(backups, inc3.id).ok
    store.dismount()
    # A damaged file is found; a missing link breaks the chain.
    member = inc1.path / inc1.databases[0].file
    data = bytearray(member.read_bytes())
    data[len(data) // 2] ^= 0xFF
    member.write_bytes(bytes(data))
    bad = verify(backups, inc3.id)
    assert not bad.ok and "checksum mismatch" in bad.problems[0]
    os.rename(inc1.path, backups / "elsewhere")
    assert "chain is broken" in verify(backups, inc3.id).problems[0]
    with pytest.raises(BackupError, match="chain is broken"):
        restore_database(root, backups, "SG1", "DB1", from_id=inc3.id, recovery=True)


def test_full_backup_truncates_the_log_and_prune_keeps_whole_chains(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("clustermail.mail.store.translog.log.SEGMENT_BYTES", 32 * 1024)
    root, backups = tmp_path / "mail", tmp_path / "backups"
    store = new_store(root)
    db = store.database("SG1", "DB1")
    logs = root / "_logs" / "SG1" / "DB1"
    for i in range(30):
        db.deliver_sync(msg(f"a{i}", 4000), [A])
    before = len(list(logs.glob("*.log")))
    first = create_backup(root, backups, virtual_server="vs1")
    assert len(list(logs.glob("*.log"))) < before  # records the full set holds
    db.deliver_sync(msg("b"), [A])
    create_backup(root, backups, virtual_server="vs1", incremental=True)
    second = create_backup(root, backups, virtual_server="vs1")
    (backups / ".vs1-crashed-full.partial").mkdir()  # left by a run that died
    report = prune(backups, keep=1)
    assert first.id in report.deleted and second.id in report.kept
    assert [c.full.id for c in list_chains(backups)] == [second.id]
    assert not (backups / ".vs1-crashed-full.partial").exists()
    store.dismount()


def test_point_in_time_restore_goes_back_and_the_log_starts_again(tmp_path: Path) -> None:
    root, backups = tmp_path / "mail", tmp_path / "backups"
    clock = [1_000_000.0]
    store = new_store(root)
    db = store.database("SG1", "DB1")
    full = create_backup(root, backups, virtual_server="vs1")
    store.dismount()
    # A clock we control, so that "until" falls between two deliveries.
    store = MailStore(root)
    for database in store.databases():
        database._clock = lambda: clock[0]
    store.mount(2)
    db = store.database("SG1", "DB1")
    for i in range(5):
        clock[0] += 10
        db.deliver_sync(msg(f"early{i}"), [A])
    until = clock[0] + 5
    for i in range(5):
        clock[0] += 10
        db.deliver_sync(msg(f"late{i}"), [A])
    store.dismount()
    report = restore_database(root, backups, "SG1", "DB1", from_id=full.id, until=until)
    assert report.log_restarted and "time limit" in (report.stopped or "")
    assert list((root / "_logs" / "SG1").glob("DB1.superseded-*"))
    store = MailStore(root)
    store.mount(3)
    db = store.database("SG1", "DB1")
    assert tags(db) == [f"early{i}" for i in range(5)]
    db.deliver_sync(msg("new"), [A])
    with pytest.raises(BackupError, match="take a full backup"):
        create_backup(root, backups, virtual_server="vs1", incremental=True)
    again = create_backup(root, backups, virtual_server="vs1")
    assert verify(backups, again.id).ok
    store.dismount()


def test_recovery_group_merge_brings_back_deleted_messages_without_duplicates(
        tmp_path: Path) -> None:
    root, backups = tmp_path / "mail", tmp_path / "backups"
    store = new_store(root)
    db = store.database("SG1", "DB1")
    db.create_folder_sync(A, "Projects")
    for i in range(6):
        db.deliver_sync(msg(f"m{i}"), [A], flag_names=["\\Flagged"] if i == 2 else [])
    db.append_sync(A, "Projects", msg("p0"), flag_names=["\\Seen", "$Work"],
                   internaldate=1_600_000_000)
    full = create_backup(root, backups, virtual_server="vs1")
    uids = db.list_messages(A, "INBOX").uids
    db.set_flags_sync(A, "INBOX", [uids[1], uids[2]], ["\\Deleted"])
    db.expunge_sync(A, "INBOX")
    db.delete_folder_sync(A, "Projects")
    db.deliver_sync(msg("new"), [A])
    restored = restore_database(root, backups, "SG1", "DB1", from_id=full.id, recovery=True,
                                roll_forward=False)
    assert restored.path == recovery_path(root, "SG1", "DB1")
    assert "_recovery" not in store.layout.names()  # never mounted, never served
    report = asyncio.run(merge_mailbox(db, restored.path, A))
    assert report.copied == 3 and report.skipped == 4 and report.folders_created == ["Projects"]
    inbox = db.list_messages(A, "INBOX")
    assert sorted(tags(db)) == sorted(["m0", "m1", "m2", "m3", "m4", "m5", "new"])
    flagged = [tags(db)[i] for i in range(len(inbox.uids)) if inbox.flags[i] & flags.FLAGGED]
    assert flagged == ["m2"]
    projects = db.list_messages(A, "Projects")
    assert projects.dates[0] == 1_600_000_000 and projects.flags[0] & flags.SEEN
    assert set(projects.keywords.values()) == {"$Work"}
    again = asyncio.run(merge_mailbox(db, restored.path, A))
    assert again.copied == 0  # a second merge adds nothing
    only = asyncio.run(merge_mailbox(db, restored.path, A, folder="Projects"))
    assert only.copied == 0
    assert drop_recovery(root) and not recovery_path(root, "SG1", "DB1").exists()
    store.dismount()


def test_rebuild_onto_an_empty_disk_with_the_queue(tmp_path: Path) -> None:
    disk, backups = tmp_path / "disk", tmp_path / "backups"
    root, queue = disk / "mail", qstore.queue_path(disk)
    store = new_store(root)
    db = store.database("SG1", "DB1")
    store.add_storage_group("SG2")
    db2 = store.add_database("SG2", "DB1")
    db2.create_mailbox_sync("bob@example.test")
    db.deliver_sync(msg("a"), [A])
    db2.deliver_sync(msg("b"), ["bob@example.test"])
    conn = qstore.connect(queue)
    qstore.insert(conn, qstore.NewMessage(
        "s@t", (qstore.NewRecipient("r@elsewhere", qstore.EXTERNAL),), b"queued"), time.time())
    conn.close()
    full = create_backup(root, backups, virtual_server="vs1", queue=queue)
    assert full.queue is not None and verify(backups, full.id).ok
    store.dismount()
    shutil.rmtree(disk)  # the whole disk is lost, logs included
    server = restore_all(root, backups, from_id=full.id, queue=queue)
    assert [(r.storage_group, r.database) for r in server.databases] == [("SG1", "DB1"),
                                                                         ("SG2", "DB1")]
    assert server.queue_restored and server.queue_dropped == 0
    store = MailStore(root)
    store.mount(5)
    assert tags(store.database("SG1", "DB1")) == ["a"]
    assert store.database("SG2", "DB1").list_mailboxes() == ["bob@example.test"]
    store.dismount()
    conn = qstore.connect(queue)
    assert qstore.count(conn) == (1, 1)
    conn.close()


def test_restore_all_drops_what_the_queue_finished_after_the_backup(tmp_path: Path) -> None:
    """The disk lost but not its logs (on another disk): the databases roll forward, and
    the restored queue forgets what it delivered or relayed after the backup."""
    from clustermail.mail.queue.finished import FINISHED_DIR, finished_dir, read_finished

    disk, backups = tmp_path / "disk", tmp_path / "backups"
    root, queue_file = disk / "mail", qstore.queue_path(disk)
    store = new_store(root)
    db = store.database("SG1", "DB1")
    finished = finished_dir(root)
    assert finished == root / "_logs" / FINISHED_DIR
    queue = qstore.Queue(queue_file, time.time, finished)
    queue.open(1)

    async def enqueue() -> None:
        for tag, rcpt, route in (("local", A, qstore.LOCAL),
                                 ("relayed", "r@elsewhere", qstore.EXTERNAL),
                                 ("waiting", "w@elsewhere", qstore.EXTERNAL)):
            await queue.enqueue(qstore.NewMessage(
                "s@t", (qstore.NewRecipient(rcpt, route),), msg(tag), queue_id=tag.upper()))

    asyncio.run(enqueue())
    full = create_backup(root, backups, virtual_server="vs1", queue=queue_file)
    # After the backup: "local" delivered into DB1 (its log has it), "relayed" relayed;
    # "waiting" deferred.
    db.deliver_sync(msg("local"), [A])
    conn = qstore.connect(queue_file)
    rows = {m.queue_id: m.recipients[0].id for m in qstore.read_messages(conn)}
    conn.close()
    asyncio.run(queue.record([qstore.Outcome(rows["LOCAL"], True),
                              qstore.Outcome(rows["RELAYED"], True),
                              qstore.Outcome(rows["WAITING"], False, time.time() + 60, "4.4.1")]))
    queue.close()
    assert [q for q, _, _ in read_finished(finished)] == ["LOCAL", "RELAYED"]
    store.dismount()
    for lost in (root / "SG1", disk / "queue", root / "storage.json"):
        shutil.rmtree(lost) if lost.is_dir() else lost.unlink()

    # It ran on the empty disk meanwhile and accepted a message (queued for its lost
    # databases): the restore keeps it.
    live = qstore.Queue(queue_file, time.time)
    live.open(2)
    asyncio.run(live.enqueue(qstore.NewMessage(
        "s@t", (qstore.NewRecipient(A, qstore.LOCAL),), msg("new"), queue_id="NEW")))
    live.close()

    server = restore_all(root, backups, from_id=full.id, queue=queue_file)
    assert server.queue_dropped == 2 and server.queue_kept == 1
    assert any("less 2 recipient(s) it finished since" in line for line in server.lines())
    conn = qstore.connect(queue_file)
    kept = qstore.read_messages(conn, with_body=True)
    assert [m.queue_id for m in kept] == ["WAITING", "NEW"]
    assert kept[1].body == msg("new") and kept[1].recipients[0].address == A
    conn.close()
    store = MailStore(root)
    store.mount(5)
    assert tags(store.database("SG1", "DB1")) == ["local"]  # once: rolled forward, not redone
    store.dismount()


def test_a_copy_stays_consistent_when_the_wal_restarts_under_it(tmp_path: Path) -> None:
    """Every frame already in the file: the copy reads the file alone, and a writer that
    restarts the WAL meanwhile (allowed: the reader does not use it) changes nothing."""
    import io
    import sqlite3

    from clustermail.mail.backup import snapshot
    from clustermail.mail.store.translog.journal import database_txn

    root = tmp_path / "mail"
    store = new_store(root)
    db = store.database("SG1", "DB1")
    for i in range(100):  # more pages than one chunk of the copy
        db.deliver_sync(msg(f"a{i}", 20_000), [A])
    side = sqlite3.connect(db.path, isolation_level=None)
    assert side.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0] == 0  # all in the file

    class Meddling(io.BytesIO):
        calls = 0

        def write(self, data: bytes) -> int:  # type: ignore[override]
            if Meddling.calls == 0:
                for i in range(100):  # the writer restarts the WAL and fills it again
                    db.deliver_sync(msg(f"b{i}", 20_000), [A])
            Meddling.calls += 1
            return super().write(data)

    out = Meddling()
    journal = db.journal
    assert journal is not None
    copy = snapshot.take(db.path, out, dblog=journal.log.__class__(journal.log.directory,
                                                                    journal.log.db_id))
    image = tmp_path / "image.sqlite"
    image.write_bytes(out.getvalue())
    assert integrity(image) == "ok"
    assert tags(image) == [f"a{i}" for i in range(100)]
    conn = sqlite3.connect(f"file:{image}?mode=ro", uri=True)
    assert database_txn(conn) == copy.txn
    conn.close()
    side.close()
    assert tags(db)[-1] == "b99"
    store.dismount()
