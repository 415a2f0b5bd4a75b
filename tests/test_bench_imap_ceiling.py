"""bench/imap_ceiling.py: its argument checks, and one tiny run of one and two servers on
one port."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support.bench_cli import assert_refused, run_bench


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_bench("imap_ceiling", *args)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--servers", "0"], "expected counts ≥ 1"),
        (["--servers", "two"], "expected counts ≥ 1"),
        (["--ops", "0"], "expected a whole number"),
        (["--workloads", "fetch"], "workloads are store, mixed, append and unseen"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(args: list[str], error: str) -> None:
    assert_refused(run(*args), error)


def test_two_servers_listen_on_one_port() -> None:  # without SO_REUSEPORT: no start
    got = run("--messages", "30", "--sessions", "6", "--ops", "20", "--rounds", "1")
    assert got.returncode == 0, got.stderr[-3000:]
    cells = re.findall(r"servers (\d): (\w+) ([\d,]+) ops/s, cores busy per server ([\d., ]+),",
                       got.stdout)
    assert [(n, w) for n, w, _, _ in cells] == [
        ("1", "store"), ("1", "mixed"), ("2", "store"), ("2", "mixed")]
    for n, _, rate, busy in cells:
        assert int(rate.replace(",", "")) > 0
        assert len(busy.split(", ")) == int(n)  # one figure per server
