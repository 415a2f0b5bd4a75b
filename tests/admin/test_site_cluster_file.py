"""The real-site cluster file that docs/deployment.md shows is valid as shipped."""

from __future__ import annotations

from pathlib import Path

from clustermail.cluster.config import load_config

SITE = Path(__file__).parents[2] / "docs" / "examples" / "site-cluster.toml"


def test_the_site_cluster_file_loads() -> None:
    config = load_config(SITE)
    assert list(config.node_names) == ["mx1", "mx2", "mx3"]
    for vs in config.virtual_servers:
        by_type = {r.type: r for r in vs.resources}
        assert by_type["ip_address"].properties["mode"] == "interface"
        disk = by_type["disk"].properties
        assert str(disk["device"]).startswith("/dev/disk/by-id/")
        assert disk["create"] is False
        assert by_type["smtp"].properties["port"] == 25


def test_the_deployment_guide_shows_the_file() -> None:
    guide = (SITE.parents[1] / "deployment.md").read_text()
    assert "docs/examples/site-cluster.toml" in guide
