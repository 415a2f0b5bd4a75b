"""The cluster model as plain, frozen data: nodes, virtual servers, resources, policies.

Objects here are built by :func:`clustermail.cluster.config.config_from_dict`,
which validates them (this module imports no validation: it is the data the
validator produces); constructing them directly skips that validation. ``to_dict()`` gives the
JSON-able form that is also the shape of the TOML file, so one schema serves
the file, the coordination store and the API.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clustermail.cluster.timing import DEFAULT_TIMING, PINGS_BEFORE_HUNG, LeaseTiming

# A resource property: TOML scalars, or a list of strings (kept as a tuple).
PropertyValue = str | int | float | bool | tuple[str, ...]

DEFAULT_FAILOVER_PERIOD_HOURS = 6.0
#: Seconds a resource host may leave the agent's pings unanswered before it is killed.
DEFAULT_HOST_TIMEOUT = 5.0


class PlacementMode(enum.StrEnum):
    # Exchange 2003 N+1: a node hosts at most one virtual server.
    ACTIVE_PASSIVE = "active-passive"
    # Each node hosts up to its capacity.
    ACTIVE_ACTIVE = "active-active"


class GroupKind(enum.StrEnum):
    VIRTUAL_SERVER = "virtual_server"
    # The cluster's own group (Windows' "Cluster Group": the cluster's address and its
    # admin service): placed and failed over like a virtual server, but it takes no
    # room on a node, so it may share a node with a virtual server in active/passive.
    CLUSTER = "cluster"


class FailbackMode(enum.StrEnum):
    NEVER = "never"
    IMMEDIATE = "immediate"
    WINDOW = "window"


@dataclass(frozen=True, slots=True)
class FailbackPolicy:
    """When a virtual server returns to a more preferred owner that became available.

    A window is in whole hours of the cluster's local time, ``start`` inclusive and
    ``end`` exclusive; it may wrap midnight (22-6 is open from 22:00 to 05:59).
    """

    mode: FailbackMode = FailbackMode.NEVER
    start: int = 0
    end: int = 0

    def is_open(self, hour: int) -> bool:
        if self.mode is FailbackMode.NEVER:
            return False
        if self.mode is FailbackMode.IMMEDIATE:
            return True
        if self.start < self.end:
            return self.start <= hour < self.end
        return hour >= self.start or hour < self.end

    def describe(self) -> str:
        if self.mode is FailbackMode.WINDOW:
            return f"{self.start:02d}-{self.end:02d}"
        return self.mode.value

    def to_dict(self) -> str | dict[str, int]:
        if self.mode is FailbackMode.WINDOW:
            return {"start": self.start, "end": self.end}
        return self.mode.value


@dataclass(frozen=True, slots=True)
class ResourcePolicy:
    """Monitoring and restart policy of one resource (Windows cluster defaults)."""

    quick_check_interval: float = 5.0  # LooksAlive, seconds
    thorough_check_interval: float = 60.0  # IsAlive, seconds
    restart_threshold: int = 3  # restarts on the same node within restart_period
    restart_period: float = 900.0  # seconds
    pending_timeout: float = 180.0  # seconds allowed for online/offline
    affects_group: bool = True  # past the threshold, the whole virtual server fails over

    def to_dict(self) -> dict[str, float | int | bool]:
        return {
            "quick_check_interval": self.quick_check_interval,
            "thorough_check_interval": self.thorough_check_interval,
            "restart_threshold": self.restart_threshold,
            "restart_period": self.restart_period,
            "pending_timeout": self.pending_timeout,
            "affects_group": self.affects_group,
        }


@dataclass(frozen=True, slots=True)
class Resource:
    name: str
    type: str
    # Validated against the resource type's schema, defaults filled in.
    properties: Mapping[str, PropertyValue] = field(default_factory=dict, hash=False)
    depends_on: tuple[str, ...] = ()
    policy: ResourcePolicy = ResourcePolicy()

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "depends_on": list(self.depends_on),
            "properties": {
                k: list(v) if isinstance(v, tuple) else v for k, v in self.properties.items()
            },
            **self.policy.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class VirtualServer:
    """A resource group that exactly one node owns at a time, with its policies."""

    name: str
    resources: tuple[Resource, ...] = ()
    preferred_owners: tuple[str, ...] = ()
    possible_owners: tuple[str, ...] | None = None  # None: every node of the cluster
    priority: int = 0  # higher wins when virtual servers compete for a node
    failback: FailbackPolicy = FailbackPolicy()
    failover_threshold: int | None = None  # None: number of nodes - 1 (at least 1)
    failover_period_hours: float = DEFAULT_FAILOVER_PERIOD_HOURS
    host_timeout: float | None = None  # None: see ClusterConfig.host_timeout
    kind: GroupKind = GroupKind.VIRTUAL_SERVER

    @property
    def takes_room(self) -> bool:
        """Counted against a node's capacity (every group but the cluster's own)."""
        return self.kind is not GroupKind.CLUSTER

    def resource(self, name: str) -> Resource | None:
        return next((r for r in self.resources if r.name == name), None)

    def online_order(self) -> tuple[str, ...]:
        return online_order(self)

    def offline_order(self) -> tuple[str, ...]:
        return offline_order(self)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.kind is not GroupKind.VIRTUAL_SERVER:
            out["kind"] = self.kind.value
        out |= {
            "priority": self.priority,
            "preferred_owners": list(self.preferred_owners),
        }
        if self.possible_owners is not None:
            out["possible_owners"] = list(self.possible_owners)
        out["failback"] = self.failback.to_dict()
        if self.failover_threshold is not None:
            out["failover_threshold"] = self.failover_threshold
        out["failover_period_hours"] = self.failover_period_hours
        if self.host_timeout is not None:
            out["host_timeout"] = self.host_timeout
        out["resources"] = {r.name: r.to_dict() for r in self.resources}
        return out


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    capacity: int | None = None  # active-active only; None: the cluster's capacity
    #: "host:port" where the node agent serves its Prometheus metrics; None: not served.
    metrics: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.capacity is None else {"capacity": self.capacity}
        if self.metrics is not None:
            out["metrics"] = self.metrics
        return out

    @property
    def metrics_url(self) -> str | None:
        return f"http://{self.metrics}/metrics" if self.metrics else None


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    nodes: tuple[Node, ...]
    virtual_servers: tuple[VirtualServer, ...]
    name: str = "clustermail"
    placement: PlacementMode = PlacementMode.ACTIVE_PASSIVE
    capacity: int = 1  # virtual servers per node in active-active mode
    timing: LeaseTiming = DEFAULT_TIMING

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    def virtual_server(self, name: str) -> VirtualServer | None:
        return next((v for v in self.virtual_servers if v.name == name), None)

    def capacity_of(self, node: str) -> int:
        """How many virtual servers ``node`` may host at once."""
        if self.placement is PlacementMode.ACTIVE_PASSIVE:
            return 1
        found = self.node(node)
        if found is None or found.capacity is None:
            return self.capacity
        return found.capacity

    def possible_owners(self, vs: VirtualServer) -> tuple[str, ...]:
        if vs.possible_owners is None:
            return self.node_names
        return vs.possible_owners

    def failover_threshold(self, vs: VirtualServer) -> int:
        """Failovers allowed per period; Windows' default is nodes - 1."""
        if vs.failover_threshold is not None:
            return vs.failover_threshold
        return max(len(self.nodes) - 1, 1)

    def host_timeout(self, vs: VirtualServer) -> float:
        """Seconds ``vs``'s resource host may leave the agent's pings unanswered before it
        is killed: 5 s by default, longer when the lease is renewed so slowly that 5 s
        would not span three pings."""
        if vs.host_timeout is not None:
            return vs.host_timeout
        return max(DEFAULT_HOST_TIMEOUT, PINGS_BEFORE_HUNG * self.timing.renew_interval)

    def to_dict(self) -> dict[str, Any]:
        cluster: dict[str, Any] = {"name": self.name, "placement": self.placement.value}
        if self.placement is PlacementMode.ACTIVE_ACTIVE:
            cluster["capacity"] = self.capacity  # meaningless, and refused, in active-passive
        cluster["timing"] = self.timing.to_dict()
        return {
            "cluster": cluster,
            "nodes": {n.name: n.to_dict() for n in self.nodes},
            "virtual_servers": {v.name: v.to_dict() for v in self.virtual_servers},
        }


def online_order(vs: VirtualServer) -> tuple[str, ...]:
    """Resource names, dependencies first; ties keep declaration order (deterministic).

    Assumes a validated, acyclic graph; a cycle's members are appended last in
    declaration order rather than looping.
    """
    done: list[str] = []
    placed: set[str] = set()
    pending = list(vs.resources)
    while pending:
        ready = next((r for r in pending if all(d in placed for d in r.depends_on)), None)
        if ready is None:  # a cycle: unreachable once validated
            done.extend(r.name for r in pending)
            break
        done.append(ready.name)
        placed.add(ready.name)
        pending.remove(ready)
    return tuple(done)


def offline_order(vs: VirtualServer) -> tuple[str, ...]:
    """Dependents before what they depend on: the online order reversed."""
    return tuple(reversed(online_order(vs)))
