"""The backup routes of the admin API over a real socket, a real SQLite coordination store
and a real mail store on disk (mail1 has no owner, so the operations run on the admin
service's machine, as `clustermail backup …` does there): create, list, verify, restore
(rolled forward, to a time, not at all, into the recovery storage group), a mailbox's
recovery, the recovery group's drop, dial tone, prune, the cluster backup; each change in
the event log with who made it. Authentication, roles and bad input of these routes are
covered with every other route in test_routes.py."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clustermail.cluster import eventlog
from clustermail.mail.directory import Directory
from clustermail.mail.store import MailStore
from tests.mail.backup.support import msg, tags
from tests.support.api_server import VIEWER, Api, running_api

A = "alice@example.test"


@dataclass
class Site:
    api: Api
    root: Path  # mail1's mail store
    mailbox: str  # alice's mailbox id: what names her data in the database

    def deliver(self, tag: str) -> None:
        store = MailStore(self.root, create=False)
        store.mount(0)  # mail1 never had an owner: fencing epoch 0
        try:
            store.database("SG1", "DB1").deliver_sync(msg(tag), [self.mailbox])
        finally:
            store.dismount()

    def tags(self) -> list[str]:
        return tags(self.root / "SG1" / "DB1.sqlite", mailbox=self.mailbox)

    def mounted_tags(self) -> list[str]:
        """alice's messages, mounting the store as the virtual server would."""
        store = MailStore(self.root, create=False)
        store.mount(0)
        try:
            db = store.database("SG1", "DB1")
            return tags(db, mailbox=self.mailbox) if db.has_mailbox(self.mailbox) else []
        finally:
            store.dismount()

    async def ok(self, method: str, path: str, body: Any = None, *,
                 status: int = 200) -> Any:
        got, answer = await self.api.call(method, "/api/v1" + path, json_body=body)
        assert got == status, (method, path, answer)
        return answer


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with running_api(tmp_path) as api:
        directory = Directory(api.store)
        try:
            await directory.add_domain("example.test")
            entry = await directory.add_mailbox(A, password="alice-password", server="mail1")
        finally:
            await directory.close()
        # mail1's mail store as the virtual server left it when it went offline.
        root = api.data.resolve() / "disks" / "mail1" / "mail"
        store = MailStore(root)
        store.mount(0)
        store.database("SG1", "DB1").create_mailbox_sync(entry.mailbox_id)
        store.dismount()
        s = Site(api, root, entry.mailbox_id)
        s.deliver("one")
        yield s


