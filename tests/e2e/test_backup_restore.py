"""Backup, restore and rebuilding against running node processes, with the commands a user
types: a database file lost under a serving virtual server is restored by its owner while
SMTP keeps answering, and every message that got a 250 is back (also when its node dies
and the standby serves with the lost database dismounted); deleted messages come back
from the recovery storage group without duplicates; a virtual server is rebuilt onto an
empty disk from a backup and the logs that survived; a node's machine dies, the node is
evicted, added again, joins, and its virtual server fails back."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import re
import shutil
import smtplib
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.harness import (
    LocalCluster,
    add_mail_users,
    cluster_toml,
    free_addresses,
    mail_port,
    owners,
    vs_of,
    wait_for_imap_login,
)

PASSWORD = "correct horse battery"
ALICE = "alice@example.test"


@dataclass
class Sender:
    """Sends numbered messages to alice until stopped, reconnecting on any error; keeps
    the numbers that got a 250."""

    address: str
    port: int
    next: int = 1
    acked: list[int] = field(default_factory=list)

    def send(self, count: int) -> None:
        with smtplib.SMTP(self.address, self.port, timeout=10) as smtp:
            for _ in range(count):
                self._one(smtp)

    def _one(self, smtp: smtplib.SMTP) -> None:
        n, self.next = self.next, self.next + 1
        smtp.sendmail("sender@remote.test", [ALICE],
                      f"From: sender@remote.test\r\nTo: {ALICE}\r\nSubject: seq {n}\r\n"
                      f"Message-ID: <seq{n}@remote.test>\r\n\r\nmessage {n}\r\n")
        self.acked.append(n)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with smtplib.SMTP(self.address, self.port, timeout=10) as smtp:
                    if smtp.sock is not None:
                        smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    while not stop.is_set():
                        self._one(smtp)
                        stop.wait(0.01)
            except (OSError, smtplib.SMTPException):
                stop.wait(0.05)


def inbox_numbers(address: str, port: int) -> list[int]:
    with imaplib.IMAP4(address, port, timeout=10) as imap:
        imap.login(ALICE, PASSWORD)
        imap.select("INBOX")
        typ, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        if typ != "OK":
            return []
        return [int(m.group(1)) for part in data if isinstance(part, tuple)
                if (m := re.search(rb"seq (\d+)", part[1]))]


def expunge(address: str, port: int, numbers: set[int]) -> None:
    with imaplib.IMAP4(address, port, timeout=10) as imap:
        imap.login(ALICE, PASSWORD)
        imap.select("INBOX")
        typ, data = imap.fetch("1:*", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
        uids = [re.search(rb"UID (\d+)", part[0]).group(1).decode()  # type: ignore[union-attr]
                for part in data if isinstance(part, tuple)
                if (m := re.search(rb"seq (\d+)", part[1])) and int(m.group(1)) in numbers]
        imap.uid("STORE", ",".join(uids), "+FLAGS", "(\\Deleted)")
        imap.expunge()


async def until_all_back(address: str, port: int, acked: list[int], timeout: float = 30) -> None:
    """Waits for every acknowledged number in the inbox (those that waited in the relay
    queue during the restore arrive right after it), and checks there are no duplicates."""
    got: list[int] = []
    async with asyncio.timeout(timeout):
        while not set(acked) <= set(got):
            got = await asyncio.to_thread(inbox_numbers, address, port)
            await asyncio.sleep(0.2)
    assert len(got) == len(set(got)), f"duplicates: {sorted(got)}"


def ok(c: LocalCluster, *args: str) -> str:
    out = c.cli(*args, timeout=120)
    assert out.returncode == 0, f"{args}: {out.stderr}"
    return out.stdout


async def test_restore_while_serving_recover_deleted_and_rebuild_on_an_empty_disk(
    tmp_path: Path,
) -> None:
    base, port = free_addresses()
    config = cluster_toml(base, port, nodes=2, servers=1, mail=True)
    async with LocalCluster(tmp_path, f"sqlite://{tmp_path}/cluster.db", config) as c:
        c.start_all(2)
        status = await c.wait_for(lambda s: owners(s) == {"mail1": "node1"}, timeout=60,
                                  what="mail1 on node1")
        epoch = vs_of(status, "mail1")["epoch"]
        assert c.store is not None
        await add_mail_users(c.store, {"mail1": "alice"}, PASSWORD)
        address, smtp_port, imap_port = f"{base}.11", mail_port(port, "smtp"), mail_port(
            port, "imap")
        await wait_for_imap_login(address, imap_port, ALICE, PASSWORD)
        sender = Sender(address, smtp_port)
        await asyncio.to_thread(sender.send, 20)
        backup_id = ok(c, "backup", "create", "mail1").strip()  # run by node1, online
        assert ok(c, "backup", "verify", backup_id).startswith(f"backup {backup_id}: ok")
        await asyncio.to_thread(sender.send, 20)

        # The database file is lost while mail1 serves; deliveries go on during the restore.
        disk = c.data / "disks" / "mail1"
        (disk / "mail" / "SG1" / "DB1.sqlite").unlink()
        stop = threading.Event()
        thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
        thread.start()
        try:
            while len(sender.acked) < 45:
                await asyncio.sleep(0.02)
            restored = ok(c, "restore", "mail1", "SG1/DB1", "--from", backup_id)
            during = len(sender.acked)
            while len(sender.acked) < during + 5:  # and after it
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, 15)
        assert "restored SG1/DB1" in restored
        status = await c.status()
        assert owners(status) == {"mail1": "node1"} and vs_of(status, "mail1")["epoch"] == epoch
        await until_all_back(address, imap_port, sender.acked)

        # Deleted by the user; back from the recovery storage group, once each.
        await asyncio.to_thread(expunge, address, imap_port, {3, 4, 5})
        assert not {3, 4, 5} & set(await asyncio.to_thread(inbox_numbers, address, imap_port))
        ok(c, "restore", "mail1", "SG1/DB1", "--from", backup_id, "--recovery")
        recovered = ok(c, "user", "recover", ALICE, "--from-recovery")
        assert "recovered 3 message(s)" in recovered, recovered
        await until_all_back(address, imap_port, sender.acked)
        ok(c, "store", "drop-recovery", "mail1")

        # Lost again, and this time its node dies too: the standby mounts what it can,
        # serves with SG1/DB1 dismounted, and restores it when asked.
        await asyncio.to_thread(sender.send, 5)
        (disk / "mail" / "SG1" / "DB1.sqlite").unlink()
        c.kill_node("node1")
        await c.wait_for(lambda s: owners(s) == {"mail1": "node2"}, timeout=60,
                         what="mail1 on node2, its lost database dismounted")
        assert "node2 runs it" in c.cli("restore", "mail1", "SG1/DB1", "--from",
                                        backup_id).stderr
        await until_all_back(address, imap_port, sender.acked)

        # The disk is lost but for the logs (on a disk of their own, say): rebuilt offline.
        ok(c, "vs", "offline", "mail1")
        await c.wait_for(lambda s: vs_of(s, "mail1")["state"] == "offline"
                         and vs_of(s, "mail1")["owner"] is None, what="mail1 offline")
        for child in disk.iterdir():
            if child.name != "mail":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        for child in (disk / "mail").iterdir():
            if child.name != "_logs":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        rebuilt = ok(c, "restore", "mail1", "--all", "--from", backup_id)
        assert "restored the relay queue" in rebuilt
        ok(c, "vs", "clear-failures", "mail1")  # node1's death counted as a failover
        ok(c, "vs", "online", "mail1")
        await c.wait_for(lambda s: owners(s) == {"mail1": "node2"}, timeout=60,
                         what="mail1 online again")
        await wait_for_imap_login(address, imap_port, ALICE, PASSWORD)
        await until_all_back(address, imap_port, sender.acked)
        got = await asyncio.to_thread(inbox_numbers, address, imap_port)
        assert sorted(got) == sorted(sender.acked)  # nothing lost, nothing twice


async def test_a_rebuilt_node_joins_and_its_virtual_server_fails_back(tmp_path: Path) -> None:
    base, port = free_addresses()
    config = cluster_toml(base, port, nodes=2, servers=1, failback="immediate")
    async with LocalCluster(tmp_path, f"sqlite://{tmp_path}/cluster.db", config) as c:
        c.start_all(2)
        await c.wait_for(lambda s: owners(s) == {"mail1": "node1"}, what="mail1 on node1")
        c.kill_node("node1")  # its machine died
        await c.wait_for(lambda s: owners(s) == {"mail1": "node2"}
                         and all(n["state"] == "down" for n in s["nodes"]
                                 if n["name"] == "node1"), timeout=60, what="mail1 on node2")
        ok(c, "node", "evict", "node1")
        with contextlib.suppress(FileNotFoundError):  # reinstalled: nothing of it is left
            (c.data / "node1.agent.log").unlink()
        ok(c, "node", "add", "node1", "--preferred-owner-of", "mail1")
        c.start_node("node1")  # `clustermail node run --name node1` on the new machine
        status = await c.wait_for(lambda s: owners(s) == {"mail1": "node1"}, timeout=60,
                                  what="mail1 back on node1")
        assert {n["name"]: n["state"] for n in status["nodes"]} == {"node1": "up",
                                                                    "node2": "up"}
