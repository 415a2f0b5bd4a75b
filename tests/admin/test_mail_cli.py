"""The mail commands of the CLI, end to end: `python -m clustermail …` processes against a
real SQLite coordination store, and (for move/recover/check) real resource hosts."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clustermail.cluster import keys
from clustermail.cluster.config import load_config
from clustermail.cluster.hostspec import host_spec
from clustermail.coord import open_store
from clustermail.mail.store import MailboxDatabase, flags
from tests.support.directory import db_mailboxes, last_change, wait_provisioned
from tests.support.hostproc import Host

CONFIG = """
[cluster]
placement = "active-passive"
[nodes.node1]
[nodes.node2]
[virtual_servers.mail1.resources.disk]
type = "disk"
properties = { path = "{data}/disks/mail1" }
[virtual_servers.mail1.resources.store]
type = "mail_store"
depends_on = ["disk"]
properties = { retention_days = 7 }
[virtual_servers.mail2.resources.disk]
type = "disk"
properties = { path = "{data}/disks/mail2" }
[virtual_servers.mail2.resources.store]
type = "mail_store"
depends_on = ["disk"]
properties = { path = "boxes" }
[virtual_servers.web.resources.disk]
type = "disk"
properties = { path = "{data}/disks/web" }
"""
EPOCH = 3


@dataclass
class Env:
    tmp: Path
    url: str
    data: Path

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clustermail", *args, "--store", self.url,
             "--data", str(self.data)],
            input=stdin, capture_output=True, text=True, timeout=60,
        )

    def ok(self, *args: str, stdin: str = "") -> str:
        r = self.run(*args, stdin=stdin)
        assert r.returncode == 0, f"{args}: {r.stderr}"
        return r.stdout

    def json(self, *args: str, stdin: str = "") -> Any:
        return json.loads(self.ok(*args, "--json", stdin=stdin))

    def fails(self, *args: str, match: str, stdin: str = "", code: int = 1) -> None:
        r = self.run(*args, stdin=stdin)
        assert r.returncode == code, f"{args}: rc {r.returncode}, {r.stdout} {r.stderr}"
        assert "Traceback" not in r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("clustermail: "), r.stderr
        assert match in lines[0], lines[0]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = Env(tmp_path, f"sqlite://{tmp_path}/cluster.db", tmp_path / "data")
    (tmp_path / "cluster.toml").write_text(CONFIG)
    e.ok("config", "check", str(tmp_path / "cluster.toml"))
    e.ok("config", "apply", str(tmp_path / "cluster.toml"))
    return e


# Dozens of CLI processes (imports ~1-2 s each on a busy machine).
@pytest.mark.timeout(360)
def test_directory_commands(env: Env) -> None:
    assert env.json("domain", "add", "Example.TEST") == {"domain": "example.test",
                                                         "catch_all": None}
    env.ok("domain", "add", "other.test")
    alice = env.json("user", "add", "Alice@example.test", "--server", "mail1", "--name",
                     "Alice A", "--password-stdin", stdin="secret one\n")
    assert len(alice.pop("mailbox_id")) == 32  # its own, new mailbox
    assert alice == {"address": "Alice@example.test", "display_name": "Alice A",
                     "server": "mail1", "storage_group": "SG1", "database": "DB1",
                     "quota": None, "enabled": True}
    env.ok("store", "add-group", "mail2", "SG2")
    env.ok("store", "add-database", "mail2", "SG2", "DB7")
    env.ok("user", "add", "bob@other.test", "--server", "mail2", "--database", "SG2/DB7",
           "--password-stdin", stdin="pw\n")
    users = env.json("user", "list")
    assert [(u["address"], u["server"], u["database"]) for u in users] == [
        ("Alice@example.test", "mail1", "DB1"), ("bob@other.test", "mail2", "DB7")]
    assert [u["address"] for u in env.json("user", "list", "--server", "mail2")] == [
        "bob@other.test"]
    assert "Alice@example.test" in env.ok("user", "list")  # the table
    env.fails("user", "list", "--server", "mail9", match="no virtual server named 'mail9'")

    env.ok("alias", "add", "Postmaster@example.test", "alice@EXAMPLE.test")
    assert env.json("alias", "list") == [{"alias": "Postmaster@example.test",
                                          "mailbox": "Alice@example.test"}]
    env.ok("group", "add-member", "team@example.test", "alice@example.test")
    env.ok("group", "add-member", "team@example.test", "bob@other.test")
    assert env.json("group", "list") == [{"group": "team@example.test",
                                          "members": ["Alice@example.test", "bob@other.test"]}]
    shown = env.json("user", "show", "ALICE@example.test")
    assert shown["aliases"] == ["Postmaster@example.test"]
    assert shown["groups"] == ["team@example.test"]
    assert "password" not in json.dumps(shown)
    assert f"mailbox id: {shown['mailbox_id']}" in env.ok("user", "show", "alice@example.test")

    env.ok("domain", "catch-all", "example.test", "postmaster@example.test")
    assert env.json("domain", "list") == [
        {"domain": "example.test", "catch_all": "Postmaster@example.test", "mailboxes": 1},
        {"domain": "other.test", "catch_all": None, "mailboxes": 1}]
    env.ok("domain", "catch-all", "example.test", "--none")

    quota = env.json("user", "quota", "alice@example.test", "--warning", "1MiB",
                     "--prohibit-send-receive", "2GB")
    assert quota["quota"] == {"warning": 1048576, "prohibit_send": None,
                              "prohibit_send_receive": 2_000_000_000}
    assert env.json("user", "quota", "alice@example.test", "--default")["quota"] is None
    assert env.json("user", "disable", "alice@example.test")["enabled"] is False
    assert env.json("user", "enable", "alice@example.test")["enabled"] is True
    env.ok("user", "passwd", "alice@example.test", "--password-stdin", stdin="secret two\n")

    plan = env.json("store", "list", "mail2")
    assert [(r["storage_group"], r["database"], r["mailboxes"], r["created"])
            for r in plan["databases"]] == [("SG1", "DB1", 0, False), ("SG2", "DB7", 1, False)]

    removed = env.run("user", "remove", "alice@example.test")
    assert removed.returncode == 0 and "data stays" in removed.stdout
    assert env.json("alias", "list") == []
    assert env.json("group", "list") == [{"group": "team@example.test",
                                          "members": ["bob@other.test"]}]
    env.ok("group", "remove-member", "team@example.test", "bob@other.test")
    assert env.json("group", "list") == []
    env.ok("domain", "remove", "example.test")
    assert [d["domain"] for d in env.json("domain", "list")] == ["other.test"]


# Dozens of CLI processes (imports ~1-2 s each on a busy machine).
@pytest.mark.timeout(360)
def test_bad_input_is_one_clear_line(env: Env) -> None:
    env.ok("domain", "add", "example.test")
    env.ok("user", "add", "alice@example.test", "--server", "mail1", "--password-stdin",
           stdin="pw\n")
    env.ok("alias", "add", "info@example.test", "alice@example.test")
    pw = "pw\n"
    cases: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def fails(*args: str, **kw: Any) -> None:
        cases.append((args, kw))

    fails("domain", "add", "EXAMPLE.test", match="already exists")
    fails("domain", "add", "bad_domain.test", match="'_' is not allowed")
    fails("domain", "remove", "example.test",
          match="still holds 1 mailbox, 1 alias: remove them first")
    fails("domain", "remove", "nowhere.test", match="no domain")
    fails("user", "add", "ALICE@example.test", "--server", "mail1", "--password-stdin",
          stdin=pw, match="already a mailbox")
    fails("user", "add", "info@example.test", "--server", "mail1", "--password-stdin",
          stdin=pw, match="already an alias")
    fails("user", "add", "x@nowhere.test", "--server", "mail1", "--password-stdin",
          stdin=pw, match="not a local domain")
    fails("user", "add", "not-an-address", "--server", "mail1", "--password-stdin",
          stdin=pw, match="no '@'")
    fails("user", "add", "a b@example.test", "--server", "mail1", "--password-stdin",
          stdin=pw, match="space")
    fails("user", "add", "x@example.test", "--server", "mail9", "--password-stdin",
          stdin=pw, match="no virtual server named 'mail9'")
    fails("user", "add", "x@example.test", "--server", "web", "--password-stdin",
          stdin=pw, match="has no mail_store resource")
    fails("user", "add", "x@example.test", "--server", "mail1", "--database", "SG2/DB1",
          "--password-stdin", stdin=pw, match="no database SG2/DB1")
    fails("user", "add", "x@example.test", "--server", "mail1", "--database", "DB1",
          "--password-stdin", stdin=pw, match="STORAGE_GROUP/DATABASE")
    fails("user", "add", "x@example.test", "--server", "mail1", match="--password-stdin")
    fails("user", "add", "x@example.test", "--server", "mail1", "--password-stdin",
          stdin="\n", match="no password")
    fails("user", "add", "x@example.test", match="--server", code=2)
    fails("user", "show", "ghost@example.test", match="no mailbox")
    fails("user", "remove", "ghost@example.test", match="no mailbox")
    fails("user", "quota", "alice@example.test", "--warning", "lots", match="invalid size")
    fails("user", "quota", "alice@example.test", match="give --default")
    fails("alias", "add", "x@example.test", "ghost@example.test", match="not a mailbox")
    fails("alias", "remove", "ghost@example.test", match="no alias")
    fails("group", "add-member", "g@example.test", "ghost@example.test",
          match="not a mailbox, alias or group")
    fails("group", "remove-member", "g@example.test", "alice@example.test",
          match="no group")
    fails("store", "add-group", "mail1", "SG1", match="already exists")
    fails("store", "add-group", "mail1", "bad/name", match="invalid storage group name")
    fails("store", "add-database", "mail1", "SG9", "DB1", match="no storage group 'SG9'")
    fails("store", "list", "mail9", match="no virtual server")
    fails("store", "check", "mail1", match="bring mail1 online once")
    fails("user", "move", "alice@example.test", "--server", "mail1",
          match="already homed on mail1/SG1/DB1")
    fails("user", "move", "alice@example.test", "--server", "web",
          match="no mail_store")
    fails("user", "recover-deleted", "alice@example.test", "--since", "yesterday",
          match="--since")
    fails("user", "reconnect", "alice@example.test", "--mailbox", "nope",
          match="no disconnected mailbox 'nope'")
    fails("user", "reconnect", "alice@example.test", "--mailbox", "a\tb",
          match="invalid mailbox id")
    fails("user", "reconnect", "alice@example.test", match="--mailbox", code=2)
    fails("user", "purge", "--mailbox", "nope", "--confirm",
          match="no disconnected mailbox 'nope'")
    fails("user", "disconnected", "--server", "bad name", match="invalid virtual server name")
    # Independent, read-only failures: run a few at a time to keep the suite quick.
    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(env.fails, *args, **kw) for args, kw in cases]:
            future.result()


# --------------------------------------------------------------------------- with hosts


@pytest.fixture
def running(env: Env) -> Iterator[dict[str, Host]]:
    """mail1 and mail2 online in real resource hosts, as a node agent would start them."""
    config = load_config(env.tmp / "cluster.toml").to_dict()

    async def prepare() -> None:
        store = await open_store(env.url)
        for vs in ("mail1", "mail2"):
            await store.put(keys.EPOCH + vs, str(EPOCH))  # what the agent records
        await store.close()

    asyncio.run(prepare())
    hosts: dict[str, Host] = {}
    try:
        for vs in ("mail1", "mail2"):
            spec = host_spec(config, vs, node="node1", epoch=EPOCH, store_url=env.url,
                             data_dir=env.data, offline_resources=[])
            hosts[vs] = Host(spec, env.tmp / f"{vs}.stderr")
        for host in hosts.values():
            host.events.group("online")
        yield hosts
    finally:
        for host in hosts.values():
            host.kill()


def provisioned(env: Env, vs: str) -> dict[str, Any]:
    async def wait() -> dict[str, Any]:
        store = await open_store(env.url)
        try:
            return await wait_provisioned(store, vs, await last_change(store))
        finally:
            await store.close()

    return asyncio.run(wait())


def mounted(path: Path) -> MailboxDatabase:
    db = MailboxDatabase(path, create=False)
    db.mount(EPOCH)
    return db


def msg(n: int) -> bytes:
    return f"From: a@example.test\r\nSubject: message {n}\r\n\r\nbody {n}\r\n".encode()


def test_move_recover_and_check_against_running_virtual_servers(
    env: Env, running: dict[str, Host]
) -> None:
    env.ok("domain", "add", "example.test")
    for user in ("alice", "bob"):
        env.ok("user", "add", f"{user}@example.test", "--server", "mail1", "--password-stdin",
               stdin="pw\n")
    assert provisioned(env, "mail1")["mailboxes"] == 2
    mail1 = env.data / "disks" / "mail1" / "mail" / "SG1" / "DB1.sqlite"
    mail2 = env.data / "disks" / "mail2" / "boxes" / "SG1" / "DB1.sqlite"
    alice, bob = (env.json("user", "show", f"{u}@example.test")["mailbox_id"]
                  for u in ("alice", "bob"))
    assert db_mailboxes(mail1) == sorted([alice, bob])

    # Mail for alice in two folders, with flags, keywords and internal dates; a deleted
    # (retained) message for bob.
    db = mounted(mail1)
    try:
        for n in range(3):
            db.append_sync(alice, "INBOX", msg(n), internaldate=1_700_000_000 + n,
                           flag_names=["\\Seen", "$Work"] if n == 1 else [])
        db.create_folder_sync(alice, "Projects/2026")
        db.subscribe_sync(alice, "Projects/2026")
        db.append_sync(alice, "Projects/2026", msg(9), flag_names=["\\Flagged"],
                       internaldate=1_600_000_000)
        uid = db.append_sync(bob, "INBOX", msg(5)).uid
        db.set_flags_sync(bob, "INBOX", [uid], ["\\Deleted"])
        db.expunge_sync(bob, "INBOX")
        source_validity = db.status(alice, "INBOX").uidvalidity
    finally:
        db.dismount()

    recovered = env.json("user", "recover-deleted", "bob@example.test")
    assert [r["folder"] for r in recovered["recovered"]] == ["INBOX"]

    moved = env.json("user", "move", "alice@example.test", "--server", "mail2")
    assert (moved["from"], moved["to"], moved["messages"]) == (
        "mail1/SG1/DB1", "mail2/SG1/DB1", 4)
    assert moved["source_deleted"] is True
    assert env.json("user", "show", "alice@example.test")["server"] == "mail2"
    assert db_mailboxes(mail1) == [bob]  # the moved mailbox keeps its id
    assert provisioned(env, "mail2")["errors"] == []  # the new home found it in place
    db = mounted(mail2)
    try:
        folders = {f.name: f for f in db.list_folders(alice)}
        assert folders["Projects/2026"].subscribed
        inbox = db.list_messages(alice, "INBOX")
        assert list(inbox.dates) == [1_700_000_000, 1_700_000_001, 1_700_000_002]
        assert inbox.flags[1] & flags.SEEN and not inbox.flags[0] & flags.SEEN
        assert set(inbox.keywords.values()) == {"$Work"}
        assert db.fetch_raw(alice, "INBOX", inbox.uids[2]) == msg(2)
        projects = db.list_messages(alice, "Projects/2026")
        assert projects.flags[0] & flags.FLAGGED and projects.dates[0] == 1_600_000_000
        assert db.status(alice, "INBOX").uidvalidity != source_validity
    finally:
        db.dismount()
    assert "UIDVALIDITY changed" in env.ok("user", "move", "alice@example.test", "--server",
                                           "mail1")

    report = env.json("store", "check", "mail1")
    assert [d["ok"] for d in report["databases"]] == [True]
    conn = sqlite3.connect(mail1)
    with conn:
        conn.execute("UPDATE mailbox SET used_bytes = used_bytes + 5 WHERE name = ?", (bob,))
    conn.close()
    broken = env.run("store", "check", "mail1")
    assert broken.returncode == 1 and "usage says" in broken.stdout
    assert "repaired" in env.ok("store", "check", "mail1", "--repair")
    assert "clean" in env.ok("store", "check", "mail1")

    for host in running.values():
        host.send({"cmd": "offline"})
        assert host.wait_exit() == 0


def test_disconnected_reconnect_and_purge_against_running_virtual_servers(
    env: Env, running: dict[str, Host]
) -> None:
    env.ok("domain", "add", "example.test")
    env.ok("user", "add", "alice@example.test", "--server", "mail1", "--password-stdin",
           stdin="pw\n")
    first = env.json("user", "show", "alice@example.test")["mailbox_id"]
    assert provisioned(env, "mail1")["mailboxes"] == 1
    path = env.data / "disks" / "mail1" / "mail" / "SG1" / "DB1.sqlite"
    db = mounted(path)
    try:
        db.deliver_sync(msg(1), [first])
        first_validity = db.status(first, "INBOX").uidvalidity
    finally:
        db.dismount()

    # Removed and added again: a new, empty mailbox; the old one is kept, disconnected.
    removed = " ".join(env.ok("user", "remove", "alice@example.test").split())  # unwrapped
    assert f"disconnected mailbox {first}" in removed and "user reconnect" in removed
    env.ok("user", "add", "alice@example.test", "--server", "mail1", "--password-stdin",
           stdin="pw2\n")
    second = env.json("user", "show", "alice@example.test")["mailbox_id"]
    assert second != first
    assert provisioned(env, "mail1")["mailboxes"] == 1
    assert db_mailboxes(path) == sorted([first, second])
    [listed] = env.json("user", "disconnected")
    assert (listed["mailbox_id"], listed["address"], listed["server"]) == (
        first, "alice@example.test", "mail1")
    assert env.json("user", "disconnected", "--server", "mail2") == []
    assert first in env.ok("user", "disconnected")  # the table
    db = mounted(path)
    try:
        status = db.status(second, "INBOX")
        assert status.messages == 0 and status.uidvalidity != first_validity
    finally:
        db.dismount()

    # Reconnecting swaps: alice gets her old mail back, the new mailbox is disconnected.
    env.ok("alias", "add", "info@example.test", "alice@example.test")
    env.fails("user", "reconnect", "info@example.test", "--mailbox", first,
              match="an alias: reconnect a mailbox to a mailbox's address or to a free one")
    env.fails("user", "reconnect", "new@example.test", "--mailbox", first,
              match="--password-stdin")
    back = env.json("user", "reconnect", "alice@example.test", "--mailbox", first)
    assert (back["mailbox_id"], back["disconnected"]) == (first, second)
    assert [x["mailbox_id"] for x in env.json("user", "disconnected")] == [second]
    provisioned(env, "mail1")
    assert env.json("alias", "list") == [{"alias": "info@example.test",
                                          "mailbox": "alice@example.test"}]
    db = mounted(path)
    try:
        status = db.status(first, "INBOX")
        assert (status.messages, status.uidvalidity) == (1, first_validity)
    finally:
        db.dismount()

    # Purging needs --confirm, deletes the data, and forgets the mailbox.
    env.fails("user", "purge", "--mailbox", second,
              match=f"purging deletes mailbox {second} (last address alice@example.test, "
                    "on mail1 SG1/DB1) and all its mail for good: add --confirm")
    purged = env.json("user", "purge", "--mailbox", second, "--confirm")
    assert (purged["purged"], purged["found"], purged["messages"]) == (second, True, 0)
    assert db_mailboxes(path) == [first]
    assert env.json("user", "disconnected") == []
    env.fails("user", "purge", "--mailbox", second, "--confirm",
              match="no disconnected mailbox")

    # A disconnected mailbox can be given to a free address too (with a password).
    env.ok("user", "remove", "alice@example.test")
    env.ok("user", "reconnect", "ally@example.test", "--mailbox", first, "--password-stdin",
           stdin="pw3\n")
    shown = env.json("user", "show", "ally@example.test")
    assert (shown["mailbox_id"], shown["server"]) == (first, "mail1")
    assert env.json("user", "disconnected") == []
