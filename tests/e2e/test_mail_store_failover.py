"""The mail store in a real cluster: `user add` against running node agents, and a
failover that mounts the same databases on the standby with a newer fencing epoch."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clustermail.mail.store import MailboxDatabase, MountRefusedError
from tests.e2e.harness import ROOT, LocalCluster, cluster_toml, free_addresses, owners, vs_of
from tests.support.directory import db_epoch, db_mailboxes, last_change, wait_provisioned

MAIL_STORE = """
[virtual_servers.mail{v}.resources.store]
type = "mail_store"
depends_on = ["disk"]
"""


def add_user(c: LocalCluster, address: str) -> str:
    """Adds a mailbox; returns its id (the name of its data in the database)."""
    out = subprocess.run(
        [sys.executable, "-m", "clustermail", "user", "add", address, "--server", "mail1",
         "--password-stdin", "--store", c.store_url, "--data", str(c.data), "--json"],
        cwd=ROOT, input="pw\n", capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["mailbox_id"])


def messages(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM message").fetchone()[0])
    finally:
        conn.close()


async def provisioned(c: LocalCluster) -> dict[str, Any]:
    assert c.store is not None
    return await wait_provisioned(c.store, "mail1", await last_change(c.store), timeout=30)


async def test_user_add_and_failover_keep_mailboxes(tmp_path: Path) -> None:
    base, port = free_addresses()
    config = cluster_toml(base, port, nodes=2, servers=1, extra_resource=MAIL_STORE)
    async with LocalCluster(tmp_path, f"sqlite://{tmp_path}/cluster.db", config) as c:
        c.start_all(2)
        status = await c.wait_for(lambda s: owners(s) == {"mail1": "node1"}, what="mail1 up")
        first_epoch = vs_of(status, "mail1")["epoch"]
        assert c.cli("domain", "add", "example.test").returncode == 0
        alice = add_user(c, "alice@example.test")
        assert (await provisioned(c))["node"] == "node1"
        db = c.data / "disks" / "mail1" / "mail" / "SG1" / "DB1.sqlite"
        assert db_mailboxes(db) == [alice]
        assert db_epoch(db) == first_epoch

        # Acknowledged mail (committed through the owner's epoch) survives the failover.
        local = MailboxDatabase(db, create=False)
        local.mount(first_epoch)
        local.deliver_sync(b"Subject: before\r\n\r\nhello\r\n", [alice])
        local.dismount()

        c.kill_node("node1")
        status = await c.wait_for(lambda s: owners(s) == {"mail1": "node2"},
                                  what="mail1 on node2")
        new_epoch = vs_of(status, "mail1")["epoch"]
        assert new_epoch > first_epoch
        assert db_epoch(db) == new_epoch  # the standby mounted with its own epoch
        bob = add_user(c, "bob@example.test")
        record = await provisioned(c)
        assert (record["node"], record["epoch"]) == ("node2", new_epoch)
        assert db_mailboxes(db) == sorted([alice, bob])
        check = c.cli("store", "check", "mail1", "--json")
        assert check.returncode == 0, check.stdout + check.stderr
        assert messages(db) == 1
        with pytest.raises(MountRefusedError):
            MailboxDatabase(db, create=False).mount(first_epoch)
