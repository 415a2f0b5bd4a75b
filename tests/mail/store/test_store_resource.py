"""The mail_store resource in process: real disk folder, real SQLite databases, real store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clustermail.cluster import resource_types
from clustermail.cluster.config import ConfigError, config_from_dict
from clustermail.cluster.resources.base import (
    Properties,
    PropertyError,
    ResourceContext,
    ResourceError,
    StoreHandle,
)
from clustermail.cluster.resources.disk import DiskResource, mount
from clustermail.coord import Store
from clustermail.mail import keys
from clustermail.mail.directory import Directory, MailboxEntry
from clustermail.mail.store import FencedError as StoreFencedError
from clustermail.mail.store import MailStore, QuotaLimits
from clustermail.mail.store.resource import MailStoreResource, NotHomedHereError
from tests.support.directory import (
    WAIT,
    db_epoch,
    db_mailboxes,
    directory,
    last_change,
    wait_provisioned,
)
from tests.support.resource_env import Group


class Logs:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, object]]] = []

    def _add(self, level: str, message: str, fields: dict[str, object]) -> None:
        self.lines.append((level, message, fields))

    def debug(self, message: str, **fields: object) -> None:
        self._add("debug", message, fields)

    def info(self, message: str, **fields: object) -> None:
        self._add("info", message, fields)

    def warning(self, message: str, **fields: object) -> None:
        self._add("warning", message, fields)

    def error(self, message: str, **fields: object) -> None:
        self._add("error", message, fields)

    def text(self) -> str:
        return "\n".join(m for _, m, _ in self.lines)


class Owner:
    """One ownership of virtual server ``vs``: a disk and a mail_store resource."""

    def __init__(self, tmp: Path, epoch: int, vs: str = "mail1",
                 props: dict[str, Any] | None = None) -> None:
        self.store = StoreHandle(f"sqlite://{tmp}/cluster.db")
        self.group = Group()
        self.logs = Logs()
        self.disk: DiskResource = self._make(tmp, vs, epoch, "disk", "disk",
                                             {"path": str(tmp / "disks" / vs)}, ())
        self.mail: MailStoreResource = self._make(tmp, vs, epoch, "mail_store", "store",
                                                  props or {}, ("disk",))

    def _make(self, tmp: Path, vs: str, epoch: int, type_name: str, name: str,
              props: dict[str, Any], deps: tuple[str, ...]) -> Any:
        ctx = ResourceContext(
            vs=vs, node="node1", epoch=epoch, data_dir=tmp, store_url=self.store.url,
            resource=name, type_name=type_name, log=self.logs, _store=self.store,
            _group=self.group,
        )
        resource = resource_types.get(type_name).resource(ctx, Properties(props, name))
        self.group.items[name] = (type_name, resource, deps)
        return resource

    async def online(self) -> None:
        await self.disk.online()
        await self.mail.online()

    async def close(self) -> None:
        await self.mail.offline()
        await self.store.close()


@pytest.fixture
async def coord(tmp_path: Path) -> AsyncIterator[tuple[Store, Directory]]:
    handle = StoreHandle(f"sqlite://{tmp_path}/cluster.db")
    store = await handle.get()
    d = directory(store)
    await d.add_domain("example.test")
    await d.add_mailbox("Alice@example.test", password="a", server="mail1")
    await d.add_mailbox("bob@example.test", password="b", server="mail2")
    yield store, d
    await handle.close()


def msg(subject: str) -> bytes:
    return f"From: x@example.test\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()


async def test_online_creates_homed_mailboxes_and_follows_the_directory(
    tmp_path: Path, coord: tuple[Store, Directory]
) -> None:
    store, d = coord
    await d.add_storage_group("mail1", "SG2")
    await d.add_database("mail1", "SG2", "DB2")
    carol = await d.add_mailbox("carol@example.test", password="c", server="mail1",
                                storage_group="SG2", database="DB2")
    alice = await d.mailbox("alice@example.test")
    assert alice is not None
    owner = Owner(tmp_path, epoch=7, props={"max_message_size": 4096, "quota_warning": 10**6})
    await owner.online()
    try:
        mail = owner.mail
        root = tmp_path / "disks" / "mail1" / "mail"
        # A mailbox's data is named by its id, not by its address.
        assert db_mailboxes(root / "SG1" / "DB1.sqlite") == [alice.mailbox_id]
        assert db_mailboxes(root / "SG2" / "DB2.sqlite") == [carol.mailbox_id]
        assert "mounted 2 database(s) with epoch 7 in" in owner.logs.text()
        db = mail.database_for(carol)
        assert db.settings.max_message_bytes == 4096
        assert db.settings.quota == QuotaLimits(warning=10**6)
        assert await mail.quick_check() and await mail.thorough_check()

        # A user added while online gets a mailbox; a quota override is applied.
        dave = await d.add_mailbox("dave@example.test", password="d", server="mail1")
        await d.set_quota("alice@example.test", QuotaLimits(prohibit_send_receive=50))
        await wait_provisioned(store, "mail1", await last_change(store))
        main = mail.database_for(dave)
        assert sorted(main.list_mailboxes()) == sorted([alice.mailbox_id, dave.mailbox_id])
        assert main.quota(alice.mailbox_id).limits == QuotaLimits(prohibit_send_receive=50)
        result = await main.deliver(msg("hi"), [dave.mailbox_id])
        assert result.delivered[0].uid == 1

        bob = await d.mailbox("bob@example.test")
        assert bob is not None
        with pytest.raises(NotHomedHereError, match="homed on virtual server mail2"):
            mail.database_for(bob)
        ghost = MailboxEntry("g@example.test", "", "mail1", "SG7", "DB1", "x")
        with pytest.raises(NotHomedHereError, match="does not exist"):
            mail.database_for(ghost)
    finally:
        await owner.close()
    assert not await owner.mail.quick_check()
    assert not any(p.stat().st_size for p in root.rglob("*-wal"))  # dismounted cleanly


async def test_retention_purge(tmp_path: Path, coord: tuple[Store, Directory]) -> None:
    owner = Owner(tmp_path, epoch=2, props={"retention_days": 0.5})
    await owner.online()
    try:
        alice = await coord[1].mailbox("alice@example.test")
        assert alice is not None
        db = owner.mail.database_for(alice)
        assert db.settings.retention_days == 0.5
        uid = db.append_sync(alice.mailbox_id, "INBOX", msg("old")).uid
        db.set_flags_sync(alice.mailbox_id, "INBOX", [uid], ["\\Deleted"])
        db.expunge_sync(alice.mailbox_id, "INBOX")
        assert await owner.mail.purge_deleted_items() == 0  # still inside the window
        db.update_settings_sync(retention_days=0.0)
        assert await owner.mail.purge_deleted_items() == 1
        assert db.deleted_items(alice.mailbox_id) == 0
    finally:
        await owner.close()


async def test_mailbox_database_creates_a_mailbox_not_applied_yet(
    tmp_path: Path, coord: tuple[Store, Directory]
) -> None:
    owner = Owner(tmp_path, epoch=3)
    await owner.online()
    try:
        fresh = MailboxEntry("new@example.test", "", "mail1", "SG1", "DB1", "x")
        db = await owner.mail.mailbox_database(fresh)
        assert db.has_mailbox("new@example.test")
    finally:
        await owner.close()


async def test_delivery_creates_a_mailbox_not_applied_yet(
    tmp_path: Path, coord: tuple[Store, Directory]
) -> None:
    """Delivery does not look for each mailbox first: the store refuses a missing one
    (5.1.1), which is then created and delivered to, in the same call."""
    from clustermail.mail.backends import MailStoreService
    from clustermail.mail.queue.delivery import deliver_local

    owner = Owner(tmp_path, epoch=3)
    await owner.online()
    try:
        service = owner.mail
        assert isinstance(service, MailStoreService)  # as the protocol resources find it
        known = MailboxEntry("known@example.test", "", "mail1", "SG1", "DB1", "x")
        await owner.mail.mailbox_database(known)
        fresh = MailboxEntry("fresh@example.test", "", "mail1", "SG1", "DB1", "y")
        elsewhere = MailboxEntry("far@example.test", "", "mail2", "SG1", "DB1", "z")
        message = b"Subject: hi\r\n\r\nhello\r\n"
        results = await deliver_local(service, message, [known, fresh, elsewhere])
        assert [(r.address, r.delivered, r.code) for r in results] == [
            ("known@example.test", True, "2.0.0"),
            ("fresh@example.test", True, "2.0.0"),
            ("far@example.test", False, "4.3.0"),  # homed on another virtual server
        ]
        db = owner.mail.database_for(fresh)
        for entry in (known, fresh):
            uids = db.list_messages(entry.mailbox_id, "INBOX").uids
            assert [db.fetch_raw(entry.mailbox_id, "INBOX", u) for u in uids] == [message]
    finally:
        await owner.close()


async def test_refuses_an_older_epoch(tmp_path: Path, coord: tuple[Store, Directory]) -> None:
    newer = Owner(tmp_path, epoch=9)
    await newer.online()
    await newer.close()
    older = Owner(tmp_path, epoch=8)
    with pytest.raises(ResourceError, match="newer owner") as err:
        await older.online()
    assert err.value.permanent
    await older.store.close()

    # The databases fence too, even if the disk's epoch file were lost.
    (tmp_path / "disks" / "mail1" / ".clustermail" / "epoch").unlink()
    stale = Owner(tmp_path, epoch=8)
    await stale.disk.online()
    with pytest.raises(ResourceError, match="epoch 8 refused") as err:
        await stale.mail.online()
    assert err.value.permanent
    assert not stale.mail._mounted
    await stale.store.close()


async def test_a_newer_owner_fails_the_checks_of_the_old_one(
    tmp_path: Path, coord: tuple[Store, Directory]
) -> None:
    _, d = coord
    old = Owner(tmp_path, epoch=4)
    await old.online()
    try:
        disk = tmp_path / "disks" / "mail1"
        mount(disk, 5)  # a new owner took the disk…
        new = MailStore(disk / "mail", create=False)
        new.mount(5)  # …and mounted the databases
        new.dismount()
        assert db_epoch(disk / "mail" / "SG1" / "DB1.sqlite") == 5
        assert not await old.mail.thorough_check()
        # Its writes are refused: applying a new user stops the follower for good,
        # and the quick check fails from then on.
        late = await d.add_mailbox("late@example.test", password="x", server="mail1")
        follower = old.mail._follower
        assert follower is not None
        async with asyncio.timeout(WAIT):
            await follower
        assert not await old.mail.quick_check()
        assert "fenced" in old.logs.text()
        with pytest.raises(StoreFencedError):
            old.mail.database_for(late).create_mailbox_sync("late@example.test")
    finally:
        await old.close()


def test_properties_and_schema() -> None:
    owner_tmp = Path("/nonexistent")
    with pytest.raises(PropertyError, match="subdirectory"):
        Owner(owner_tmp, 1, props={"path": "../escape"})
    with pytest.raises(PropertyError, match="max_message_size"):
        Owner(owner_tmp, 1, props={"max_message_size": 0})

    def config(props: dict[str, Any]) -> dict[str, Any]:
        return {
            "nodes": {"node1": {}},
            "virtual_servers": {"mail1": {"resources": {
                "disk": {"type": "disk", "properties": {"path": "/tmp/x"}},
                "store": {"type": "mail_store", "depends_on": ["disk"], "properties": props},
            }}},
        }

    ok = config_from_dict(config({"path": "mail", "quota_warning": 100, "retention_days": 7}))
    assert ok.virtual_servers[0].resource("store") is not None
    with pytest.raises(ConfigError) as info:
        config_from_dict(config({"path": "/abs", "max_message_size": -1, "colour": "red"}))
    text = str(info.value)
    assert "properties.path" in text and "subdirectory" in text
    assert "max_message_size" in text and "unknown property" in text


# --------------------------------------------------------------------------- identity


def inbox(db: Any, mailbox: str) -> tuple[int, int]:
    """(UIDVALIDITY, messages) of a mailbox's INBOX."""
    status = db.status(mailbox, "INBOX")
    return status.uidvalidity, status.messages


