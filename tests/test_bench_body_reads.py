"""The body-read bench: its summary arithmetic, its argument checks, and one tiny run
against our servers and Dovecot's."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import proc_cpu
from bench.body_reads import formats, summary
from bench.mail import placement_cpus
from tests.mail.imap.reference import dovecot

ROOT = Path(__file__).parent.parent


def test_summary_gives_medians_and_ratios_ours_over_theirs() -> None:
    out = summary({
        "clustermail": [(100.0, 20.0), (300.0, 10.0), (200.0, 30.0)],
        "dovecot-maildir": [(400.0, 10.0)],
    })
    assert out["clustermail"]["ops_per_s"] == 200
    assert out["clustermail"]["cpu_us_per_op"] == 20.0
    assert out["dovecot-maildir"]["ours_rate_ratio"] == 0.5  # ours ÷ theirs
    assert out["dovecot-maildir"]["ours_cpu_ratio"] == 0.5  # theirs ÷ ours: above 1 we spend less


def test_a_side_that_measured_no_cpu_time_gives_no_ratio() -> None:
    """CPU time comes in 10 ms ticks: a short run may see none (it divided by zero)."""
    out = summary({"clustermail": [(100.0, 0.0)], "dovecot-maildir": [(400.0, 10.0)]})
    assert out["dovecot-maildir"]["ours_cpu_ratio"] is None
    assert out["dovecot-maildir"]["ours_rate_ratio"] == 0.25


def test_unknown_format_is_refused_with_the_choices() -> None:
    assert formats("maildir,sdbox") == ["maildir", "sdbox"]
    with pytest.raises(argparse.ArgumentTypeError, match="sdbox, mdbox, maildir"):
        formats("mbox")


def test_pop3_placements_pin_to_one_cpu_or_two() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    assert placement_cpus("any") is None
    assert placement_cpus("shared") == ({cpus[-1]}, {cpus[-1]})
    if len(cpus) > 1:
        assert placement_cpus("split") == ({cpus[0]}, {cpus[-1]})


def test_pin_moves_every_thread_of_a_process_and_back() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    try:
        cpus = os.sched_getaffinity(0)
        one = {min(cpus)}
        proc_cpu.pin([proc.pid], one)
        assert os.sched_getaffinity(proc.pid) == one
        proc_cpu.pin([proc.pid], cpus)
        assert os.sched_getaffinity(proc.pid) == cpus
    finally:
        proc.kill()
        proc.wait()


def test_bad_arguments_are_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.body_reads", "--rounds", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(not dovecot.available(), reason="needs Dovecot")
def test_a_tiny_run_measures_every_server(tmp_path: Path) -> None:
    out = tmp_path / "body-reads.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.body_reads", "--rounds", "1", "--seconds", "0.3",
         "--messages", "30", "--ops", "5", "--formats", "maildir", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    for part in ("pop3_retr", "imap_fetch_body_peek"):
        assert set(results[part]) == {"clustermail", "dovecot-maildir"}
        for cell in results[part].values():
            assert cell["ops_per_s"] > 0 and cell["cpu_us_per_op"] >= 0
