"""Cluster configuration: the seed, round trips, and one clear message per mistake."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from clustermail.cluster.config import (
    ConfigError,
    config_from_dict,
    load_config,
    parse_config,
)
from clustermail.cluster.model import (
    FailbackMode,
    PlacementMode,
    Resource,
    VirtualServer,
    offline_order,
    online_order,
)
from clustermail.cluster.timing import DEFAULT_TIMING, FAST_TIMING
from clustermail.cluster.toml_render import render_toml
from tests.support.banner_cluster import banner_cluster_config


def seed_dict() -> dict[str, Any]:
    return copy.deepcopy(banner_cluster_config().to_dict())


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "cluster.toml")
    assert info.value.source == "cluster.toml"
    return [str(p) for p in info.value.problems]


# --------------------------------------------------------------------------- the seed


def test_seed_cluster_shape() -> None:
    config = banner_cluster_config()
    assert config.node_names == ("node1", "node2", "node3", "node4")
    assert config.placement is PlacementMode.ACTIVE_PASSIVE
    assert config.timing == DEFAULT_TIMING
    for i, vs in enumerate(config.virtual_servers, 1):
        assert vs.name == f"mail{i}"
        assert vs.preferred_owners == (f"node{i}", "node4")
        assert vs.possible_owners is None
        assert config.possible_owners(vs) == config.node_names
        assert vs.failback.mode is FailbackMode.NEVER
        assert config.failover_threshold(vs) == 3
        ip, name, disk, banner = vs.resources
        assert ip.properties == {"address": f"127.0.0.{10 + i}", "mode": "loopback"}
        assert name.properties == {"name": f"mail{i}"}
        assert disk.properties == {"path": f"{{data}}/disks/mail{i}"}
        assert banner.type == "process"
        assert banner.properties["tcp_check"] == f"127.0.0.{10 + i}:2525"
        command = banner.properties["command"]
        assert isinstance(command, tuple) and "clustermail.cluster.banner" in command
        assert vs.online_order() == ("ip", "name", "disk", "banner")
        assert vs.offline_order() == ("banner", "disk", "name", "ip")


def test_seed_round_trips_through_toml() -> None:
    config = banner_cluster_config()
    text = render_toml(config)
    assert parse_config(text, "seed.toml") == config
    assert render_toml(parse_config(text)) == text


def test_seed_round_trips_through_json() -> None:
    config = banner_cluster_config()
    data = json.loads(json.dumps(config.to_dict()))
    assert config_from_dict(data) == config


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(render_toml(banner_cluster_config()), encoding="utf-8")
    assert load_config(path) == banner_cluster_config()


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: cannot read: No such file or directory"


def test_everything_round_trips() -> None:
    """Every option, odd strings included, survives render_toml → parse and JSON."""
    data = seed_dict()
    data["cluster"] = {
        "name": 'odd "name" \\ é',
        "placement": "active-active",
        "capacity": 2,
        "timing": {"ttl": 4, "renew_interval": 1, "safety_margin": 0.75},
    }
    data["nodes"]["node4"] = {"capacity": 3}
    vs = data["virtual_servers"]["mail1"]
    vs.update(priority=-5, possible_owners=["node1", "node4"], failback="22-6",
              failover_threshold=0, failover_period_hours=0.5, host_timeout=3.5)
    data["virtual_servers"]["mail2"]["failback"] = "immediate"
    res = vs["resources"]["banner"]
    res.update(quick_check_interval=1, thorough_check_interval=30.5, restart_threshold=0,
               restart_period=60, pending_timeout=10, affects_group=False)
    res["properties"].update(env=["GREETING=220 hi\n\t\x01"], health_command="true")
    ip = vs["resources"]["ip"]
    ip["properties"] = {"address": "::1", "mode": "interface", "interface": "eth0", "prefix": 64}
    config = config_from_dict(data)
    assert parse_config(render_toml(config)) == config
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.capacity_of("node4") == 3 and config.capacity_of("node1") == 2
    assert config.timing.to_dict() == {"ttl": 4.0, "renew_interval": 1.0, "safety_margin": 0.75}


def test_failback_window_forms_are_equal() -> None:
    data = seed_dict()
    data["virtual_servers"]["mail1"]["failback"] = "22-06"
    data["virtual_servers"]["mail2"]["failback"] = {"start": 22, "end": 6}
    config = config_from_dict(data)
    a, b = config.virtual_servers[0].failback, config.virtual_servers[1].failback
    assert a == b and a.describe() == "22-06"
    assert [h for h in range(24) if a.is_open(h)] == [0, 1, 2, 3, 4, 5, 22, 23]


def test_host_timeout_default_covers_a_slow_renew_interval() -> None:
    """Left out, host_timeout is 5 s, or three pings when the lease is renewed slowly:
    a configuration valid before host_timeout existed stays valid."""
    data = seed_dict()
    config = config_from_dict(data)
    assert config.host_timeout(config.virtual_servers[0]) == 5.0
    data["cluster"]["timing"] = {"ttl": 30, "renew_interval": 10, "safety_margin": 5}
    config = config_from_dict(data)
    assert [config.host_timeout(vs) for vs in config.virtual_servers] == [30.0, 30.0, 30.0]
    assert parse_config(render_toml(config)) == config


def test_profiles_by_name() -> None:
    data = seed_dict()
    data["cluster"]["timing"] = "fast"
    assert config_from_dict(data).timing == FAST_TIMING


# --------------------------------------------------------------------------- order


def _vs(*resources: tuple[str, tuple[str, ...]]) -> VirtualServer:
    return VirtualServer("vs", tuple(Resource(n, "disk", {}, deps) for n, deps in resources))


def test_online_order_is_topological_with_declaration_tiebreak() -> None:
    vs = _vs(("smtp", ("store",)), ("store", ("disk",)), ("disk", ()), ("ip", ()),
             ("imap", ("store", "ip")))
    assert online_order(vs) == ("disk", "store", "smtp", "ip", "imap")
    assert offline_order(vs) == ("imap", "ip", "smtp", "store", "disk")


def test_online_order_of_a_cycle_terminates() -> None:
    vs = _vs(("a", ("b",)), ("b", ("a",)), ("c", ()))
    assert online_order(vs) == ("c", "a", "b")


# --------------------------------------------------------------------------- mistakes

RES = "virtual_servers.mail1.resources"


def _set(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split("/")
    target = data
    for key in parents:
        target = target[key]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return data


_DELETE = object()
VS1 = "virtual_servers/mail1"
IP = f"{VS1}/resources/ip"

MISTAKES: list[tuple[str, str, Any, str]] = [
    ("unknown resource type", f"{IP}/type", "ipaddress",
     # Only the start of the list: other layers' types (mail_store…) may be registered too.
     f"{RES}.ip.type: unknown resource type 'ipaddress' (expected one of: "),
    ("type suggestion", f"{IP}/type", "ipaddress", "did you mean 'ip_address'?"),
    ("missing type", f"{IP}/type", _DELETE, f"{RES}.ip: missing 'type' (one of: "),
    ("unknown property", f"{IP}/properties/adress", "x",
     f"{RES}.ip.properties.adress: unknown property for type ip_address: 'adress' "
     "(expected one of: address, mode, interface, prefix, arp); did you mean 'address'?"),
    ("wrong property type", f"{IP}/properties/address", 5,
     f"{RES}.ip.properties.address: expected a string, got an integer (5)"),
    ("bad address", f"{IP}/properties/address", "999.1.1.1",
     'expected an IPv4 or IPv6 address such as 127.0.0.11, got a string ("999.1.1.1")'),
    ("bad choice", f"{IP}/properties/mode", "wifi",
     f"{RES}.ip.properties.mode: expected one of \"loopback\", \"interface\", got 'wifi'"),
    ("interface mode needs interface", f"{IP}/properties/mode", "interface",
     f"{RES}.ip.properties.interface: required when mode = \"interface\""),
    ("prefix range", f"{IP}/properties/prefix", 40,
     f"{RES}.ip.properties.prefix: expected a prefix length from 0 to 32, got 40"),
    ("missing required property", f"{IP}/properties/address", _DELETE,
     f"{RES}.ip.properties: missing required property 'address' (string) for type ip_address"),
    ("command type", f"{VS1}/resources/banner/properties/command", 7,
     "expected a string or list of strings, got an integer (7)"),
    ("empty command", f"{VS1}/resources/banner/properties/command", [],
     "expected a non-empty value, got an array"),
    ("tcp_check format", f"{VS1}/resources/banner/properties/tcp_check", "localhost",
     'expected "host:port" with a port from 1 to 65535'),
    ("dependency on a missing resource", f"{VS1}/resources/banner/depends_on", ["dsk"],
     f"{RES}.banner.depends_on: depends on 'dsk', which is not a resource of mail1 "
     "(resources: ip, name, disk, banner)"),
    ("self dependency", f"{IP}/depends_on", ["ip"],
     f"{RES}: dependency cycle: ip -> ip"),
    ("depends_on type", f"{IP}/depends_on", "name",
     f"{RES}.ip.depends_on: expected an array of names, got a string (\"name\")"),
    ("preferred owner not a node", f"{VS1}/preferred_owners", ["node1", "node9"],
     "virtual_servers.mail1.preferred_owners: 'node9' is not a node "
     "(nodes: node1, node2, node3, node4)"),
    ("possible owner not a node", f"{VS1}/possible_owners", ["node1", "nodeX"],
     "virtual_servers.mail1.possible_owners: 'nodeX' is not a node"),
    ("preferred outside possible", f"{VS1}/possible_owners", ["node1"],
     "virtual_servers.mail1.preferred_owners: preferred owner 'node4' is not among "
     "possible_owners"),
    ("empty possible owners", f"{VS1}/possible_owners", [],
     "virtual_servers.mail1.possible_owners: must name at least one node"),
    ("duplicate preferred owner", f"{VS1}/preferred_owners", ["node1", "node1"],
     "virtual_servers.mail1.preferred_owners: 'node1' is listed more than once"),
    ("failback word", f"{VS1}/failback", "sometimes",
     'virtual_servers.mail1.failback: expected "never", "immediate", a window "22-6" or '
     '{ start = 22, end = 6 }, got a string ("sometimes")'),
    ("failback hour", f"{VS1}/failback", {"start": 25, "end": 6},
     "virtual_servers.mail1.failback.start: expected an hour from 0 to 23, got an integer (25)"),
    ("failback empty window", f"{VS1}/failback", "6-6",
     "virtual_servers.mail1.failback: the window 6-6 is empty"),
    ("failback window key", f"{VS1}/failback", {"from": 1, "end": 6},
     "virtual_servers.mail1.failback.from: unknown key 'from'"),
    ("negative threshold", f"{VS1}/failover_threshold", -1,
     "virtual_servers.mail1.failover_threshold: expected an integer >= 0, got -1"),
    ("zero period", f"{VS1}/failover_period_hours", 0,
     "virtual_servers.mail1.failover_period_hours: expected a number > 0, got 0"),
    ("priority type", f"{VS1}/priority", "high",
     "virtual_servers.mail1.priority: expected an integer, got a string (\"high\")"),
    ("negative interval", f"{IP}/quick_check_interval", -5,
     f"{RES}.ip.quick_check_interval: expected a number > 0, got -5"),
    ("boolean policy", f"{IP}/affects_group", "yes",
     f"{RES}.ip.affects_group: expected true or false, got a string (\"yes\")"),
    ("fractional restart threshold", f"{IP}/restart_threshold", 1.5,
     f"{RES}.ip.restart_threshold: expected an integer, got a number (1.5)"),
    ("misspelt key", f"{VS1}/prefered_owners", ["node1"],
     "virtual_servers.mail1.prefered_owners: unknown key 'prefered_owners' (expected one of: "
     "priority, preferred_owners, possible_owners, failback, failover_threshold, "
     "failover_period_hours, host_timeout, resources, kind); did you mean 'preferred_owners'?"),
    ("zero host timeout", f"{VS1}/host_timeout", 0,
     "virtual_servers.mail1.host_timeout: expected a number > 0, got 0"),
    ("host timeout shorter than three pings", f"{VS1}/host_timeout", 1,
     "virtual_servers.mail1.host_timeout: host_timeout 1 s must be at least 3 x "
     "renew_interval 0.4 s = 1.2 s (the agent pings each resource host every renew_interval; "
     "a host is hung only after missing 3 pings); renew_interval comes from cluster.timing"),
    ("unknown top-level key", "servers", {}, "servers: unknown key 'servers'"),
    ("bad placement mode", "cluster/placement", "n+1",
     "cluster.placement: expected one of \"active-passive\", \"active-active\", got 'n+1'"),
    ("capacity in active-passive", "cluster/capacity", 2,
     'cluster.capacity: capacity applies only to placement = "active-active"'),
    ("node capacity in active-passive", "nodes/node1", {"capacity": 2},
     'nodes.node1.capacity: capacity applies only to placement = "active-active"'),
    ("unknown timing profile", "cluster/timing", "turbo",
     "cluster.timing: expected \"default\", \"fast\" or a table "
     "{ ttl, renew_interval, safety_margin }, got 'turbo'"),
    ("incomplete timing", "cluster/timing", {"ttl": 3},
     "cluster.timing: missing renew_interval, safety_margin (a custom timing needs all three)"),
    ("unsafe timing", "cluster/timing", {"ttl": 2, "renew_interval": 1, "safety_margin": 0.5},
     "cluster.timing: renew_interval 1 s x 2 (a renewal and one retry) + safety_margin 0.5 s "
     "= 2.5 s must be less than ttl 2 s"),
    ("non-positive timing", "cluster/timing", {"ttl": 2, "renew_interval": 0,
                                              "safety_margin": 0.5},
     "cluster.timing: renew_interval must be greater than 0 (got 0)"),
    ("timing type", "cluster/timing", {"ttl": "3s", "renew_interval": 1, "safety_margin": 0.5},
     "cluster.timing.ttl: expected a number of seconds, got a string (\"3s\")"),
    ("invalid node name", "nodes/node 5", {},
     "nodes.\"node 5\": invalid name 'node 5': use 1 to 63 letters, digits, '-' or '_'"),
    ("node and virtual server share a name", "nodes/mail1", {},
     "virtual_servers.mail1: 'mail1' is already the name of a node; names must be unique"),
    ("duplicate address", "virtual_servers/mail2/resources/ip/properties/address", "127.0.0.11",
     "virtual_servers.mail2.resources.ip.properties.address: '127.0.0.11' is already used by "
     "mail1 (resource ip)"),
    ("duplicate network name", "virtual_servers/mail2/resources/name/properties/name", "MAIL1",
     "virtual_servers.mail2.resources.name.properties.name: 'MAIL1' is already used by mail1"),
    ("no nodes", "nodes", {}, "nodes: the cluster needs at least one node"),
    ("missing nodes", "nodes", _DELETE, "nodes: missing: the cluster needs at least one node"),
    ("nodes not a table", "nodes", ["node1"], "nodes: expected a table, got an array"),
    ("resource not a table", f"{IP}", "ip_address", f"{RES}.ip: expected a table, got a string"),
]


@pytest.mark.parametrize(("what", "path", "value", "message"), MISTAKES,
                         ids=[m[0] for m in MISTAKES])
def test_mistake_is_reported_clearly(what: str, path: str, value: Any, message: str) -> None:
    problems = problems_of(_set(seed_dict(), path, value))
    assert any(message in p for p in problems), problems


def test_dependency_cycle_is_named() -> None:
    data = seed_dict()
    resources = data["virtual_servers"]["mail1"]["resources"]
    resources["mail_store"] = {"type": "disk", "depends_on": ["smtp"],
                               "properties": {"path": "/x"}}
    resources["smtp"] = {"type": "process", "depends_on": ["mail_store", "ip"],
                         "properties": {"command": "smtpd"}}
    assert f"{RES}: dependency cycle: mail_store -> smtp -> mail_store" in problems_of(data)


def test_every_problem_is_listed_at_once() -> None:
    data = seed_dict()
    _set(data, f"{IP}/type", "bogus")
    _set(data, f"{VS1}/failback", "sometimes")
    _set(data, "cluster/placement", "n+1")
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "cluster.toml")
    assert len(info.value.problems) == 3
    text = str(info.value)
    assert text.startswith("cluster.toml: 3 problems:\n  - ")
    assert "Traceback" not in text


def test_invalid_toml_names_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[cluster]\nname = "x\n', "cluster.toml")
    message = str(info.value)
    assert message.startswith("cluster.toml: invalid TOML: ")
    assert "line 2" in message and "column" in message


def test_duplicate_table_in_toml_is_reported() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[nodes.node1]\n[nodes.node1]\n", "c.toml")
    assert "invalid TOML" in str(info.value) and "line 2" in str(info.value)


def test_not_a_table_at_the_top() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("cluster = 3\n[nodes.a]\n", "c.toml")
    assert str(info.value) == "c.toml: cluster: expected a table, got an integer (3)"


# --------------------------------------------------------------------------- properties


def test_process_env_is_a_list_of_assignments() -> None:
    data = seed_dict()
    props = data["virtual_servers"]["mail1"]["resources"]["banner"]["properties"]
    props["env"] = ["LANG=C.UTF-8", "EMPTY="]
    banner = config_from_dict(data).virtual_servers[0].resource("banner")
    assert banner is not None and banner.properties["env"] == ("LANG=C.UTF-8", "EMPTY=")
    props["env"] = ["no equals sign"]
    assert any('"NAME=value" strings' in p for p in problems_of(data))


def test_cluster_group_kind_and_node_metrics_round_trip() -> None:
    from clustermail.cluster.config import parse_config, render_toml
    from clustermail.cluster.model import GroupKind

    data = seed_dict()
    data["nodes"]["node1"] = {"metrics": "127.0.0.1:9101"}
    data["virtual_servers"]["cluster"] = {
        "kind": "cluster",
        "resources": {"ip": {"type": "ip_address", "properties": {"address": "127.0.0.10"}}},
    }
    config = config_from_dict(data)
    group = config.virtual_server("cluster")
    assert group is not None and group.kind is GroupKind.CLUSTER and not group.takes_room
    node1 = config.node("node1")
    assert node1 is not None and node1.metrics_url == "http://127.0.0.1:9101/metrics"
    assert parse_config(render_toml(config)) == config


def test_cluster_group_and_metrics_mistakes() -> None:
    data = seed_dict()
    data["nodes"]["node1"] = {"metrics": "127.0.0.1"}
    for name in ("c1", "c2"):
        data["virtual_servers"][name] = {"kind": "cluster"}
    data["virtual_servers"]["mail1"]["kind"] = "clutser"
    problems = problems_of(data)
    assert any('nodes.node1.metrics: expected "ADDRESS:PORT"' in p for p in problems), problems
    assert any("virtual_servers.c2.kind: only one group may be the cluster's own; c1 already is"
               in p for p in problems), problems
    assert any("virtual_servers.mail1.kind: expected one of" in p for p in problems), problems
