"""docs/monitoring.md: the scrape configuration and alert rules pass promtool, and
every metric the page and the rules name is one the code defines."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="needs promtool (Debian's prometheus package; "
    "scripts/install-system-deps.sh installs it)")


@needs_promtool
@pytest.mark.parametrize("args", [["check", "rules", "alerts.yml"],
                                  ["check", "config", "prometheus.yml"],
                                  ["test", "rules", "alerts_test.yml"]],
                         ids=lambda a: " ".join(a))
def test_promtool_accepts(args: list[str]) -> None:
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, *args], cwd=DOCS / "monitoring", capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_documented_metric_exists() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.py"))
    texts = [(DOCS / "monitoring.md").read_text(),
             (DOCS / "monitoring" / "alerts.yml").read_text()]
    named = {m for text in texts for m in re.findall(r"\bclustermail_[a-z_]+", text)}
    assert len(named) > 25
    missing = []
    for name in sorted(named):
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        if f'"{base}"' not in source:
            missing.append(name)
    assert not missing, f"documented but not defined: {missing}"


def test_api_doc_lists_every_route() -> None:
    from clustermail.admin.api.app import all_routes

    text = (DOCS / "api.md").read_text()
    missing = [f"{r.method} {r.full_path}" for r in all_routes()
               if f"`{r.method} {r.full_path}`" not in text]
    assert not missing, f"docs/api.md does not list: {missing}"
