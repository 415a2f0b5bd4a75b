"""Real clients against the server: mbsync (isync) and offlineimap3 (Debian packages)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from clustermail.mail.store import MailboxDatabase
from tests.support.imap_server import PASSWORD, USERS, ServerThread
from tests.support.mail_clients import mbsync, mbsync_config

ALICE = USERS[0]


def msg(n: int, folder: str = "INBOX") -> bytes:
    return (
        f"From: s{n}@example.test\r\nTo: {ALICE}\r\nSubject: {folder} message {n}\r\n"
        f"Message-ID: <{folder}-{n}@example.test>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
        f"\r\nbody {n}\r\n"
    ).encode()


def maildir_files(folder: Path) -> dict[str, str]:
    """Message-ID → maildir flags of the messages in a local maildir folder."""
    out = {}
    for sub in ("cur", "new"):
        for f in (folder / sub).glob("*") if (folder / sub).exists() else []:
            mid = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in f.read_text().splitlines()
                    if line.lower().startswith("message-id:")
                ),
                f.name,
            )
            out[mid] = f.name.rpartition(":2,")[2] if ":2," in f.name else ""
    return out


def server_flags(db: MailboxDatabase, folder: str) -> dict[int, int]:
    listing = db.list_messages(ALICE, folder)
    return {m.uid: m.flags for m in listing}


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync (mbsync) not installed")
def test_mbsync_two_way(server: ServerThread, db: MailboxDatabase, tmp_path: Path) -> None:
    for n in range(5):
        db.deliver_sync(msg(n), [ALICE])
    db.create_folder_sync(ALICE, "Work")
    for n in range(2):
        db.deliver_sync(msg(n, "Work"), [ALICE], "Work")
    local = tmp_path / "mail"
    cfg = mbsync_config(tmp_path / "mbsyncrc", server.host, server.port, ALICE, PASSWORD,
                        local, "INBOX Work Sent")

    def sync() -> str:
        return mbsync(cfg)

    sync()
    inbox = maildir_files(local / "INBOX")
    assert len(inbox) == 5 and len(maildir_files(local / "Work")) == 2
    before = {p.name for p in (local / "INBOX").rglob("*") if p.is_file()}
    sync()  # idempotent: nothing new, nothing re-downloaded
    assert {p.name for p in (local / "INBOX").rglob("*") if p.is_file()} == before

    # local → server: mark message 0 seen by renaming its maildir file (not any file: the
    # server expunges message 4 below, and a flag on it could never arrive)
    f = next(p for p in (local / "INBOX").rglob("*")
             if p.is_file() and b"<INBOX-0@example.test>" in p.read_bytes())
    target = local / "INBOX" / "cur" / (f.name.split(":2,")[0] + ":2,S")
    f.rename(target)
    # server → local: flag one message, expunge another, deliver a new one
    uids = sorted(server_flags(db, "INBOX"))
    db.set_flags_sync(ALICE, "INBOX", [uids[1]], ["\\Flagged"], "add")
    db.set_flags_sync(ALICE, "INBOX", [uids[4]], ["\\Deleted"], "add")
    db.expunge_sync(ALICE, "INBOX")
    db.deliver_sync(msg(9), [ALICE])
    sync()
    inbox = maildir_files(local / "INBOX")
    assert len(inbox) == 5  # one expunged, one new
    assert "<INBOX-9@example.test>" in inbox and "<INBOX-4@example.test>" not in inbox
    assert "F" in inbox["<INBOX-1@example.test>"]
    assert sum(1 for fl in server_flags(db, "INBOX").values() if fl & 1) == 1  # \Seen arrived

    # a message written locally is uploaded
    new = local / "Work" / "new" / "1700000000.local.host"
    new.write_bytes(msg(7, "Work"))
    sync()
    assert len(db.list_messages(ALICE, "Work")) == 3
    sync()
    assert len(db.list_messages(ALICE, "Work")) == 3  # no duplicate on re-sync


@pytest.mark.skipif(shutil.which("offlineimap") is None, reason="offlineimap3 not installed")
def test_offlineimap_uidplus(server: ServerThread, db: MailboxDatabase, tmp_path: Path) -> None:
    for n in range(3):
        db.deliver_sync(msg(n), [ALICE])
    local = tmp_path / "mail"
    cfg = tmp_path / "offlineimaprc"
    cfg.write_text(f"""
[general]
accounts = A
metadata = {tmp_path}/meta
ui = quiet

[Account A]
localrepository = L
remoterepository = R

[Repository L]
type = Maildir
localfolders = {local}

[Repository R]
type = IMAP
remotehost = {server.host}
remoteport = {server.port}
remoteuser = {ALICE}
remotepass = {PASSWORD}
ssl = no
starttls = no
folderfilter = lambda name: name in ["INBOX", "Sent"]
""")

    def sync() -> None:
        run = subprocess.run(
            ["offlineimap", "-c", str(cfg), "-o", "-u", "quiet"],
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert run.returncode == 0, run.stdout + run.stderr

    sync()
    assert len(maildir_files(local / "INBOX")) == 3
    (local / "Sent" / "new").mkdir(parents=True, exist_ok=True)
    (local / "Sent" / "new" / "1700000001.local.host").write_bytes(msg(5, "Sent"))
    sync()  # APPEND with APPENDUID (UIDPLUS) tells offlineimap the new UID
    assert len(db.list_messages(ALICE, "Sent")) == 1
    sync()
    assert len(db.list_messages(ALICE, "Sent")) == 1  # no duplicate
    assert len(maildir_files(local / "Sent")) == 1
