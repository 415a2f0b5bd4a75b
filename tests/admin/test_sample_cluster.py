"""The sample cluster `clustermail up` runs: shape, mail resources, round trip."""

from __future__ import annotations

from clustermail.admin.sample_cluster import PORTS, USERS, sample_config
from clustermail.cluster.config import parse_config
from clustermail.cluster.model import FailbackMode, PlacementMode
from clustermail.cluster.timing import DEFAULT_TIMING
from clustermail.cluster.toml_render import render_toml
from tests.support.banner_cluster import banner_cluster_config


def test_shape() -> None:
    config = sample_config()
    assert config.node_names == ("node1", "node2", "node3", "node4")
    assert config.placement is PlacementMode.ACTIVE_PASSIVE
    assert config.timing == DEFAULT_TIMING
    assert [vs.name for vs in config.virtual_servers] == [*USERS, "cluster"]
    mail = [vs for vs in config.virtual_servers if vs.takes_room]
    for i, vs in enumerate(mail, 1):
        assert vs.preferred_owners == (f"node{i}", "node4")
        assert vs.failback.mode is FailbackMode.NEVER
        assert [r.name for r in vs.resources] == [
            "ip", "name", "disk", "store", "smtp", "imap4", "pop3"]
        ip, smtp = vs.resource("ip"), vs.resource("smtp")
        assert ip is not None and ip.properties["address"] == f"127.0.0.{10 + i}"
        assert smtp is not None and smtp.properties["port"] == PORTS["smtp"]
        assert vs.online_order()[:3] == ("ip", "name", "disk")


def test_placement_sees_the_shape_the_golden_files_use() -> None:
    """The cluster layer's tests place a banner twin of the sample: same nodes and owners."""
    ours, twin = sample_config(), banner_cluster_config()
    assert ours.node_names == twin.node_names
    assert [(v.name, v.preferred_owners, v.possible_owners, v.failback, v.priority)
            for v in ours.virtual_servers if v.takes_room] == [
        (v.name, v.preferred_owners, v.possible_owners, v.failback, v.priority)
        for v in twin.virtual_servers]


def test_round_trips_through_toml() -> None:
    text = render_toml(sample_config())
    assert parse_config(text, "cluster.toml") == sample_config()


def test_cluster_group_and_metrics() -> None:
    config = sample_config()
    group = config.virtual_server("cluster")
    assert group is not None and not group.takes_room
    ip, admin = group.resource("ip"), group.resource("admin")
    assert ip is not None and ip.properties["address"] == "127.0.0.10"
    assert admin is not None and admin.type == "admin_service" and admin.depends_on == ("ip",)
    assert admin.properties["http_port"] == 8080 and admin.properties["https_port"] == 8443
    assert [n.metrics_url for n in config.nodes] == [
        f"http://127.0.0.1:{port}/metrics" for port in (9101, 9102, 9103, 9104)]
