"""bench/smtp_cpu.py: its argument checks, and one tiny run where Postfix's smtp-source is
installed (`make bench` installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.support.bench_cli import assert_refused, run_bench


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_bench("smtp_cpu", *args)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--cells", "10by2"], "cells are SESSIONSxKB"),
        (["--cells", "0x2"], "cells are SESSIONSxKB"),
        (["--messages", "0"], "expected a whole number"),
        (["--src", "/nonexistent"], "holds no src/clustermail"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(args: list[str], error: str) -> None:
    assert_refused(run(*args), error)


def test_a_tiny_run_reports_rate_and_cpu_per_message() -> None:
    if shutil.which("smtp-source") is None:
        pytest.skip("smtp-source (Postfix) is not installed (install-system-deps.sh --bench)")
    got = run("--cells", "2x2", "--messages", "300", "--rounds", "1")  # ~0.1 s of CPU
    assert got.returncode == 0, got.stderr[-3000:]
    line = re.search(r"2x2KB \S+: ([\d,]+) msg/s, (\d+) µs/msg \(event loop (\d+)\)", got.stdout)
    assert line is not None, got.stdout
    # (clock ticks are 10 ms: the event loop's share alone may round to nothing)
    assert int(line[1].replace(",", "")) > 0 and int(line[2]) >= int(line[3]) >= 0
    assert int(line[2]) > 0
