"""The IMAP bench: its target arithmetic, its argument checks, and one tiny run of the
whole suite against our server and Dovecot on every format."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.imap import FORMATS, ROWS, speedup, verdict
from tests.mail.imap.reference import dovecot
from tests.support.bench_cli import assert_refused

ROOT = Path(__file__).parent.parent


def bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.imap", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # its finally blocks stop the servers it started
        proc.communicate(timeout=30)
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_speedup_is_above_one_when_we_are_faster_whatever_the_unit() -> None:
    assert speedup(200.0, 100.0, higher=True) == 2.0  # ops/s
    assert speedup(0.5, 1.0, higher=False) == 2.0  # ms


def test_verdict_checks_against_the_best_format() -> None:
    assert verdict("mixed_ops", 100.0, {"sdbox": 1.25, "mdbox": 1.1}) == "met (1.10× mdbox)"
    assert verdict("mixed_ops", 100.0, {"sdbox": 0.8, "mdbox": 1.1}) == (
        "missed by 20% (0.80× sdbox)"
    )


def test_select_must_also_stay_under_one_millisecond() -> None:
    assert verdict("select_ms", 1.5, {"sdbox": 2.0}) == "missed: 1.50 ms > 1 ms"
    assert verdict("select_ms", 0.5, {"sdbox": 2.0}) == "met (2.00× sdbox)"


@pytest.mark.parametrize("formats", ["sdbox,ext4", "sdbox,sdbox", ","])
def test_unknown_formats_are_refused(formats: str) -> None:
    assert_refused(bench("--formats", formats),
                   "expected one or more distinct names among sdbox, mdbox, maildir")


def test_bad_counts_are_refused() -> None:
    assert_refused(bench("--messages", "0"), "expected a whole number ≥ 1")


def test_a_tiny_run_measures_every_workload_on_every_server(tmp_path: Path) -> None:
    if not dovecot.available():
        pytest.skip("dovecot-imapd is not installed (scripts/install-system-deps.sh)")
    if os.geteuid() != 0:
        pytest.skip("the Dovecot mailboxes are chowned to the mail user: needs root")
    out, doc = tmp_path / "imap.json", tmp_path / "imap.md"
    got = bench(
        *("--messages", "30", "--sessions", "2", "--ops", "3", "--search-ops", "1"),
        *("--idle-rounds", "1", "--big", "0", "--out", str(out), "--doc", str(doc)),
    )
    assert got.returncode == 0, got.stderr[-3000:]
    results = json.loads(out.read_text())
    servers = ["clustermail", *(f"dovecot-{f}" for f in FORMATS)]
    for server in servers:
        assert set(results[server]) == {key for _, key, _, _ in ROWS}
        assert all(v > 0 for v in results[server].values())
        before, after = results["load"][server]
        assert len(before) == len(after) == 3
    table = doc.read_text()
    assert "| workload | ours | Dovecot sdbox | Dovecot mdbox | Dovecot maildir | target |" in table
    rates = [key for _, key, higher, _ in ROWS if higher]
    for server in servers:  # server CPU per operation of every rate workload
        assert set(results["cpu_us"][server]) == set(rates)
        assert all(v >= 0 for v in results["cpu_us"][server].values())
    main = table[: table.index("| server CPU per operation")]
    assert main.count("\n| ") == len(ROWS) + 1  # the header row and one per workload
    assert table.count("\n| ") == len(ROWS) + 1 + len(rates) + 1  # and the CPU table
