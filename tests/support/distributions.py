"""Distributions made up for a test: a dist-info folder with entry points, on sys.path.

This is how a third party ships a resource type: its installed distribution
declares an entry point in the ``clustermail.resource_types`` group. A test
writes the same metadata pip would (``METADATA`` and ``entry_points.txt``)
into a folder of its own and puts that folder on the import path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from clustermail.cluster import resource_types


@dataclass(frozen=True, slots=True)
class Distributions:
    """A folder on sys.path for made-up distributions."""

    root: Path

    def add(self, name: str, entry_points: Mapping[str, str]) -> None:
        """Declares a distribution ``name`` with these resource types (type name →
        ``"module:ATTRIBUTE"``), seen by this process from now on."""
        info = self.root / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n", encoding="utf-8"
        )
        lines = [f"[{resource_types.ENTRY_POINT_GROUP}]"]
        lines += [f"{type_name} = {target}" for type_name, target in entry_points.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        resource_types.forget()

    def env(self) -> dict[str, str]:
        """An environment in which a child process sees these distributions too."""
        path = os.pathsep.join(p for p in (str(self.root), os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "PYTHONPATH": path}


@pytest.fixture
def distributions(tmp_path: Path) -> Iterator[Distributions]:
    """Made-up distributions, gone again (with what the registry learnt) after the test."""
    root = tmp_path / "site"
    root.mkdir()
    sys.path.insert(0, str(root))
    try:
        yield Distributions(root)
    finally:
        sys.path.remove(str(root))
        resource_types.forget()
