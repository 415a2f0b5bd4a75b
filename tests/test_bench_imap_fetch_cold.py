"""bench/imap_fetch_cold.py: a tiny run against our server and Dovecot mdbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mail.imap.reference import dovecot

ROOT = Path(__file__).parent.parent


def test_a_tiny_run(tmp_path: Path) -> None:
    if not dovecot.available():
        pytest.skip("dovecot-imapd is not installed (scripts/install-system-deps.sh)")
    if os.geteuid() != 0:
        pytest.skip("the Dovecot mailboxes are chowned to the mail user: needs root")
    out = tmp_path / "cold.json"
    got = subprocess.run(
        [sys.executable, "-m", "bench.imap_fetch_cold", "--messages", "20", "--runs", "2",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr[-3000:]
    results = json.loads(out.read_text())
    for server in ("clustermail", "dovecot-mdbox"):
        assert len(results[server]["runs"]) == 2
        assert results[server]["median"]["cold_s"] > 0
    assert "| clustermail |" in got.stdout and "| dovecot-mdbox |" in got.stdout
