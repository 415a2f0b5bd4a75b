"""Backup operations through the owner: the admin functions write store requests into a
real SQLite coordination store, a real mail_store resource (in process, on a real disk
folder) claims and runs them while it serves; and the same operations run here when the
virtual server has no owner."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from clustermail.admin import backup_ops
from clustermail.admin.errors import AdminError
from clustermail.admin.local import apply_config
from clustermail.cluster import eventlog, keys
from clustermail.cluster.config import config_from_dict
from clustermail.cluster.records import OwnerRecord
from clustermail.cluster.resources.disk import DiskResource
from clustermail.coord import Store
from clustermail.mail.backup import requests as rq
from clustermail.mail.backup.schedule import parse_schedule
from clustermail.mail.backup.worker import BackupPlan, OwnerSite, RequestWorker
from clustermail.mail.store import MailboxDatabase
from clustermail.mail.store.resource import MailStoreResource
from tests.mail.backup.support import msg, tags
from tests.support.children import children_running
from tests.support.directory import directory, last_change, wait_provisioned
from tests.support.resource_env import Env

A = "alice@example.test"
B = "bob@example.test"
EPOCH = 7


def config(store_props: dict[str, object] | None = None) -> dict[str, object]:
    return {
        "cluster": {"placement": "active-passive"},
        "nodes": {"node1": {}, "node2": {}},
        "virtual_servers": {"mail1": {"resources": {
            "disk": {"type": "disk", "properties": {"path": "{data}/disks/mail1"}},
            "store": {"type": "mail_store", "depends_on": ["disk"],
                      "properties": store_props or {}},
        }}},
    }


@dataclass
class Site:
    env: Env
    store: Store
    data: Path
    mail: MailStoreResource
    #: alice's and bob's mailbox ids: what names their data in the databases
    a: str = ""
    b: str = ""

    def db(self, name: str = "DB1") -> MailboxDatabase:
        return self.mail.store.database("SG1", name)

    async def own(self, epoch: int = EPOCH, node: str = "node1") -> None:
        await self.store.put(keys.OWNER + "mail1",
                             OwnerRecord(node=node, epoch=epoch, since=time.time()).to_store())


async def _site(tmp: Path, props: dict[str, object] | None = None) -> Site:
    env = Env(tmp, epoch=EPOCH)
    store = await env.store.get()
    await apply_config(store, config_from_dict(config(props), "test"))
    d = directory(store)
    await d.add_domain("example.test")
    await d.add_database("mail1", "SG1", "DB2")
    a = (await d.add_mailbox(A, password="a", server="mail1")).mailbox_id
    b = (await d.add_mailbox(B, password="b", server="mail1", storage_group="SG1",
                             database="DB2")).mailbox_id
    data = tmp / "data"
    env.make(DiskResource, "disk", {"path": str(data / "disks" / "mail1")})
    mail = env.make(MailStoreResource, "store", dict(props or {}), ("disk",))
    return Site(env, store, data, mail, a, b)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    s = await _site(tmp_path)
    await s.env.group.resource("disk").online()
    await s.own()
    await s.mail.online()
    await wait_provisioned(s.store, "mail1", await last_change(s.store))
    yield s
    await s.mail.offline()
    await s.env.store.close()


async def test_backup_and_restore_run_on_the_owner_while_it_serves(site: Site) -> None:
    await site.db().deliver(msg("one"), [site.a])
    await site.db("DB2").deliver(msg("bob-one"), [site.b])
    seen: list[tuple[str, int, int]] = []
    doc, text = await backup_ops.backup_create(site.store, site.data, "mail1",
                                               progress=lambda *p: seen.append(p))
    assert text == doc["id"] and doc["kind"] == "full"
    assert doc["process"] != os.getpid()  # the copy ran in a child process of its own
    assert Path(doc["path"]).parent == site.data / "backups"
    assert set(doc["databases"]) == {"SG1/DB1", "SG1/DB2"}
    record = await rq.read(site.store, "mail1", _only_request(await _requests(site)).id)
    assert record is not None and record[0].state == rq.DONE
    assert (record[0].node, record[0].epoch) == ("node1", EPOCH)
    assert record[0].progress is not None  # the last progress is kept with the result

    # Acknowledged after the backup: the restore rolls forward to it.
    await site.db().deliver(msg("two"), [site.a])
    db2 = site.db("DB2")
    doc, text = await backup_ops.restore(site.store, site.data, "mail1", from_id=doc["id"],
                                         database="SG1/DB1")
    assert "restored SG1/DB1" in text and doc["restored"][0]["rolled_forward"] >= 1
    assert tags(site.db(), mailbox=site.a) == ["one", "two"]  # mounted again, with everything
    # The other database kept serving throughout (the same mount, never dismounted).
    assert db2.mounted and len(db2.list_messages(site.b, "INBOX").uids) == 1
    assert await site.mail.quick_check()
    assert site.mail.maintenance == set()
    listed, lines = await backup_ops.backup_list([site.data / "backups"])
    assert listed["chains"][0]["chain"] in lines


def _only_request(found: list[rq.StoreRequest]) -> rq.StoreRequest:
    assert len(found) == 1, found
    return found[0]


async def _requests(site: Site) -> list[rq.StoreRequest]:
    return [rq.parse(kv) for kv in (await site.store.range(rq.prefix_of("mail1"))).kvs]


async def test_reset_recovery_and_merge_through_the_owner(site: Site) -> None:
    for tag in ("keep", "lost"):
        await site.db().deliver(msg(tag), [site.a])
    doc, _ = await backup_ops.backup_create(site.store, site.data, "mail1")
    backup_id = doc["id"]
    folder = site.db().list_messages(site.a, "INBOX")
    await site.db().set_flags(site.a, "INBOX", [folder.uids[1]], ["\\Deleted"], "add")
    await site.db().expunge(site.a, "INBOX")
    assert tags(site.db(), mailbox=site.a) == ["keep"]

    doc, text = await backup_ops.restore(site.store, site.data, "mail1", from_id=backup_id,
                                         database="SG1/DB1", recovery=True)
    assert "recovery storage group" in text
    doc, text = await backup_ops.recover_mailbox(site.store, site.data, A)
    assert (doc["copied"], doc["skipped"]) == (1, 1)  # what is still there is not copied
    doc, text = await backup_ops.recover_mailbox(site.store, site.data, A)
    assert (doc["copied"], doc["skipped"]) == (0, 2)  # twice: nothing is copied again
    assert sorted(tags(site.db(), mailbox=site.a)) == ["keep", "lost"]
    doc, _ = await backup_ops.drop_recovery(site.store, site.data, "mail1")
    assert len(doc["dropped"]) == 1
    with pytest.raises(AdminError, match="no recovery database"):
        await backup_ops.recover_mailbox(site.store, site.data, A)

    with pytest.raises(AdminError, match="--confirm"):
        await backup_ops.store_reset(site.store, site.data, "mail1", "SG1/DB1", confirm=False)
    before = await last_change(site.store)
    doc, text = await backup_ops.store_reset(site.store, site.data, "mail1", "SG1/DB1",
                                             confirm=True)
    assert "new empty database now" in text and doc["kept"]
    await wait_provisioned(site.store, "mail1", before)
    async with asyncio.timeout(10):  # the mailbox is created again in the new database
        while not site.db().has_mailbox(site.a):
            await asyncio.sleep(0.02)
    assert tags(site.db(), mailbox=site.a) == []
    with pytest.raises(AdminError, match="restore --all rebuilds every database"):
        await backup_ops.restore(site.store, site.data, "mail1", from_id=backup_id,
                                 all_databases=True)
    with pytest.raises(AdminError, match="failed on node1: no backup 'nope'"):
        await backup_ops.restore(site.store, site.data, "mail1", from_id="nope",
                                 database="SG1/DB1")


async def test_a_request_is_claimed_once_and_only_by_the_owner(site: Site) -> None:
    await site.own(epoch=EPOCH + 1, node="node2")  # the store says another owner
    with pytest.raises(AdminError, match="did not pick the backup up within 1 s"):
        await backup_ops.run_on_owner(site.store, "mail1", "backup", {}, claim_timeout=1)
    assert await _requests(site) == []  # withdrawn: it never runs later by surprise

    # The owner goes away before claiming: withdrawn and run here, where the admin lock
    # then says the mail store is mounted by a running resource (this test's).
    notes: list[str] = []
    asked = asyncio.create_task(backup_ops.backup_create(site.store, site.data, "mail1",
                                                         note=notes.append))
    async with asyncio.timeout(10):
        while not await _requests(site):
            await asyncio.sleep(0.02)
    await site.store.delete(keys.OWNER + "mail1")
    with pytest.raises(AdminError, match="online in a running virtual server"):
        await asyncio.wait_for(asked, 10)
    assert "stopped running on node2 before it picked the backup up" in notes[1]
    assert await _requests(site) == []
    await site.own(epoch=EPOCH + 1, node="node2")

    # A request some earlier owner claimed and never finished is failed, clearly.
    orphan = replace(rq.new_request("mail1", "backup", {}, claim_timeout=60),
                     state=rq.RUNNING, node="node0", epoch=EPOCH - 1)
    await rq.submit(site.store, orphan)
    expired = rq.new_request("mail1", "backup", {}, claim_timeout=-1)
    await rq.submit(site.store, expired)
    async with asyncio.timeout(10):
        while True:
            found = {r.id: r for r in await _requests(site)}
            if all(r.state == rq.FAILED for r in found.values()):
                break
            await asyncio.sleep(0.02)
    assert "node0 (epoch 6) stopped owning mail1" in found[orphan.id].error
    assert "nobody claimed it in time" in found[expired.id].error

    # A running request whose claimant lost the virtual server: the waiter fails it.
    stuck = replace(rq.new_request("mail1", "backup", {}, claim_timeout=60),
                    state=rq.RUNNING, node="node1", epoch=EPOCH)
    revision = await rq.submit(site.store, stuck)
    with pytest.raises(AdminError, match="node1 stopped owning mail1"):
        await backup_ops._check_owner(site.store, stuck, revision)


async def test_offline_virtual_server_runs_here_under_the_admin_lock(tmp_path: Path) -> None:
    s = await _site(tmp_path)
    disk = s.env.group.resource("disk")
    await disk.online()
    await s.mail.online()  # once, to create the databases; nobody owns it in the store
    await wait_provisioned(s.store, "mail1", await last_change(s.store))
    await s.db().deliver(msg("one"), [s.a])
    try:
        with pytest.raises(AdminError, match="online in a running virtual server"):
            await backup_ops.backup_create(s.store, s.data, "mail1")
        await s.mail.offline()
        doc, backup_id = await backup_ops.backup_create(s.store, s.data, "mail1")
        notes: list[str] = []
        doc, text = await backup_ops.restore(s.store, s.data, "mail1", from_id=backup_id,
                                             database="SG1/DB1", note=notes.append)
        assert "is not online anywhere: running the restore here" in notes[0]
        doc, text = await backup_ops.store_reset(s.store, s.data, "mail1", "SG1/DB1",
                                                 confirm=True)
        assert "at its next mount" in text
        # Rebuild onto an empty disk: every database and the queue from the set.
        import shutil

        shutil.rmtree(s.data / "disks" / "mail1")
        doc, text = await backup_ops.restore(s.store, s.data, "mail1", from_id=backup_id,
                                             all_databases=True)
        assert sorted(r["database"] for r in doc["restored"]) == ["SG1/DB1", "SG1/DB2"]
        await disk.online()
        await s.mail.online()
        assert tags(s.db(), mailbox=s.a) == ["one"]
    finally:
        await s.mail.offline()
        await s.env.store.close()


async def test_the_schedule_takes_each_slot_once(site: Site) -> None:
    plan = BackupPlan(full=parse_schedule("daily 02:00"),
                      incremental=parse_schedule("every 1h"), keep=2)
    worker = RequestWorker(site.store, _site_of(site), "node1", site.env.logs, plan)
    day = 86400.0
    t0 = 20_000 * day + 1.5 * 3600  # 01:30 UTC
    assert await worker.take_due(t0) is None  # a new schedule starts from now
    hourly = await worker.take_due(t0 + 3600)  # 02:30: the 02:00 slot of both kinds
    assert hourly is not None and hourly.id.startswith("scheduled-full-")
    assert hourly.params == {"incremental": False, "full_if_none": True, "scheduled": True,
                             "keep": 2}
    assert await worker.take_due(t0 + 3600 + 60) is None  # never twice
    other = RequestWorker(site.store, _site_of(site), "node2", site.env.logs, plan)
    assert await other.take_due(t0 + 3600 + 120) is None  # nor by the next owner
    later = await other.take_due(t0 + 2 * 3600)  # 03:30: an incremental
    assert later is not None and later.params["incremental"] is True
    async with asyncio.timeout(20):  # the owner's worker runs them as they come
        while any(r.state != rq.DONE for r in await _requests(site)):
            await asyncio.sleep(0.05)
    listed, _ = await backup_ops.backup_list([site.data / "backups"])
    kinds = [s["kind"] for c in listed["chains"] for s in c["sets"]]
    assert kinds == ["full", "incremental"]


def _site_of(site: Site) -> OwnerSite:
    async def nothing(sg: str, db: str) -> None:
        pass

    root = site.data / "disks" / "mail1" / "mail"
    return OwnerSite("mail1", root, root.parent / "queue" / "queue.sqlite",
                     site.data / "backups", EPOCH, site.mail.store, nothing, nothing)


async def test_a_lost_database_stays_dismounted_while_the_others_serve(site: Site) -> None:
    await site.db().deliver(msg("one"), [site.a])
    _, backup_id = await backup_ops.backup_create(site.store, site.data, "mail1")
    await site.db().deliver(msg("two"), [site.a])
    site.db().path.unlink()  # lost under the running owner
    assert await site.mail.thorough_check()  # the others are fine: no restart, no failover
    assert ("SG1", "DB1") in site.mail.lost and not site.db().mounted
    assert site.db("DB2").mounted and await site.mail.quick_check()
    logged = [e.message for e in await eventlog.read(site.store)]
    assert any("SG1/DB1" in m and "disappeared while mounted" in m and
               "clustermail restore mail1 SG1/DB1" in m for m in logged), logged
    await backup_ops.restore(site.store, site.data, "mail1", from_id=backup_id,
                             database="SG1/DB1")
    assert tags(site.db(), mailbox=site.a) == ["one", "two"] and site.mail.lost == {}

    # Lost while offline: the mount leaves it out, the rest comes online.
    await site.mail.offline()
    site.db().path.unlink()
    await site.mail.online()
    assert "is missing" in site.mail.lost[("SG1", "DB1")]
    assert site.db("DB2").mounted and await site.mail.quick_check()
    await site.db("DB2").deliver(msg("bob"), [site.b])  # the others serve
    await backup_ops.restore(site.store, site.data, "mail1", from_id=backup_id,
                             database="SG1/DB1")
    assert tags(site.db(), mailbox=site.a) == ["one", "two"]
    logged = [e.message for e in await eventlog.read(site.store)]
    assert any("stays dismounted, the others serve" in m for m in logged)
    assert any(m.startswith("mail1: restore done") for m in logged)


async def _record_ids(site: Site) -> dict[tuple[str, str], str]:
    records = await directory(site.store).database_records("mail1")
    return {k: r.id for k, r in records.items()}


async def test_an_empty_disk_never_recreates_the_databases_the_cluster_recorded(
        site: Site) -> None:
    recorded = await _record_ids(site)  # written at the first mount, before any delivery
    assert set(recorded) == {("SG1", "DB1"), ("SG1", "DB2")}
    assert recorded[("SG1", "DB1")] == site.db().journal.log.db_id.hex()  # type: ignore[union-attr]
    await site.db().deliver(msg("one"), [site.a])
    _, backup_id = await backup_ops.backup_create(site.store, site.data, "mail1")

    # The whole disk is lost (databases, logs, the storage groups' manifests, the queue).
    await site.mail.offline()
    disk = site.data / "disks" / "mail1"
    import shutil

    shutil.rmtree(disk)
    disk.mkdir()
    await site.env.group.resource("disk").online()
    await site.mail.online()
    assert set(site.mail.lost) == {("SG1", "DB1"), ("SG1", "DB2")}
    why = site.mail.lost[("SG1", "DB1")]
    assert "is missing and so are the disk's records of it" in why
    assert recorded[("SG1", "DB1")] in why  # what it expected
    assert "clustermail restore mail1 SG1/DB1 --from <backup id>" in why
    assert "clustermail restore mail1 --all --from <backup id>" in why
    assert "clustermail store reset mail1 SG1/DB1 --confirm" in why
    assert not site.db().path.exists() and not site.db("DB2").path.exists()  # not created
    assert await site.mail.quick_check()  # online, nothing served from the lost ones
    logged = [e.message for e in await eventlog.read(site.store)]
    assert any("SG1/DB2 stays dismounted" in m and "--all" in m for m in logged), logged

    # One restored (through the owner): mounted, the record keeps its id.
    await backup_ops.restore(site.store, site.data, "mail1", from_id=backup_id,
                             database="SG1/DB1")
    assert tags(site.db(), mailbox=site.a) == ["one"]
    assert (await _record_ids(site))[("SG1", "DB1")] == recorded[("SG1", "DB1")]
    # The other replaced by an empty one (dial tone): a new database, a new record.
    await backup_ops.store_reset(site.store, site.data, "mail1", "SG1/DB2", confirm=True)
    assert site.db("DB2").mounted and site.mail.lost == {}
    new_id = (await _record_ids(site))[("SG1", "DB2")]
    assert new_id != recorded[("SG1", "DB2")]
    assert new_id == site.db("DB2").journal.log.db_id.hex()  # type: ignore[union-attr]

    # A database the directory adds now is new: created and recorded.
    await directory(site.store).add_database("mail1", "SG1", "DB3")
    await wait_provisioned(site.store, "mail1", await last_change(site.store))
    async with asyncio.timeout(10):
        while ("SG1", "DB3") not in await _record_ids(site):
            await asyncio.sleep(0.02)
    assert site.db("DB3").mounted
    # And all of it mounts again as it is.
    await site.mail.offline()
    await site.mail.online()
    assert site.mail.lost == {} and site.db("DB2").mounted


async def test_an_offline_reset_drops_the_record_so_the_next_mount_creates_it(
        tmp_path: Path) -> None:
    s = await _site(tmp_path)
    disk = s.env.group.resource("disk")
    await disk.online()
    await s.mail.online()
    await wait_provisioned(s.store, "mail1", await last_change(s.store))
    old = (await _record_ids(s))[("SG1", "DB1")]
    await s.mail.offline()
    try:
        import shutil

        shutil.rmtree(s.data / "disks" / "mail1" / "mail")
        await s.mail.online()  # both refused: the cluster recorded them
        assert set(s.mail.lost) == {("SG1", "DB1"), ("SG1", "DB2")}
        await s.mail.offline()
        await backup_ops.store_reset(s.store, s.data, "mail1", "SG1/DB1", confirm=True)
        assert ("SG1", "DB1") not in await _record_ids(s)
        await s.mail.online()
        assert s.db().mounted and ("SG1", "DB1") not in s.mail.lost
        assert ("SG1", "DB2") in s.mail.lost  # not reset: still refused
        assert (await _record_ids(s))[("SG1", "DB1")] not in ("", old)
    finally:
        await s.mail.offline()
        await s.env.store.close()


def _backup_children() -> list[int]:
    """This process's backup child processes."""
    return children_running("clustermail.mail.backup.child")


