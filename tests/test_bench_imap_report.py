"""bench.imap writes only its own part of docs/performance-imap.md: the SELECT section
of bench.imap_select and notes written by hand stay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.imap import BEGIN, DOCS, END, merge_report, report, write_report

KEYS = ("select_ms", "fetch_all_envelope_s", "fetch_body_ops", "uid_search_ops",
        "store_ops", "append_ops", "mixed_ops", "idle_wakeup_ms")


def results(scale: float) -> dict[str, Any]:
    ours = {k: 2.0 * scale for k in KEYS}
    return {"params": {"sessions": 10, "messages": 10_000, "ops": 100, "big": 100_000},
            "clustermail": ours, "dovecot": {k: 1.0 for k in KEYS}}


def test_a_rerun_replaces_only_the_marked_part(tmp_path: Path) -> None:
    page = tmp_path / "performance-imap.md"
    write_report(page, report(results(1.0)))  # no page yet: just the report
    assert page.read_text().startswith(BEGIN) and "| 2.0 | 1.0 |" in page.read_text()
    page.write_text(page.read_text() + "\n## SELECT against Dovecot's own formats\n\nkept\n")
    write_report(page, report(results(3.0)))
    text = page.read_text()
    assert "| 6.0 | 1.0 |" in text and "| 2.0 | 1.0 |" not in text
    assert text.endswith(f"{END}\n\n## SELECT against Dovecot's own formats\n\nkept\n")
    assert text.count(BEGIN) == text.count(END) == 1


def test_a_page_without_markers_loses_nothing() -> None:
    merged = merge_report("# Notes by hand\n", "# IMAP performance\n")
    assert merged == f"{BEGIN}\n# IMAP performance\n{END}\n\n# Notes by hand\n"


def test_the_page_in_the_repository_keeps_its_select_section() -> None:
    text = DOCS.read_text()
    assert text.count(BEGIN) == text.count(END) == 1
    merged = merge_report(text, report(results(1.0)))
    kept = text[text.index(END) + len(END):].lstrip("\n")
    assert kept.startswith("## SELECT against Dovecot's own formats")
    assert merged.endswith(kept)
