"""A short, seeded fault campaign (`python -m bench.campaign`) as a test: a few faults
against a real cluster under mail load lose no acknowledged message, never let two
resource hosts serve one virtual server, and every run recovers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import ROOT

KINDS = "kill_agent,kill_host,kill_agent_and_host,stop_host_short,stop_agent_long"


@pytest.mark.timeout(240)
def test_a_short_campaign_loses_nothing_and_never_overlaps(tmp_path: Path) -> None:
    out = tmp_path / "campaign.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.campaign", "--runs", "3", "--seed", "11",
         "--backend", "sqlite", "--kinds", KINDS, "--two", "0.34", "--out", str(out),
         "--evidence", str(tmp_path / "evidence")],
        cwd=ROOT, capture_output=True, text=True, timeout=230,
    )
    assert out.exists(), done.stderr[-3000:]
    doc = json.loads(out.read_text())
    summary = f"{done.stderr[-3000:]}\n{done.stdout}"
    assert doc["runs"] == 3, summary
    assert doc["lost"] == 0 and doc["overlaps"] == 0, summary
    assert doc["unrecovered"] == 0 and doc["repairs_failed"] == 0, summary
    assert doc["acknowledged"] > 0 and set(doc["recovery"]), summary
    assert done.returncode == 0, summary
