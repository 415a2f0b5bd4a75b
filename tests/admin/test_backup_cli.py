"""The backup commands as a user runs them: `python -m clustermail …` processes against a
real SQLite coordination store and a real mail store on disk (the virtual server offline,
so the commands run here), a cluster backup restored into a real etcd, `node add`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clustermail.admin.cli import main
from clustermail.admin.cluster_backup import EPOCH_MARGIN
from clustermail.cluster import keys
from clustermail.coord import open_store
from clustermail.mail.store import MailStore
from tests.mail.backup.support import A, msg, new_store, tags
from tests.support.etcd_server import EtcdCluster

CONFIG = """
[cluster]
placement = "active-passive"
[nodes.node1]
[nodes.node2]
[virtual_servers.mail1]
preferred_owners = ["node1"]
[virtual_servers.mail1.resources.disk]
type = "disk"
properties = { path = "{data}/disks/mail1" }
[virtual_servers.mail1.resources.store]
type = "mail_store"
depends_on = ["disk"]
properties = { backup_schedule = "daily 02:00", backup_keep = 3 }
[virtual_servers.web.resources.disk]
type = "disk"
properties = { path = "{data}/disks/web" }
"""


class Env:
    def __init__(self, tmp: Path, url: str | None = None) -> None:
        self.tmp = tmp
        self.url = url or f"sqlite://{tmp}/cluster.db"
        self.data = tmp / "data"

    def run(self, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clustermail", *args, "--store", url or self.url,
             "--data", str(self.data)],
            capture_output=True, text=True, timeout=60,
        )

    def ok(self, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        r = self.run(*args, url=url)
        assert r.returncode == 0, f"{args}: {r.stderr}"
        return r

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def fails(self, *args: str, match: str, code: int = 1, url: str | None = None) -> None:
        r = self.run(*args, url=url)
        assert r.returncode == code, f"{args}: rc {r.returncode}, {r.stdout} {r.stderr}"
        assert "Traceback" not in r.stderr
        last = r.stderr.strip().splitlines()[-1]  # after a note on where it runs, if any
        assert last.startswith("clustermail: ") and match in last, r.stderr


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = Env(tmp_path)
    (tmp_path / "cluster.toml").write_text(CONFIG)
    e.ok("config", "apply", str(tmp_path / "cluster.toml"))
    root = e.data / "disks" / "mail1" / "mail"
    store = new_store(root)  # as the virtual server left it: databases, logs, one mailbox
    store.database("SG1", "DB1").deliver_sync(msg("one"), [A])
    store.dismount()
    return e


def mounted_tags(e: Env) -> list[str]:
    """alice's messages, mounting the store as the virtual server would (nothing if the
    database has no mailbox: the resource would create it)."""
    store = MailStore(e.data / "disks" / "mail1" / "mail", create=False)
    store.mount(10)
    try:
        db = store.database("SG1", "DB1")
        return tags(db) if db.has_mailbox(A) else []
    finally:
        store.dismount()


def test_backup_list_verify_restore_prune_reset_here(env: Env) -> None:
    made = env.ok("backup", "create", "mail1")
    backup_id = made.stdout.strip()  # the id alone on standard output
    assert backup_id.startswith("mail1-") and backup_id.endswith("-full")
    assert "is not online anywhere" in made.stderr and "%" in made.stderr  # progress lines
    assert (env.data / "backups" / backup_id / "manifest.json").is_file()
    quiet = env.run("backup", "create", "mail1", "--incremental", "--json")
    assert quiet.returncode == 0 and quiet.stderr == ""  # --json: one document, no progress
    incremental = json.loads(quiet.stdout)
    assert incremental["kind"] == "incremental"

    listed = env.json("backup", "list")
    assert [[s["id"] for s in c["sets"]] for c in listed["chains"]] == [
        [backup_id, incremental["id"]]]
    assert f"└ {incremental['id']}" in env.ok("backup", "list").stdout
    verified = env.json("backup", "verify", incremental["id"])
    assert verified["ok"] and verified["chain"] == [backup_id, incremental["id"]]

    logged = env.json("store", "list", "mail1")["databases"][0]
    assert logged["log_bytes"] > 0 and logged["bytes"] > 0
    assert "MB" in env.ok("store", "list", "mail1").stdout

    (env.data / "disks" / "mail1" / "mail" / "SG1" / "DB1.sqlite").unlink()  # lost
    restored = env.json("restore", "mail1", "SG1/DB1", "--from", incremental["id"])
    assert restored["restored"][0]["database"] == "SG1/DB1"
    assert mounted_tags(env) == ["one"]

    env.json("restore", "mail1", "SG1/DB1", "--from", backup_id, "--recovery")
    dropped = env.json("store", "drop-recovery", "mail1")
    assert len(dropped["dropped"]) == 1
    reset = env.ok("store", "reset", "mail1", "SG1/DB1", "--confirm").stdout
    assert "new empty database at its next mount" in reset.replace("\n", " ")
    assert mounted_tags(env) == []  # dial tone: created empty at the mount

    second = env.ok("backup", "create", "mail1").stdout.strip()
    pruned = env.json("backup", "prune", "--keep", "1")
    assert pruned["deleted"] == [backup_id, incremental["id"]] and pruned["kept"] == [second]


def test_bad_input_is_one_clear_line(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    backup_id = env.ok("backup", "create", "mail1").stdout.strip()
    capsys.readouterr()

    def fails(*args: str, match: str, code: int = 1) -> None:
        """In this process (main() as the console script runs it): many cases, quickly."""
        try:
            rc = main([*args, "--store", env.url, "--data", str(env.data)])
        except SystemExit as exc:  # usage errors
            rc = int(exc.code or 0)
        err = capsys.readouterr().err
        assert rc == code, f"{args}: rc {rc}: {err}"
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert last.startswith("clustermail: ") and match in last, err

    fails("backup", "create", match="give the virtual server")
    fails("backup", "create", "web", match="has no mail_store resource")
    fails("backup", "create", "mail9", match="no virtual server named 'mail9'")
    fails("backup", "create", "mail1", "--storage-group", "SG7", match="no storage group")
    fails("backup", "verify", "nope", match="no backup 'nope'")
    fails("restore", "mail1", "--from", backup_id, match="give either SG/DB or --all")
    fails("restore", "mail1", "DB1", "--from", backup_id, match="expected SG/DB")
    fails("restore", "mail1", "SG1/DB1", match="--from", code=2)
    fails("restore", "mail1", "SG1/DB1", "--from", backup_id, "--until", "yesterday",
              match="not a time")
    fails("restore", "mail1", "SG1/DB9", "--from", backup_id, match="no database DB9")
    fails("restore", "mail1", "SG1/DB1", "--from", "nope", match="no backup 'nope'")
    fails("store", "reset", "mail1", "SG1/DB1", match="repeat with --confirm")
    fails("backup", "prune", "--keep", "0", match="at least 1")
    fails("user", "recover", "ghost@example.test", "--from-recovery", match="no mailbox")
    fails("user", "recover", "alice@example.test", match="--from-recovery")
    fails("restore", "--cluster", "--from", backup_id, match="not a cluster backup")
    fails("node", "add", "node1", match="already a node")
    fails("node", "add", "node3", "--preferred-owner-of", "mail9",
              match="no virtual server named 'mail9'")


DB_RECORD = "/clustermail-databases/mail1/SG1/DB1"


def test_cluster_backup_restores_from_sqlite_into_etcd(env: Env, tmp_path: Path) -> None:
    env.ok("domain", "add", "example.test")
    env.ok("vs", "offline", "mail1")

    async def seed() -> None:
        async with await open_store(env.url) as store:
            await store.put(keys.EPOCH + "mail1", b"4")
            await store.put(DB_RECORD, b'{"id": "ab"}')  # the databases mail1 created

    asyncio.run(seed())
    backup_id = env.ok("backup", "create", "--cluster").stdout.strip()
    assert backup_id.startswith("cluster-")
    assert f"{backup_id}  cluster" in env.ok("backup", "list").stdout
    assert env.json("backup", "verify", backup_id)["ok"]

    etcd = EtcdCluster.start(tmp_path / "etcd", members=1)
    try:
        done = json.loads(env.ok("restore", "--cluster", "--from", backup_id, "--json",
                                 url=etcd.url).stdout)
        assert done["keys"] >= 4

        async def compare() -> None:
            async with await open_store(env.url) as a, await open_store(etcd.url) as b:
                for key in (keys.CONFIG, keys.VS_ADMIN + "mail1",
                            "/clustermail-directory/domains/example.test", DB_RECORD):
                    kv_a, kv_b = await a.get(key), await b.get(key)
                    assert kv_a is not None and kv_b is not None and kv_a.value == kv_b.value
                epoch = await b.get(keys.EPOCH + "mail1")
                assert epoch is not None and int(epoch.value) == 4 + EPOCH_MARGIN

        asyncio.run(compare())
        env.fails("restore", "--cluster", "--from", backup_id, url=etcd.url,
                  match="is not empty")
        shown = json.loads(env.ok("config", "show", url=etcd.url).stdout)
        assert "mail1" in shown["virtual_servers"]
    finally:
        etcd.stop()


def test_node_add_after_evict(env: Env) -> None:
    env.ok("node", "evict", "node1")
    config = json.loads(env.ok("config", "show").stdout)
    assert "node1" not in config["nodes"]
    assert config["virtual_servers"]["mail1"]["preferred_owners"] == []
    added = env.json("node", "add", "node1", "--preferred-owner-of", "mail1")
    assert added["added"] == "node1"
    config = json.loads(env.ok("config", "show").stdout)
    assert "node1" in config["nodes"]
    assert config["virtual_servers"]["mail1"]["preferred_owners"] == ["node1"]
