"""The mail_store resource in a real resource host process (disk + mail_store)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clustermail.coord import open_store
from tests.support.directory import (
    db_epoch,
    db_mailboxes,
    directory,
    last_change,
    wait_provisioned,
)
from tests.support.hostproc import FAST_POLICY, Host


def spec(tmp: Path, epoch: int, vs: str = "mail1") -> dict[str, Any]:
    return {
        "vs": vs,
        "node": "node1",
        "epoch": epoch,
        "store": f"sqlite://{tmp}/cluster.db",
        "data_dir": str(tmp / "data"),
        "resources": [
            {"name": "disk", "type": "disk", "properties": {"path": f"{tmp}/disks/{vs}"},
             "depends_on": [], "policy": FAST_POLICY},
            {"name": "store", "type": "mail_store", "properties": {"retention_days": 3},
             "depends_on": ["disk"], "policy": FAST_POLICY},
        ],
        "offline_resources": [],
    }


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[list[Host]]:
    started: list[Host] = []
    yield started
    for host in started:
        host.kill()


async def add_user(url: str, address: str) -> tuple[str, int]:
    """(the new mailbox's id, the directory's revision)."""
    store = await open_store(url)
    try:
        d = directory(store)
        if not await d.is_local_domain("example.test"):
            await d.add_domain("example.test")
        entry = await d.add_mailbox(address, password="pw", server="mail1")
        return entry.mailbox_id, await last_change(store)
    finally:
        await store.close()


async def provisioned(url: str, revision: int) -> dict[str, Any]:
    store = await open_store(url)
    try:
        return await wait_provisioned(store, "mail1", revision)
    finally:
        await store.close()


def test_host_mounts_follows_the_directory_and_dismounts(
    tmp_path: Path, hosts: list[Host]
) -> None:
    s = spec(tmp_path, epoch=7)
    alice, _ = asyncio.run(add_user(s["store"], "alice@example.test"))
    host = Host(s, tmp_path / "host.stderr")
    hosts.append(host)
    host.events.group("online")
    db = tmp_path / "disks" / "mail1" / "mail" / "SG1" / "DB1.sqlite"
    assert db_mailboxes(db) == [alice]
    assert db_epoch(db) == 7

    bob, revision = asyncio.run(add_user(s["store"], "Bob@example.test"))
    status = asyncio.run(provisioned(s["store"], revision))
    assert status["epoch"] == 7 and status["mailboxes"] == 2 and status["errors"] == []
    assert db_mailboxes(db) == sorted([alice, bob])
    log = (tmp_path / "host.stderr").read_text()
    assert "mounted 1 database(s) with epoch 7" in log
    assert f"created mailbox Bob@example.test ({bob})" in log

    host.send({"cmd": "offline"})
    host.events.group("offline")
    assert host.wait_exit() == 0
    wal = db.with_name(db.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed: a clean dismount


def test_host_with_an_older_epoch_is_refused(tmp_path: Path, hosts: list[Host]) -> None:
    newer = Host(spec(tmp_path, epoch=9), tmp_path / "newer.stderr")
    hosts.append(newer)
    newer.events.group("online")
    newer.send({"cmd": "offline"})
    assert newer.wait_exit() == 0

    older = Host(spec(tmp_path, epoch=8), tmp_path / "older.stderr")
    hosts.append(older)
    failed = older.events.resource("disk", "failed")
    assert "newer owner" in failed["reason"]
    older.events.group("failed")
    assert "store" not in [e.get("resource") for e in older.events.seen
                           if e.get("state") == "online"]
    db = tmp_path / "disks" / "mail1" / "mail" / "SG1" / "DB1.sqlite"
    assert db_epoch(db) == 9