async def test_a_re_added_address_gets_a_new_mailbox_and_reconnect_brings_the_old_back(
    tmp_path: Path, coord: tuple[Store, Directory]
) -> None:
    store, d = coord
    owner = Owner(tmp_path, epoch=3)
    await owner.online()
    try:
        old = await d.mailbox("alice@example.test")
        assert old is not None
        db = owner.mail.database_for(old)
        await db.deliver(msg("for the first alice"), [old.mailbox_id])
        first = inbox(db, old.mailbox_id)
        assert first[1] == 1

        await d.remove_mailbox("alice@example.test")
        new = await d.add_mailbox("alice@example.test", password="a2", server="mail1")
        await wait_provisioned(store, "mail1", await last_change(store))
        # The new alice has a new, empty mailbox with its own UIDVALIDITY; the old data
        # stays, disconnected.
        fresh = inbox(db, new.mailbox_id)
        assert fresh[1] == 0 and fresh[0] != first[0]
        assert inbox(db, old.mailbox_id) == first
        assert [x.mailbox_id for x in await d.list_disconnected("mail1")] == [old.mailbox_id]

        # Reconnecting gives the address its old mailbox back, UIDVALIDITY unchanged.
        entry, swapped = await d.reconnect_mailbox("alice@example.test", old.mailbox_id)
        assert swapped is not None and swapped.mailbox_id == new.mailbox_id
        await wait_provisioned(store, "mail1", await last_change(store))
        assert inbox(owner.mail.database_for(entry), entry.mailbox_id) == first
        assert sorted(db.list_mailboxes()) == sorted([old.mailbox_id, new.mailbox_id])
    finally:
        await owner.close()


