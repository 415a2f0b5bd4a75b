"""bench/imap_fetch_cold.py: the CPU of a process tree it measures by, and a tiny run
against our server and Dovecot mdbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.imap_fetch_cold import proc_stat, tree_cpu
from tests.mail.imap.reference import dovecot

ROOT = Path(__file__).parent.parent


_GRANDCHILD = """
import sys, time
t = time.process_time()
while time.process_time() - t < 0.3:
    pass
print("burnt", flush=True)
sys.stdin.read()
"""
_CHILD = f"""
import subprocess, sys
p = subprocess.Popen([sys.executable, "-c", {_GRANDCHILD!r}], stdin=subprocess.PIPE)
sys.stdin.read()
p.communicate(b"")
"""


def test_tree_cpu_counts_the_processes_below() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"burnt\n"  # the grandchild's, still running
        assert proc_stat(child.pid)[1] < 0.25 <= tree_cpu(child.pid)
    finally:
        child.communicate(b"", timeout=30)


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
