"""No import cycle among the mail layer's modules, and the mail layer imports no admin code."""

from __future__ import annotations

from pathlib import Path

import clustermail
from tests.support.import_graph import cycles, import_graph, module_files

ROOT = Path(clustermail.__file__).parent
GRAPH = import_graph(module_files(ROOT, "clustermail"))


def test_no_cycle_among_mail_modules() -> None:
    mail = [c for c in cycles(GRAPH) if any(m.startswith("clustermail.mail.") for m in c)]
    assert mail == []


def test_the_scan_finds_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from p import b\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from p.a import X\n")
    (pkg / "c.py").write_text("from . import a\n")
    graph = import_graph(module_files(pkg, "p"))
    assert graph["p.c"] == {"p.a"}
    assert cycles(graph) == [["p.a", "p.b"]]


def test_mail_imports_no_admin_module() -> None:
    upward = {
        (m, t) for m, targets in GRAPH.items() if m.startswith("clustermail.mail")
        for t in targets if t.startswith("clustermail.admin")
    }
    assert upward == set()
