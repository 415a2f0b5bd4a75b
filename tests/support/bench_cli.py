"""A bench module run as a user runs it (``python -m bench.NAME``), for the bench tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent


def run_bench(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )


def assert_refused(got: subprocess.CompletedProcess[str], error: str) -> None:
    """Exit status 2 (argparse's) with ``error`` in the message, and no traceback."""
    assert got.returncode == 2 and error in got.stderr, got.stderr
    assert "Traceback" not in got.stderr, got.stderr
