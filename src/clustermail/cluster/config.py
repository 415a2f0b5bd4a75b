"""Cluster configuration: TOML (or its JSON twin) → validated :class:`ClusterConfig`.

Every problem is collected, not just the first, and each one names the key
path and what was expected; :class:`ConfigError` carries the list and the
source (file name), so the edge prints one clear message and no traceback.

File shape (durations in seconds unless the key says otherwise)::

    [cluster]
    placement = "active-passive"   # or "active-active" with capacity = N
    timing = "default"             # "fast", or { ttl, renew_interval, safety_margin }
    [nodes.node1]                  # capacity = N (active-active only)
    [virtual_servers.mail1]
    preferred_owners = ["node1", "node4"]
    failback = "never"             # "immediate", "22-6" or { start = 22, end = 6 }
    [virtual_servers.mail1.resources.ip]
    type = "ip_address"
    depends_on = []
    [virtual_servers.mail1.resources.ip.properties]
    address = "127.0.0.11"
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clustermail.cluster.model import (
    DEFAULT_HOST_TIMEOUT,
    ClusterConfig,
    FailbackMode,
    FailbackPolicy,
    GroupKind,
    Node,
    PlacementMode,
    PropertyValue,
    Resource,
    ResourcePolicy,
    VirtualServer,
)
from clustermail.cluster.resource_schema import PropertyKind, PropertySpec, ResourceType
from clustermail.cluster.resource_types import ResourceTypeError, resource_type_names
from clustermail.cluster.resource_types import find as find_resource_type
from clustermail.cluster.timing import (
    DEFAULT_TIMING,
    PROFILES,
    LeaseTiming,
    TimingError,
    custom_timing,
    host_timeout_problem,
)
from clustermail.cluster.toml_render import render_toml as render_toml

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_WINDOW = re.compile(r"^\s*(\d{1,2})\s*-\s*(\d{1,2})\s*$")
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")

_TOP_KEYS = ("cluster", "nodes", "virtual_servers")
_CLUSTER_KEYS = ("name", "placement", "capacity", "timing")
_NODE_KEYS = ("capacity", "metrics")
_VS_KEYS = (
    "priority",
    "preferred_owners",
    "possible_owners",
    "failback",
    "failover_threshold",
    "failover_period_hours",
    "host_timeout",
    "resources",
    "kind",
)
_POLICY_DEFAULTS = ResourcePolicy()
_RESOURCE_KEYS = ("type", "depends_on", "properties", *ResourcePolicy.__dataclass_fields__)
_TIMING_KEYS = ("ttl", "renew_interval", "safety_margin")
# Resource properties that must be unique across virtual servers (type → property).
_UNIQUE_PROPERTIES = {"ip_address": "address", "network_name": "name", "disk": "path"}


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # key path, e.g. virtual_servers.mail1.resources.ip.properties.address
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(ValueError):
    """A configuration that cannot be used; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__(self._format())

    def _format(self) -> str:
        if len(self.problems) == 1:
            return f"{self.source}: {self.problems[0]}"
        lines = [f"{self.source}: {len(self.problems)} problems:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


# --------------------------------------------------------------------------- reading helpers


def key_path(base: str, *keys: str) -> str:
    """Extends the key path ``base`` with raw keys, quoting those that are not bare."""
    quoted = [k if _BARE_KEY.match(k) else f'"{k}"' for k in keys]
    return ".".join([base, *quoted] if base else quoted)


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value:g})"
    if isinstance(value, str):
        return f'a string ("{value}")'
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _expected(what: str, value: object) -> str:
    return f"expected {what}, got {_describe(value)}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Checker:
    """Collects problems while reading untrusted nested data."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def table(self, value: object, path: str, known: Sequence[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.add(path, _expected("a table", value))
            return {}
        for key in value:
            if key not in known:
                self.add(key_path(path, key), _unknown("key", key, known))
        return value

    def entries(self, value: object, path: str) -> dict[str, Any]:
        """A table whose keys are names chosen by the user (nodes, virtual servers...)."""
        if not isinstance(value, dict):
            self.add(path, _expected("a table", value))
            return {}
        return value

    def name(self, name: str, path: str) -> bool:
        if _NAME.match(name):
            return True
        self.add(
            path,
            f"invalid name {name!r}: use 1 to 63 letters, digits, '-' or '_', "
            "starting with a letter or digit",
        )
        return False

    def string(self, table: Mapping[str, Any], key: str, path: str, default: str) -> str:
        value = table.get(key, default)
        if isinstance(value, str):
            return value
        self.add(key_path(path, key), _expected("a string", value))
        return default

    def choice(
        self, table: Mapping[str, Any], key: str, path: str, choices: Sequence[str], default: str
    ) -> str:
        value = self.string(table, key, path, default)
        if value in choices:
            return value
        self.add(key_path(path, key), f"expected one of {_quoted(choices)}, got {value!r}")
        return default

    def integer(
        self, table: Mapping[str, Any], key: str, path: str, default: int, minimum: int | None
    ) -> int:
        value = table.get(key, default)
        if not _is_int(value):
            self.add(key_path(path, key), _expected("an integer", value))
            return default
        if minimum is not None and value < minimum:
            self.add(key_path(path, key), f"expected an integer >= {minimum}, got {value}")
            return default
        return int(value)

    def positive(self, table: Mapping[str, Any], key: str, path: str, default: float) -> float:
        value = table.get(key, default)
        if not _is_number(value):
            self.add(key_path(path, key), _expected("a number of seconds", value))
            return default
        if value <= 0:
            self.add(key_path(path, key), f"expected a number > 0, got {value:g}")
            return default
        return float(value)

    def boolean(self, table: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = table.get(key, default)
        if isinstance(value, bool):
            return value
        self.add(key_path(path, key), _expected("true or false", value))
        return default

    def names(self, table: Mapping[str, Any], key: str, path: str) -> tuple[str, ...] | None:
        """A list of distinct strings, or None when the key is absent or malformed."""
        if key not in table:
            return None
        value = table[key]
        where = key_path(path, key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.add(where, _expected("an array of names", value))
            return None
        for dup in sorted({v for v in value if value.count(v) > 1}):
            self.add(where, f"{dup!r} is listed more than once")
        return tuple(dict.fromkeys(value))


def _quoted(items: Iterable[str]) -> str:
    return ", ".join(f'"{i}"' for i in items)


def _unknown(what: str, key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {key!r} (expected one of: {', '.join(known)}){hint}"


# --------------------------------------------------------------------------- sections


def _timing(c: Checker, value: object, path: str) -> LeaseTiming:
    if isinstance(value, str):
        if value in PROFILES:
            return PROFILES[value]
        c.add(path, f"expected {_quoted(PROFILES)} or a table {{ {', '.join(_TIMING_KEYS)} }}, "
              f"got {value!r}")
        return DEFAULT_TIMING
    table = c.table(value, path, _TIMING_KEYS)
    missing = [k for k in _TIMING_KEYS if k not in table]
    if not table or missing:
        if table:
            c.add(path, f"missing {', '.join(missing)} (a custom timing needs all three)")
        return DEFAULT_TIMING
    numbers = [table[k] for k in _TIMING_KEYS]
    if not all(_is_number(n) for n in numbers):
        for key, number in zip(_TIMING_KEYS, numbers, strict=True):
            if not _is_number(number):
                c.add(key_path(path, key), _expected("a number of seconds", number))
        return DEFAULT_TIMING
    try:
        return custom_timing(*(float(n) for n in numbers))
    except TimingError as exc:
        c.add(path, str(exc))
        return DEFAULT_TIMING


def _failback(c: Checker, value: object, path: str) -> FailbackPolicy:
    if value in ("never", "immediate"):
        return FailbackPolicy(FailbackMode(value))
    start: object
    end: object
    if isinstance(value, str) and (m := _WINDOW.match(value)):
        start, end = int(m.group(1)), int(m.group(2))
    elif isinstance(value, dict):
        table = c.table(value, path, ("start", "end"))
        start, end = table.get("start"), table.get("end")
    else:
        c.add(path, f'expected "never", "immediate", a window "22-6" or '
              f"{{ start = 22, end = 6 }}, got {_describe(value)}")
        return FailbackPolicy()
    hours: list[int] = []
    for key, hour in (("start", start), ("end", end)):
        if isinstance(hour, int) and not isinstance(hour, bool) and 0 <= hour <= 23:
            hours.append(hour)
        else:
            c.add(key_path(path, key), _expected("an hour from 0 to 23", hour))
    if len(hours) != 2:
        return FailbackPolicy()
    if hours[0] == hours[1]:
        c.add(path, f'the window {hours[0]}-{hours[1]} is empty; use failback = "immediate" '
              "to fail back at any hour")
        return FailbackPolicy()
    return FailbackPolicy(FailbackMode.WINDOW, hours[0], hours[1])


def _coerce(kind: PropertyKind, value: object) -> PropertyValue | None:
    """``value`` as a property of ``kind`` (integers widen to numbers), or None."""
    if isinstance(value, bool):
        return value if kind is PropertyKind.BOOL else None
    if isinstance(value, int):
        if kind is PropertyKind.INT:
            return value
        return float(value) if kind is PropertyKind.FLOAT else None
    if isinstance(value, float):
        return value if kind is PropertyKind.FLOAT else None
    if isinstance(value, str):
        return value if kind in (PropertyKind.STR, PropertyKind.COMMAND) else None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value) if kind in (PropertyKind.STR_LIST, PropertyKind.COMMAND) else None
    return None


def _property(c: Checker, spec: PropertySpec, value: object, path: str) -> PropertyValue | None:
    result = _coerce(spec.kind, value)
    if result is None:
        article = "an" if spec.kind.value[0] in "aeiou" else "a"
        c.add(path, _expected(f"{article} {spec.kind.value}", value))
        return None
    if spec.choices and result not in spec.choices:
        c.add(path, f"expected one of {_quoted(spec.choices)}, got {result!r}")
        return None
    if spec.check is not None and (expected := spec.check(result)) is not None:
        c.add(path, _expected(expected, value))
        return None
    return result


def _properties(
    c: Checker, schema: ResourceType | None, value: object, path: str
) -> dict[str, PropertyValue]:
    if schema is None:
        return {}
    type_name = schema.name
    table = c.entries(value, path)
    known = list(schema.properties)
    props: dict[str, PropertyValue] = {}
    before = len(c.problems)
    for key, raw in table.items():
        spec = schema.properties.get(key)
        if spec is None:
            c.add(key_path(path, key), _unknown(f"property for type {type_name}:", key, known))
            continue
        checked = _property(c, spec, raw, key_path(path, key))
        if checked is not None:
            props[key] = checked
    for key, spec in schema.properties.items():
        if key in table:
            continue
        if spec.required:
            c.add(path, f"missing required property {key!r} ({spec.kind.value}) "
                  f"for type {type_name}")
        elif spec.default is not None:
            props[key] = spec.default
    # Cross-property rules only make sense once each property is valid on its own.
    if schema.check is not None and len(c.problems) == before:
        for key, message in schema.check(props):
            c.add(key_path(path, key), message)
    return props


def _resource_policy(c: Checker, table: Mapping[str, Any], path: str) -> ResourcePolicy:
    d = _POLICY_DEFAULTS
    return ResourcePolicy(
        quick_check_interval=c.positive(table, "quick_check_interval", path,
                                        d.quick_check_interval),
        thorough_check_interval=c.positive(table, "thorough_check_interval", path,
                                           d.thorough_check_interval),
        restart_threshold=c.integer(table, "restart_threshold", path, d.restart_threshold, 0),
        restart_period=c.positive(table, "restart_period", path, d.restart_period),
        pending_timeout=c.positive(table, "pending_timeout", path, d.pending_timeout),
        affects_group=c.boolean(table, "affects_group", path, d.affects_group),
    )


def _resource_type(c: Checker, type_name: str, path: str) -> ResourceType | None:
    """The registered type ``type_name``, or None after saying why it cannot be used."""
    try:
        rtype = find_resource_type(type_name)
    except ResourceTypeError as exc:
        c.add(path, str(exc))
        return None
    if rtype is None:
        c.add(path, _unknown("resource type", type_name, resource_type_names()))
    return rtype


def _resource(c: Checker, name: str, value: object, path: str) -> Resource:
    table = c.table(value, path, _RESOURCE_KEYS)
    type_name = ""
    rtype: ResourceType | None = None
    if "type" not in table:
        if isinstance(value, dict):
            c.add(path, f"missing 'type' (one of: {', '.join(resource_type_names())})")
    else:
        type_name = c.string(table, "type", path, "")
        if type_name:
            rtype = _resource_type(c, type_name, key_path(path, "type"))
    props = _properties(c, rtype, table.get("properties", {}), key_path(path, "properties"))
    return Resource(
        name=name,
        type=type_name,
        properties=props,
        depends_on=c.names(table, "depends_on", path) or (),
        policy=_resource_policy(c, table, path),
    )


def _check_dependencies(c: Checker, vs: VirtualServer, path: str) -> None:
    names = [r.name for r in vs.resources]
    for r in vs.resources:
        where = key_path(path, "resources", r.name, "depends_on")
        for dep in r.depends_on:
            if dep not in names:
                c.add(where, f"depends on {dep!r}, which is not a resource of {vs.name} "
                      f"(resources: {', '.join(names) or 'none'})")
    cycle = _find_cycle(vs)
    if cycle:
        c.add(key_path(path, "resources"), f"dependency cycle: {' -> '.join(cycle)}")


def _find_cycle(vs: VirtualServer) -> list[str]:
    """The first dependency cycle in declaration order, e.g. [web, db, web]."""
    deps = {r.name: [d for d in r.depends_on] for r in vs.resources}
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    stack: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        stack.append(name)
        for dep in deps.get(name, []):
            if dep not in deps:
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[name] = 2
        return []

    for name in deps:
        if name not in state and (found := visit(name)):
            return found
    return []


def _owners(
    c: Checker, table: Mapping[str, Any], key: str, path: str, nodes: Sequence[str]
) -> tuple[str, ...] | None:
    owners = c.names(table, key, path)
    if owners is None:
        return None
    for owner in owners:
        if owner not in nodes:
            c.add(key_path(path, key), f"{owner!r} is not a node (nodes: {', '.join(nodes)})")
    return tuple(o for o in owners if o in nodes)


def _virtual_server(c: Checker, name: str, value: object, path: str,
                    nodes: Sequence[str]) -> VirtualServer:
    table = c.table(value, path, _VS_KEYS)
    preferred = _owners(c, table, "preferred_owners", path, nodes) or ()
    possible = _owners(c, table, "possible_owners", path, nodes)
    if possible is not None:
        if "possible_owners" in table and not table["possible_owners"]:
            c.add(key_path(path, "possible_owners"), "must name at least one node "
                  "(leave it out to allow every node)")
        for owner in preferred:
            if owner not in possible:
                c.add(key_path(path, "preferred_owners"),
                      f"preferred owner {owner!r} is not among possible_owners")
    threshold: int | None = None
    if "failover_threshold" in table:
        threshold = c.integer(table, "failover_threshold", path, 0, 0)
    resources: list[Resource] = []
    rpath = key_path(path, "resources")
    for rname, rvalue in c.entries(table.get("resources", {}), rpath).items():
        if c.name(rname, key_path(rpath, rname)):
            resources.append(_resource(c, rname, rvalue, key_path(rpath, rname)))
    vs = VirtualServer(
        name=name,
        resources=tuple(resources),
        preferred_owners=preferred,
        possible_owners=possible,
        priority=c.integer(table, "priority", path, 0, None),
        failback=_failback(c, table["failback"], key_path(path, "failback"))
        if "failback" in table
        else FailbackPolicy(),
        failover_threshold=threshold,
        failover_period_hours=c.positive(table, "failover_period_hours", path, 6.0),
        host_timeout=c.positive(table, "host_timeout", path, DEFAULT_HOST_TIMEOUT)
        if "host_timeout" in table else None,
        kind=GroupKind(c.choice(table, "kind", path, [k.value for k in GroupKind],
                                GroupKind.VIRTUAL_SERVER.value)),
    )
    _check_dependencies(c, vs, path)
    return vs


def _check_unique_properties(c: Checker, servers: Sequence[VirtualServer]) -> None:
    """Two virtual servers may not share an address, a network name or a disk."""
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    for vs in servers:
        for r in vs.resources:
            prop = _UNIQUE_PROPERTIES.get(r.type)
            value = r.properties.get(prop) if prop else None
            if prop is None or not isinstance(value, str):
                continue
            key = (r.type, value.lower() if r.type == "network_name" else value)
            if key in seen:
                owner, res = seen[key]
                c.add(key_path("virtual_servers", vs.name, "resources", r.name, "properties",
                               prop), f"{value!r} is already used by {owner} (resource {res})")
            else:
                seen[key] = (vs.name, r.name)


def _check_host_timeouts(c: Checker, servers: list[VirtualServer], timing: LeaseTiming) -> None:
    """An explicit ``host_timeout`` must span three of the agent's pings (the default
    always does: see :meth:`ClusterConfig.host_timeout`)."""
    for vs in servers:
        if vs.host_timeout is None:
            continue
        problem = host_timeout_problem(vs.host_timeout, timing.renew_interval)
        if problem is not None:
            c.add(key_path("virtual_servers", vs.name, "host_timeout"),
                  f"{problem}; renew_interval comes from cluster.timing")


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> ClusterConfig:
    """Validates a parsed TOML/JSON document; raises :class:`ConfigError` with every problem."""
    c = Checker()
    top = c.table(dict(data), "", _TOP_KEYS)
    cluster = c.table(top.get("cluster", {}), "cluster", _CLUSTER_KEYS)
    mode = PlacementMode(c.choice(cluster, "placement", "cluster",
                                  [m.value for m in PlacementMode], "active-passive"))
    if "nodes" not in top:
        c.add("nodes", "missing: the cluster needs at least one node ([nodes.node1])")
    nodes: list[Node] = []
    for name, value in c.entries(top.get("nodes", {}), "nodes").items():
        path = key_path("nodes", name)
        if not c.name(name, path):
            continue
        table = c.table(value, path, _NODE_KEYS)
        capacity = None
        if "capacity" in table:
            capacity = c.integer(table, "capacity", path, 1, 1)
            if mode is PlacementMode.ACTIVE_PASSIVE:
                c.add(key_path(path, "capacity"),
                      "capacity applies only to placement = \"active-active\"")
        metrics = None
        if "metrics" in table:
            metrics = c.string(table, "metrics", path, "")
            m = _HOST_PORT.match(metrics)
            if not m or not 0 < int(m.group(2)) <= 65535:
                c.add(key_path(path, "metrics"),
                      f'expected "ADDRESS:PORT" such as "127.0.0.1:9101", got {metrics!r}')
                metrics = None
        nodes.append(Node(name, capacity, metrics))
    if "nodes" in top and not nodes and isinstance(top["nodes"], dict):
        c.add("nodes", "the cluster needs at least one node ([nodes.node1])")
    node_names = [n.name for n in nodes]
    servers: list[VirtualServer] = []
    for name, value in c.entries(top.get("virtual_servers", {}), "virtual_servers").items():
        path = key_path("virtual_servers", name)
        if not c.name(name, path):
            continue
        if name in node_names:
            c.add(path, f"{name!r} is already the name of a node; names must be unique")
        servers.append(_virtual_server(c, name, value, path, node_names))
    _check_unique_properties(c, servers)
    clusters = [v.name for v in servers if v.kind is GroupKind.CLUSTER]
    for extra in clusters[1:]:
        c.add(key_path("virtual_servers", extra, "kind"),
              f"only one group may be the cluster's own; {clusters[0]} already is")
    if "capacity" in cluster and mode is PlacementMode.ACTIVE_PASSIVE:
        c.add("cluster.capacity", 'capacity applies only to placement = "active-active"')
    cluster_name = c.string(cluster, "name", "cluster", "clustermail")
    capacity = c.integer(cluster, "capacity", "cluster", 1, 1)
    timing = (_timing(c, cluster["timing"], "cluster.timing") if "timing" in cluster
              else DEFAULT_TIMING)
    _check_host_timeouts(c, servers, timing)
    config = ClusterConfig(
        nodes=tuple(nodes),
        virtual_servers=tuple(servers),
        name=cluster_name,
        placement=mode,
        capacity=capacity,
        timing=timing,
    )
    if c.problems:
        raise ConfigError(source, c.problems)
    return config


def parse_config(text: str, source_name: str = "<string>") -> ClusterConfig:
    """Parses and validates TOML text; errors name ``source_name``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source_name, [Problem("", f"invalid TOML: {exc}")]) from None
    return config_from_dict(data, source_name)


def load_config(path: str | Path) -> ClusterConfig:
    """Reads and validates a TOML file; unreadable files are a :class:`ConfigError` too."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [Problem("", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), [Problem("", "not UTF-8 text")]) from None
    return parse_config(text, str(path))
