"""bench.imap writes only its own part of docs/performance-imap.md: the SELECT section
of bench.imap_select and notes written by hand stay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.imap import BEGIN, DOCS, END, FORMATS, ROWS, merge_report, report, write_report


def results(scale: float) -> dict[str, Any]:
    servers = {f"dovecot-{f}": {key: 1.0 for _, key, _, _ in ROWS} for f in FORMATS}
    servers["clustermail"] = {key: 2.0 * scale for _, key, _, _ in ROWS}
    params: dict[str, Any] = {"sessions": 10, "messages": 10_000, "ops": 100, "search_ops": 5}
    params |= {"big": 100_000, "formats": list(FORMATS)}
    load = {server: [[1.0, 1.0, 1.0], [1.5, 1.0, 1.0]] for server in servers}
    return servers | {"params": params, "load": load}


MIXED = "| Mixed workload (ops/s) | {ours} | 1 ({ratio}×) |"


def test_a_rerun_replaces_only_the_marked_part(tmp_path: Path) -> None:
    page = tmp_path / "performance-imap.md"
    write_report(page, report(results(1.0)))  # no page yet: just the report
    text = page.read_text()
    assert text.startswith(BEGIN) and MIXED.format(ours=2, ratio="2.00") in text
    page.write_text(page.read_text() + "\n## SELECT against Dovecot's own formats\n\nkept\n")
    write_report(page, report(results(3.0)))
    text = page.read_text()
    assert MIXED.format(ours=6, ratio="6.00") in text
    assert MIXED.format(ours=2, ratio="2.00") not in text
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