async def test_backup_restore_and_recovery_through_the_api(site: Site) -> None:
    full = await site.ok("POST", "/virtual-servers/mail1/backups", {}, status=201)
    assert full["kind"] == "full" and full["text"] == full["id"]
    assert Path(full["path"]).parent == site.api.data.resolve() / "backups"
    site.deliver("two")
    incremental = await site.ok("POST", "/virtual-servers/mail1/backups",
                                {"incremental": True, "storage_groups": ["SG1"],
                                 "timeout": 60}, status=201)
    assert incremental["kind"] == "incremental"

    status, listed = await site.api.call("GET", "/api/v1/backups?vs=mail1", user=VIEWER)
    assert status == 200
    assert [[s["id"] for s in c["sets"]] for c in listed["chains"]] == [
        [full["id"], incremental["id"]]]
    status, verified = await site.api.call(
        "GET", f"/api/v1/backups/{incremental['id']}/verify", user=VIEWER)
    assert status == 200 and verified["ok"]
    assert verified["chain"] == [full["id"], incremental["id"]]

    # Lost: restored from the full backup and rolled forward by the log, to now.
    (site.root / "SG1" / "DB1.sqlite").unlink()
    restored = await site.ok("POST", "/virtual-servers/mail1/restore",
                             {"from": full["id"], "database": "SG1/DB1",
                              "until": time.time()})
    assert restored["restored"][0]["database"] == "SG1/DB1"
    assert site.tags() == ["one", "two"]
    # The backup as it was.
    await site.ok("POST", "/virtual-servers/mail1/restore",
                  {"from": full["id"], "database": "SG1/DB1", "roll_forward": False})
    assert site.tags() == ["one"]

    # "two" comes back from the recovery storage group, without a second "one".
    recovered = await site.ok("POST", "/virtual-servers/mail1/restore",
                              {"from": incremental["id"], "database": "SG1/DB1",
                               "recovery": True})
    assert "recovery storage group" in recovered["text"]
    merged = await site.ok("POST", f"/users/{A}/recover", {"since": "2000-01-01T00:00"})
    assert (merged["copied"], merged["skipped"]) == (1, 1)
    assert site.tags() == ["one", "two"]
    dropped = await site.ok("DELETE", "/virtual-servers/mail1/recovery?storage_group=SG1")
    assert len(dropped["dropped"]) == 1
    status, body = await site.api.call("POST", f"/api/v1/users/{A}/recover", json_body={})
    assert status == 409 and "no recovery database" in body["error"]["message"]

    # Dial tone: an empty database at the next mount, the old one kept beside.
    reset = await site.ok("POST", "/virtual-servers/mail1/storage/SG1/databases/DB1/reset",
                          {"confirm": True})
    assert reset["kept"] and "new empty database" in reset["text"].replace("\n", " ")
    assert site.mounted_tags() == []

    cluster = await site.ok("POST", "/cluster-backups", status=201)
    assert cluster["id"].startswith("cluster-") and cluster["keys"] > 0
    latest = await site.ok("POST", "/virtual-servers/mail1/backups", {}, status=201)
    pruned = await site.ok("POST", "/backups/prune", {"keep": 1, "vs": "mail1"})
    assert pruned["deleted"] == [full["id"], incremental["id"]]
    assert pruned["kept"] == [latest["id"]]
    listed = await site.ok("GET", "/backups")
    assert [c["id"] for c in listed["cluster"]] == [cluster["id"]]
    status, verified = await site.api.call("GET", f"/api/v1/backups/{cluster['id']}/verify",
                                           user=VIEWER)
    assert status == 200 and verified["ok"]

    changes = [e for e in await eventlog.read(site.api.store) if e.event == "admin_change"]
    assert [e.extra["action"] for e in changes] == [
        "backup.create", "backup.create", "backup.restore", "backup.restore",
        "backup.restore", "user.recover", "store.drop_recovery", "store.reset",
        "backup.create_cluster", "backup.create", "backup.prune"]
    assert all(e.extra["user"] == "oper" and e.message.startswith("oper: ")
               for e in changes)
    assert changes[0].vs == "mail1" and changes[0].extra["backup"] == full["id"]


async def test_restore_of_a_missing_backup_and_of_a_missing_store(site: Site) -> None:
    status, body = await site.api.call("POST", "/api/v1/virtual-servers/mail1/restore",
                                       json_body={"from": "nope", "database": "SG1/DB1"})
    assert status == 409 and "nope" in body["error"]["message"]
    status, body = await site.api.call("POST", "/api/v1/virtual-servers/mail2/backups",
                                       json_body={})
    assert status == 409 and "no mail store of mail2" in body["error"]["message"]
    assert site.tags() == ["one"]


async def test_backup_commands_through_the_api(site: Site) -> None:
    from tests.admin.api.test_remote_cli import cli

    url = site.api.url
    code, out, err = await cli("backup", "create", "mail1", "--api", url)
    assert code == 0, err
    backup_id = out.strip()
    assert backup_id.startswith("mail1-") and backup_id.endswith("-full")
    code, out, err = await cli("backup", "list", "--json", "--vs", "mail1", "--api", url)
    assert code == 0, err
    assert [c["sets"][0]["id"] for c in json.loads(out)["chains"]] == [backup_id]
    code, out, err = await cli("backup", "verify", backup_id, "--api", url)
    assert code == 0 and "ok" in out, err
    site.deliver("two")
    code, out, err = await cli("restore", "mail1", "SG1/DB1", "--from", backup_id,
                               "--no-roll-forward", "--json", "--api", url)
    assert code == 0, err
    assert json.loads(out)["restored"][0]["database"] == "SG1/DB1"
    assert site.tags() == ["one"]
    code, _, err = await cli("backup", "create", "mail1", "--to", "/tmp", "--api", url)
    assert code == 1 and "--to is not available through --api" in err
    code, _, err = await cli("store", "reset", "mail1", "SG1/DB1", "--api", url,
                             user=VIEWER)
    assert code == 1 and "--confirm" in err
    code, _, err = await cli("store", "reset", "mail1", "SG1/DB1", "--confirm", "--api", url,
                             user=VIEWER)
    assert code == 1 and "needs the operator role (403 forbidden)" in err
