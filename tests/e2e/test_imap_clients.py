"""Real IMAP clients against a running cluster, mail arriving over SMTP:

* imapclient's IDLE is woken within a second of the SMTP server's 250;
* offlineimap3 with an IDLE folder fetches a new message at once, not at its next
  refresh (set to 30 minutes);
* mbsync re-syncs after the node holding the virtual server is killed: same
  UIDVALIDITY and UIDs, so nothing already synced is downloaded again, and new mail
  and flag changes go through as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import os
import shutil
import signal
import smtplib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.e2e.harness import (
    MAIL_PASSWORD,
    mail_cluster,
    mail_port,
    owners,
    wait_for_imap_login,
)
from tests.support.mail_clients import mbsync, mbsync_config

PASSWORD = MAIL_PASSWORD


def message(n: int, rcpt: str) -> str:
    return (f"From: sender@remote.test\r\nTo: {rcpt}\r\nSubject: note {n}\r\n"
            f"Message-ID: <note{n}.{rcpt}>\r\n\r\nbody {n}\r\n")


def send(address: str, port: int, rcpt: str, n: int, timeout: float = 30) -> None:
    """Delivers one message over SMTP, retrying while the virtual server moves."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with smtplib.SMTP(address, port, timeout=5) as smtp:
                smtp.sendmail("sender@remote.test", [rcpt], message(n, rcpt))
            return
        except (OSError, smtplib.SMTPException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check()`` holds (polled every 50 ms: the clients write plain files)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def maildir(folder: Path) -> set[str]:
    """File names (without the flags suffix) in a local maildir folder."""
    return {p.name.split(":2,")[0] for sub in ("cur", "new") if (folder / sub).is_dir()
            for p in (folder / sub).iterdir()}


@pytest.mark.skipif(shutil.which("offlineimap") is None, reason="offlineimap3 not installed")
async def test_idle_clients_are_woken_by_smtp_delivery(tmp_path: Path) -> None:
    async with mail_cluster(tmp_path) as (_, base, port):
        address, alice = f"{base}.11", "alice@example.test"
        smtp_port, imap_port = mail_port(port, "smtp"), mail_port(port, "imap")
        await wait_for_imap_login(address, imap_port, alice, PASSWORD)

        def idle_wake(n: int) -> tuple[float, list[object]]:
            client = IMAPClient(address, port=imap_port, ssl=False, timeout=10)
            try:
                client.login(alice, PASSWORD)
                client.select_folder("INBOX")
                client.idle()
                send(address, smtp_port, alice, n)
                acked = time.monotonic()
                responses = client.idle_check(timeout=5)
                woke = time.monotonic() - acked
                client.idle_done()
                client.logout()
                return woke, responses
            finally:
                with contextlib.suppress(Exception):
                    client.shutdown()

        for n in range(3):
            woke, responses = await asyncio.to_thread(idle_wake, n)
            assert any(r[1] == b"EXISTS" for r in responses if isinstance(r, tuple)), responses
            assert woke < 1.0, f"IDLE woken {woke:.3f} s after the 250"

        # offlineimap3 in its refresh loop with INBOX as an IDLE folder.
        local = tmp_path / "offlineimap"
        cfg = tmp_path / "offlineimaprc"
        cfg.write_text(f"""
[general]
accounts = A
metadata = {tmp_path}/offlineimap-meta

[Account A]
localrepository = L
remoterepository = R
autorefresh = 30
quick = 0

[Repository L]
type = Maildir
localfolders = {local}

[Repository R]
type = IMAP
remotehost = {address}
remoteport = {imap_port}
remoteuser = {alice}
remotepass = {PASSWORD}
ssl = no
starttls = no
idlefolders = ['INBOX']
folderfilter = lambda name: name == "INBOX"
""")
        log = open(tmp_path / "offlineimap.log", "wb")  # noqa: SIM115 - child owns it
        proc = subprocess.Popen(["offlineimap", "-c", str(cfg), "-u", "basic"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()

        def log_text() -> str:
            return (tmp_path / "offlineimap.log").read_text(errors="replace")

        try:
            inbox = local / "INBOX"
            # Its first full sync is over once it reports the account finished; what it
            # copies after that, within the 30-minute refresh, IDLE told it about.
            await eventually(lambda: "*** Finished account" in log_text(), 60,
                             "offlineimap's first sync")
            assert len(maildir(inbox)) == 3
            await asyncio.to_thread(send, address, smtp_port, alice, 10)
            took = await eventually(lambda: len(maildir(inbox)) == 4, 20,
                                    "the new message in offlineimap's maildir")
            assert proc.poll() is None
            print(f"offlineimap fetched the new message {took:.2f} s after the 250")
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        assert "ERROR" not in log_text(), log_text()[-3000:]
        assert "Copy message UID 4" in log_text().split("*** Finished account")[1]


def flags_on_server(address: str, port: int, user: str) -> dict[int, bytes]:
    with imaplib.IMAP4(address, port, timeout=10) as imap:
        imap.login(user, PASSWORD)
        imap.select("INBOX", readonly=True)
        _, data = imap.uid("FETCH", "1:*", "(FLAGS)")
        out = {}
        for line in data:
            if isinstance(line, bytes) and b"UID " in line:
                uid = int(line.split(b"UID ")[1].split()[0].rstrip(b")"))
                out[uid] = line
        return out


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync (mbsync) not installed")
async def test_mbsync_resyncs_after_failover_without_downloading_again(tmp_path: Path) -> None:
    async with mail_cluster(tmp_path) as (c, base, port):
        address, carol = f"{base}.13", "carol@example.test"
        smtp_port, imap_port = mail_port(port, "smtp"), mail_port(port, "imap")
        await wait_for_imap_login(address, imap_port, carol, PASSWORD)
        for n in range(8):
            await asyncio.to_thread(send, address, smtp_port, carol, n)
        with imaplib.IMAP4(address, imap_port, timeout=10) as imap:
            imap.login(carol, PASSWORD)
            assert imap.create("Work")[0] == "OK"
            for n in range(3):
                assert imap.append("Work", None, None,
                                   message(100 + n, carol).encode())[0] == "OK"

        local = tmp_path / "maildir"
        cfg = mbsync_config(tmp_path / "mbsyncrc", address, imap_port, carol, PASSWORD,
                            local, "INBOX Work")

        def sync() -> str:
            return mbsync(cfg)

        await asyncio.to_thread(sync)
        inbox, work = maildir(local / "INBOX"), maildir(local / "Work")
        assert len(inbox) == 8 and len(work) == 3

        c.kill_node("node3")
        await c.wait_for(lambda s: owners(s)["mail3"] == "node4", timeout=60,
                         what="mail3 on node4")
        await wait_for_imap_login(address, imap_port, carol, PASSWORD)

        # Same UIDVALIDITY and UIDs on node4: the files mbsync has stay; nothing comes twice.
        await asyncio.to_thread(sync)
        assert maildir(local / "INBOX") == inbox and maildir(local / "Work") == work

        # New mail, and flags both ways, after the failover.
        await asyncio.to_thread(send, address, smtp_port, carol, 50)
        first = min((local / "INBOX" / "cur").iterdir(), key=lambda p: p.name,
                    default=None) or min((local / "INBOX" / "new").iterdir())
        first.rename(local / "INBOX" / "cur" / (first.name.split(":2,")[0] + ":2,S"))
        with imaplib.IMAP4(address, imap_port, timeout=10) as imap:
            imap.login(carol, PASSWORD)
            imap.select("Work")
            assert imap.uid("STORE", "1", "+FLAGS", "(\\Flagged)")[0] == "OK"
        await asyncio.to_thread(sync)
        now = maildir(local / "INBOX")
        assert inbox < now and len(now) == 9
        assert sum(b"\\Seen" in line for line in flags_on_server(address, imap_port,
                                                                  carol).values()) == 1
        assert [p for p in (local / "Work" / "cur").iterdir() if p.name.endswith(":2,F")]
