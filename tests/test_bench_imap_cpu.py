"""bench/imap_cpu.py: its argument checks, and one tiny run of every workload."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.imap_cpu", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--workloads", "store,fetch"], "workloads are store, mixed and append"),
        (["--ops", "0"], "expected a whole number"),
        (["--src", "/nonexistent"], "holds no src/clustermail"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(args: list[str], error: str) -> None:
    got = run(*args)
    assert got.returncode == 2 and error in got.stderr and "Traceback" not in got.stderr


def test_a_tiny_run_reports_rate_and_cpu_per_operation() -> None:
    got = run("--messages", "30", "--sessions", "2", "--ops", "5",
              "--workloads", "store,mixed,append", "--src", str(ROOT))
    assert got.returncode == 0, got.stderr
    lines = got.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["store", "mixed", "append"]
    for line in lines:
        assert re.search(r"[\d,]+ ops/s, server CPU \d+ µs/op \(event loop \d+, other", line)
