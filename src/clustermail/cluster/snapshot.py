"""The input of placement: one immutable snapshot of the cluster, time included.

The leader builds it from the coordination store each cycle; tests and the
what-if tool build it from JSON or TOML with :meth:`Snapshot.from_dict`.
Failure counts, clears and admin intents are data here rather than timers,
so :func:`clustermail.cluster.placement.place` stays a deterministic function.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from clustermail.cluster.config import Checker, ConfigError, Problem, config_from_dict, key_path
from clustermail.cluster.model import ClusterConfig


class NodeStatus(enum.StrEnum):
    UP = "up"
    # Only once the store has expired the node's lease (safety rule 1): until then
    # the node may still be running its virtual servers.
    DOWN = "down"
    PAUSED = "paused"  # keeps what it runs, takes nothing new


class VsStatus(enum.StrEnum):
    """The state of a virtual server as observed on its owner."""

    ONLINE = "online"
    STARTING = "starting"
    STOPPING = "stopping"
    OFFLINE = "offline"
    FAILED = "failed"  # its resources failed past their restart threshold


@dataclass(frozen=True, slots=True)
class VsState:
    """Where a virtual server is assigned, and how it is doing there.

    ``owner`` is the current assignment (the leader's last decision); ``status``
    is what that owner reports (the leader ignores reports from other nodes);
    ``manual`` says the owner was chosen by an administrator's move, which
    failback does not undo. The leader stores ``Decision.manual`` here.
    ``failure``: when it failed on its owner while first coming online there,
    what failed (the same text on every node for the same failure).
    """

    owner: str | None = None
    status: VsStatus = VsStatus.OFFLINE
    manual: bool = False
    failure: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"owner": self.owner, "status": self.status.value}
        if self.manual:
            out["manual"] = True
        if self.failure:
            out["failure"] = self.failure
        return out


@dataclass(frozen=True, slots=True)
class FailoverRecord:
    """One failure of a virtual server that placement reacted to."""

    virtual_server: str
    time: float  # the snapshot's ``now`` when it was recorded
    node: str  # the node it failed on
    failure: str = ""  # the start failure that failed it there, if it was one

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"virtual_server": self.virtual_server, "time": self.time,
                               "node": self.node}
        if self.failure:
            out["failure"] = self.failure
        return out


@dataclass(frozen=True)
class Snapshot:
    config: ClusterConfig
    now: float  # seconds since the epoch (any monotonic origin works without failback windows)
    nodes: Mapping[str, NodeStatus] = field(default_factory=dict)  # missing: down
    virtual_servers: Mapping[str, VsState] = field(default_factory=dict)  # missing: VsState()
    failovers: Sequence[FailoverRecord] = ()
    move_requests: Mapping[str, str] = field(default_factory=dict)  # vs -> target node
    failures_cleared: Mapping[str, float] = field(default_factory=dict)  # vs -> clear time
    offline: frozenset[str] = frozenset()  # virtual servers an administrator set offline
    utc_offset: float = 0.0  # seconds east of UTC, for the hours of failback windows

    @property
    def local_hour(self) -> int:
        return int(((self.now + self.utc_offset) % 86400) // 3600)

    def state(self, vs: str) -> VsState:
        return self.virtual_servers.get(vs, VsState())

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "utc_offset": self.utc_offset,
            "config": self.config.to_dict(),
            "nodes": {k: v.value for k, v in sorted(self.nodes.items())},
            "virtual_servers": {k: v.to_dict() for k, v in sorted(self.virtual_servers.items())},
            "failovers": [r.to_dict() for r in self.failovers],
            "move_requests": dict(sorted(self.move_requests.items())),
            "failures_cleared": dict(sorted(self.failures_cleared.items())),
            "offline": sorted(self.offline),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<snapshot>") -> Snapshot:
        """Validates and builds; raises ``ConfigError`` naming each bad key path."""
        return _snapshot_from_dict(data, source)


_E = TypeVar("_E", bound=enum.StrEnum)

_KEYS = ("now", "utc_offset", "config", "nodes", "virtual_servers", "failovers",
         "move_requests", "failures_cleared", "offline")


def _number(c: Checker, value: object, path: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    c.add(path, f"expected a number, got {type(value).__name__}")
    return 0.0


def _text(c: Checker, value: object, path: str) -> str:
    if isinstance(value, str):
        return value
    c.add(path, f"expected a string, got {type(value).__name__}")
    return ""


def _enum_value(c: Checker, kind: type[_E], value: object, path: str) -> _E | None:
    for member in kind:
        if member.value == value:
            return member
    c.add(path, f"expected one of {', '.join(m.value for m in kind)}, got {value!r}")
    return None


def _vs_state(c: Checker, value: object, path: str) -> VsState:
    table = c.table(value, path, ("owner", "status", "manual", "failure"))
    owner = table.get("owner")
    if owner is not None and not isinstance(owner, str):
        c.add(key_path(path, "owner"), "expected a node name or null")
        owner = None
    status = _enum_value(c, VsStatus, table.get("status", "offline"), key_path(path, "status"))
    return VsState(owner, status or VsStatus.OFFLINE, c.boolean(table, "manual", path, False),
                   c.string(table, "failure", path, ""))


def _snapshot_from_dict(data: Mapping[str, Any], source: str) -> Snapshot:
    c = Checker()
    top = c.table(dict(data), "", _KEYS)
    config: ClusterConfig | None = None
    try:
        config = config_from_dict(top.get("config", {}), source)
    except ConfigError as exc:
        c.problems += [Problem(f"config.{p.path}".rstrip("."), p.message) for p in exc.problems]
    nodes = {}
    for name, status in c.entries(top.get("nodes", {}), "nodes").items():
        parsed = _enum_value(c, NodeStatus, status, key_path("nodes", name))
        if parsed is not None:
            nodes[name] = parsed
    states = {
        name: _vs_state(c, value, key_path("virtual_servers", name))
        for name, value in c.entries(top.get("virtual_servers", {}), "virtual_servers").items()
    }
    records = []
    failovers = top.get("failovers", [])
    if not isinstance(failovers, list):
        c.add("failovers", "expected an array of tables")
        failovers = []
    for i, item in enumerate(failovers):
        path = f"failovers[{i}]"
        rec = c.table(item, path, ("virtual_server", "time", "node", "failure"))
        records.append(FailoverRecord(
            _text(c, rec.get("virtual_server"), key_path(path, "virtual_server")),
            _number(c, rec.get("time"), key_path(path, "time")),
            _text(c, rec.get("node"), key_path(path, "node")),
            c.string(rec, "failure", path, ""),
        ))
    moves = {k: _text(c, v, key_path("move_requests", k))
             for k, v in c.entries(top.get("move_requests", {}), "move_requests").items()}
    cleared = {k: _number(c, v, key_path("failures_cleared", k))
               for k, v in c.entries(top.get("failures_cleared", {}), "failures_cleared").items()}
    offline = c.names(top, "offline", "") or ()
    now = _number(c, top.get("now"), "now")
    utc_offset = _number(c, top.get("utc_offset", 0.0), "utc_offset")
    if c.problems or config is None:
        raise ConfigError(source, c.problems)
    return Snapshot(
        config=config,
        now=now,
        nodes=nodes,
        virtual_servers=states,
        failovers=tuple(records),
        move_requests=moves,
        failures_cleared=cleared,
        offline=frozenset(offline),
        utc_offset=utc_offset,
    )