async def test_a_backup_stopped_by_the_offline_leaves_no_process_and_no_set(
        tmp_path: Path) -> None:
    s = await _site(tmp_path, {"backup_max_rate": 0.1})  # MB/s: minutes for this store
    await s.env.group.resource("disk").online()
    await s.own()
    await s.mail.online()
    try:
        await wait_provisioned(s.store, "mail1", await last_change(s.store))
        for i in range(6):
            await s.db().deliver(msg(f"big{i}", 250_000), [s.a])
        request = rq.new_request("mail1", "backup", {}, claim_timeout=30)
        await rq.submit(s.store, request)
        async with asyncio.timeout(30):  # running, and its progress reached the record
            while (found := await rq.read(s.store, "mail1", request.id)) is None or (
                    found[0].progress is None):
                await asyncio.sleep(0.05)
        assert found[0].state == rq.RUNNING and found[0].progress.what == "SG1/DB1"
        [child] = _backup_children()
        backups = s.data / "backups"
        assert any(n.endswith(".partial") for n in os.listdir(backups))
        await s.mail.offline()  # the resource goes offline mid-backup
        assert not Path(f"/proc/{child}").exists()  # killed and reaped
        assert sorted(os.listdir(backups)) == [".lock"]  # no set, no partial one
        found = await rq.read(s.store, "mail1", request.id)
        assert found is not None and found[0].state == rq.FAILED
        assert "went offline on node1 while it ran; run it again" in found[0].error
    finally:
        await s.mail.offline()
        await s.env.store.close()


async def test_a_failing_backup_process_fails_the_request_clearly(site: Site) -> None:
    await site.mail.offline()
    site.db().path.unlink()  # lost: it stays dismounted while the other serves
    await site.mail.online()
    with pytest.raises(AdminError, match=r"failed on node1: SG1/DB1: .*DB1\.sqlite is "
                                         "missing: restore it before backing up"):
        await backup_ops.backup_create(site.store, site.data, "mail1")
    failed = _only_request(await _requests(site))
    assert failed.state == rq.FAILED and "Traceback" not in failed.error
    assert _backup_children() == []
    assert [n for n in os.listdir(site.data / "backups") if n != ".lock"] == []
