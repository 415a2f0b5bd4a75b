"""bench/imap_cpu.py: its argument checks, and one tiny run of every workload."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support.bench_cli import ROOT, assert_refused, run_bench


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_bench("imap_cpu", *args, timeout=120)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--workloads", "store,fetch"], "workloads are store, mixed, append and unseen"),
        (["--ops", "0"], "expected a whole number"),
        (["--src", "/nonexistent"], "holds no src/clustermail"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(args: list[str], error: str) -> None:
    assert_refused(run(*args), error)


def test_a_tiny_run_reports_rate_and_cpu_per_operation() -> None:
    got = run("--messages", "30", "--sessions", "2", "--ops", "5",
              "--workloads", "store,mixed,append,unseen", "--src", str(ROOT))
    assert got.returncode == 0, got.stderr
    lines = got.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["store", "mixed", "append", "unseen"]
    for line in lines:
        assert re.search(r"[\d,]+ ops/s, server CPU \d+ µs/op \(event loop \d+, other", line)
