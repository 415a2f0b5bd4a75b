"""Configurations of the real mail clients the tests run (Debian's isync)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def mbsync_config(path: Path, host: str, port: int, user: str, password: str,
                  local: Path, patterns: str) -> Path:
    """An mbsyncrc for two-way sync of ``patterns`` into maildirs under ``local``,
    plaintext on loopback (as in the README)."""
    local.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""
IMAPAccount acc
Host {host}
Port {port}
User {user}
Pass "{password}"
SSLType None
Timeout 10

IMAPStore remote
Account acc

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel ch
Far :remote:
Near :local:
Patterns {patterns}
Create Both
Expunge Both
SyncState *
""")
    return path


def mbsync(config: Path) -> str:
    """Runs one full sync; fails the test with mbsync's output if it fails."""
    run = subprocess.run(["mbsync", "-c", str(config), "-a"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout + run.stderr
