"""The layers of the map hold: no import cycle among our modules, lower layers never
import higher ones, and the cluster and coord layers do not even name the mail layer."""

from __future__ import annotations

from pathlib import Path

import clustermail
from tests.support.import_graph import cycles, import_graph, module_files

ROOT = Path(clustermail.__file__).parent
GRAPH = import_graph(module_files(ROOT, "clustermail"))


LAYERS = {"coord": 1, "cluster": 2, "mail": 3, "admin": 4}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def test_no_import_cycle() -> None:
    assert cycles(GRAPH) == []


def test_lower_layers_never_import_higher_ones() -> None:
    upward = {
        (m, t) for m, targets in GRAPH.items() for t in targets
        if layer(m) and layer(t) > layer(m)
    }
    assert upward == set()


def test_cluster_and_coord_do_not_name_the_mail_layer() -> None:
    # Not even in a comment: a lower layer that names a higher one soon imports it.
    named = [
        str(path.relative_to(ROOT)) for sub in ("cluster", "coord")
        for path in (ROOT / sub).rglob("*.py")
        if "clustermail.mail" in (text := path.read_text()) or "clustermail.admin" in text
    ]
    assert named == []


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

