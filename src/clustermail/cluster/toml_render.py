"""Writes a :class:`ClusterConfig` as TOML a person can read and edit.

A small emitter for our own shapes (tables of scalars, arrays and inline
tables), since the stdlib reads TOML but does not write it. The output parses
back to an equal configuration.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from clustermail.cluster.model import (
    ClusterConfig,
    GroupKind,
    PlacementMode,
    Resource,
    VirtualServer,
)

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}

_HEADER = """\
# clustermail cluster configuration. Durations are in seconds unless the key
# says otherwise; every key is checked when the file is loaded.
#
# [cluster]  placement = "active-passive" (one virtual server per node, N+1) or
#            "active-active" with capacity = N (per-node override in [nodes.X]);
#            timing = "default" | "fast" | { ttl, renew_interval, safety_margin }.
# [nodes.X]  metrics = "ADDRESS:PORT" serves the node's Prometheus metrics.
# [virtual_servers.X]  kind = "cluster" marks the cluster's own group (its address
#            and admin service), which takes no room on a node; preferred_owners
#            (ordered), possible_owners (default: all nodes), priority (higher
#            wins a contested node), failback = "never" |
#            "immediate" | "22-6" | { start = 22, end = 6 }, failover_threshold
#            (default: nodes - 1) failovers per failover_period_hours (default 6),
#            host_timeout (5: the resource host must answer the agent's pings).
# [virtual_servers.X.resources.Y]  type, depends_on, [..properties], and optional
#            quick_check_interval (5), thorough_check_interval (60),
#            restart_threshold (3) per restart_period (900), pending_timeout (180),
#            affects_group (true).
# String properties may use {data} (the node's data directory) and {python}.
"""


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _table_header(*parts: str) -> str:
    return "[" + ".".join(_key(p) for p in parts) + "]"


def _string(value: str) -> str:
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: object) -> str:
    """One TOML value: string, boolean, integer, float, array or inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _resource_lines(vs: VirtualServer, r: Resource) -> list[str]:
    lines = ["", _table_header("virtual_servers", vs.name, "resources", r.name)]
    lines.append(f"type = {toml_value(r.type)}")
    lines.append(f"depends_on = {toml_value(list(r.depends_on))}")
    # Only policies that differ from the defaults, to keep the file short.
    defaults = type(r.policy)().to_dict()
    for key, value in r.policy.to_dict().items():
        if value != defaults[key]:
            lines.append(f"{key} = {toml_value(value)}")
    if r.properties:
        lines += ["", _table_header("virtual_servers", vs.name, "resources", r.name,
                                    "properties")]
        lines += [f"{_key(k)} = {toml_value(v)}" for k, v in r.properties.items()]
    return lines


def _virtual_server_lines(vs: VirtualServer, n_nodes: int, host_timeout: float) -> list[str]:
    lines = ["", _table_header("virtual_servers", vs.name)]
    if vs.kind is GroupKind.CLUSTER:
        lines.append(f"kind = {toml_value(vs.kind.value)}  # the cluster's own group: takes no "
                     "room on a node")
    lines.append(f"priority = {vs.priority}")
    lines.append(f"preferred_owners = {toml_value(list(vs.preferred_owners))}")
    if vs.possible_owners is None:
        lines.append("# possible_owners = [...]  (default: every node)")
    else:
        lines.append(f"possible_owners = {toml_value(list(vs.possible_owners))}")
    lines.append(f"failback = {toml_value(vs.failback.to_dict())}")
    if vs.failover_threshold is None:
        default = max(n_nodes - 1, 1)
        lines.append(f"# failover_threshold = {default}  (default: nodes - 1)")
    else:
        lines.append(f"failover_threshold = {vs.failover_threshold}")
    lines.append(f"failover_period_hours = {toml_value(vs.failover_period_hours)}")
    if vs.host_timeout is None:
        lines.append(f"# host_timeout = {toml_value(host_timeout)}  (default)")
    else:
        lines.append(f"host_timeout = {toml_value(vs.host_timeout)}")
    for r in vs.resources:
        lines += _resource_lines(vs, r)
    return lines


def render_toml(config: ClusterConfig) -> str:
    lines = [_HEADER.rstrip("\n"), "", "[cluster]"]
    lines.append(f"name = {toml_value(config.name)}")
    lines.append(f"placement = {toml_value(config.placement.value)}")
    if config.placement is PlacementMode.ACTIVE_ACTIVE:
        lines.append(f"capacity = {config.capacity}")
    lines.append(f"timing = {toml_value(config.timing.to_dict())}")
    for node in config.nodes:
        lines += ["", _table_header("nodes", node.name)]
        if node.capacity is not None:
            lines.append(f"capacity = {node.capacity}")
        if node.metrics is not None:
            lines.append(f"metrics = {toml_value(node.metrics)}  # Prometheus metrics")
    for vs in config.virtual_servers:
        lines += _virtual_server_lines(vs, len(config.nodes), config.host_timeout(vs))
    return "\n".join(lines) + "\n"