async def test_mailboxes_from_before_ids_keep_their_mail(
    tmp_path: Path, coord: tuple[Store, Directory]
) -> None:
    store, d = coord
    # A disk of an older version: data named by address, one of them removed back then
    # (no record of it), and a directory entry without an id.
    legacy = MailStore(tmp_path / "disks" / "mail1" / "mail")
    legacy.mount(1)
    old_db = legacy.database("SG1", "DB1")
    for address in ("Alice@example.test", "gone@example.test"):
        old_db.create_mailbox_sync(address)
        old_db.deliver_sync(msg(f"old mail of {address}"), [address])
    before = inbox(old_db, "Alice@example.test")
    legacy.dismount()
    alice = await d.mailbox("alice@example.test")
    assert alice is not None
    record = json.loads(alice.to_json())
    del record["mailbox_id"]
    await store.put(f"{keys.DIRECTORY}mailboxes/alice@example.test", json.dumps(record))

    owner = Owner(tmp_path, epoch=2)
    await owner.online()
    try:
        entry = await d.mailbox("alice@example.test")
        assert entry is not None and entry.mailbox_id == "Alice@example.test"
        db = owner.mail.database_for(entry)
        assert inbox(db, entry.mailbox_id) == before  # nothing lost, nothing renumbered
        assert sorted(db.list_mailboxes()) == ["Alice@example.test", "gone@example.test"]
        # The mailbox removed before ids existed is listed as disconnected, so it can be
        # reconnected or purged.
        [gone] = await d.list_disconnected()
        assert (gone.mailbox_id, gone.address, gone.home) == (
            "gone@example.test", "gone@example.test", ("mail1", "SG1", "DB1"))
        assert "recorded 1 mailbox(es) no address points to" in owner.logs.text()
    finally:
        await owner.close()
