"""Placement golden files: tests/cluster/golden/*.toml (format in golden/README.md)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from clustermail.cluster.placement import explain, place
from clustermail.cluster.snapshot import Snapshot
from tests.support.banner_cluster import banner_cluster_config

GOLDEN = Path(__file__).parent / "golden"
FILES = sorted(GOLDEN.glob("*.toml"))


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_case(path: Path) -> tuple[Snapshot, dict[str, Any], list[list[str]] | None]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    assert data.pop("description"), f"{path.name}: describe the scenario"
    expect: dict[str, Any] = data.pop("expect")
    failovers: list[list[str]] | None = data.pop("expect_failovers", None)
    config = data.get("config", "seed")
    if config == "seed":
        config = banner_cluster_config().to_dict()
    data["config"] = _merge(config, data.pop("patch", {}))
    return Snapshot.from_dict(data, path.name), expect, failovers


def test_there_are_enough_golden_files() -> None:
    assert len(FILES) >= 45


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden(path: Path) -> None:
    snapshot, expect, expected_failovers = load_case(path)
    placement = place(snapshot)
    names = {vs.name for vs in snapshot.config.virtual_servers}
    assert set(expect) == names, "expect every virtual server, and only those"
    for name, want in expect.items():
        got = placement[name]
        context = f"{name}: {got.reason}"
        assert got.owner == (want["owner"] or None), context
        assert got.code.value == want["code"], context
        assert want["reason"] in got.reason, context
        if "manual" in want:
            assert got.manual is want["manual"], context
        if "explain" in want:
            assert want["explain"] in explain(snapshot, name)
    if expected_failovers is not None:
        got_failovers = [[r.virtual_server, r.node] for r in placement.failovers]
        assert got_failovers == expected_failovers
        assert all(r.time == snapshot.now for r in placement.failovers)
