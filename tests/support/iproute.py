"""``ip`` (iproute2) for tests that build their own network namespaces and links."""

from __future__ import annotations

import subprocess


def ip(*args: str) -> str:
    """Runs ``ip ARGS``; its output, or RuntimeError with what it said on failure."""
    run = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if run.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {run.stderr.strip()}")
    return run.stdout
