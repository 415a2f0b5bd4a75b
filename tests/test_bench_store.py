"""bench/store.py: one tiny run writes every cell, with the CPU each side spent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_a_tiny_run_reports_rates_and_cpu_per_delivery(tmp_path: Path) -> None:
    out = tmp_path / "store.json"
    got = subprocess.run(
        [sys.executable, "-m", "bench.store", "--seconds", "0.2", "--rounds", "1",
         "--big", "50", "--dir", str(tmp_path), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert got.returncode == 0, got.stderr[-3000:]
    cells = json.loads(out.read_text())["deliveries"]
    assert {(c["size"], c["deliverers"]) for c in cells} == {
        (size, lanes) for size in ("2KB", "20KB", "200KB") for lanes in (1, 10)}
    for c in cells:
        assert c["store_per_s"] > 0 and c["maildir_per_s"] > 0
        # CPU per delivery and cores busy, both sides: a delivery costs some CPU
        assert c["store_cpu_us"] > 0 and c["maildir_cpu_us"] > 0
        assert c["store_cores"] > 0 and c["maildir_cores"] > 0
        # the writer thread does the store's share of every delivery; the loop submits
        assert 0 < c["store_writer_busy"] <= 1.05 and 0 < c["store_loop_busy"] <= 1.05
        assert len(c["load"]) == 1 and all(len(pair) == 2 for pair in c["load"])  # per round
    assert "| CPU µs per delivery (store / Maildir) |" in got.stdout
    assert "| store's writer thread / event loop on CPU |" in got.stdout
