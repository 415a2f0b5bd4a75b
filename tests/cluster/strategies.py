"""Hypothesis strategies: random clusters and snapshots for placement properties.

Strategies are built once at import and choices are drawn as indices: building
strategies inside a composite costs more than the placement under test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from hypothesis import strategies as st

from clustermail.cluster.model import (
    ClusterConfig,
    FailbackMode,
    FailbackPolicy,
    Node,
    PlacementMode,
    VirtualServer,
)
from clustermail.cluster.snapshot import (
    FailoverRecord,
    NodeStatus,
    Snapshot,
    VsState,
    VsStatus,
)

GHOST = "ghost"  # a node name that is not in any configuration
DAY = 86400.0
T = TypeVar("T")

_PRESENT = st.integers(0, 9).map(bool)  # mostly True: a state for most virtual servers
_BOOL = st.booleans()
_SMALL = st.integers(0, 3)
_HOUR = st.integers(0, 23)
_PRIORITY = st.integers(-1, 1)
_FAILBACK = st.sampled_from(FailbackMode)
_MODE = st.sampled_from(PlacementMode)
# Skewed towards the common case (up, online) so that stickiness and failback show up.
_NODE_STATUS = st.sampled_from([NodeStatus.UP, NodeStatus.UP, NodeStatus.UP, NodeStatus.DOWN,
                                NodeStatus.PAUSED, None])
_VS_STATUS = st.sampled_from([VsStatus.ONLINE, VsStatus.ONLINE, VsStatus.ONLINE,
                              VsStatus.STARTING, VsStatus.STOPPING, VsStatus.OFFLINE,
                              VsStatus.FAILED])
_MANUAL = st.integers(0, 3).map(lambda n: n == 0)
_PERIOD = st.sampled_from([1.0, 6.0])
_OFFSET = st.sampled_from([0.0, 3600.0, -18000.0])
_NOW = st.integers(int(DAY), int(3 * DAY))
_AGE = st.integers(0, 8 * 3600)


def pick(draw: st.DrawFn, items: Sequence[T]) -> T:
    # st.integers is cached by its bounds, so this builds no new strategy per draw.
    return items[draw(st.integers(0, len(items) - 1))]


def subset(draw: st.DrawFn, items: Sequence[T], ordered: bool = False) -> list[T]:
    """A subset; with ``ordered``, in a drawn order (for preferred owner lists)."""
    chosen = [i for i in items if draw(_BOOL)]
    if ordered:
        for i in range(len(chosen) - 1, 0, -1):
            j = draw(st.integers(0, i))
            chosen[i], chosen[j] = chosen[j], chosen[i]
    return chosen


def _failback(draw: st.DrawFn) -> FailbackPolicy:
    mode = draw(_FAILBACK)
    if mode is not FailbackMode.WINDOW:
        return FailbackPolicy(mode)
    start = draw(_HOUR)
    return FailbackPolicy(mode, start, (start + 1 + draw(_HOUR) % 23) % 24)


@st.composite
def clusters(draw: st.DrawFn) -> ClusterConfig:
    names = [f"n{i}" for i in range(1, 2 + draw(_SMALL) + draw(_BOOL))]
    active_active = draw(_MODE) is PlacementMode.ACTIVE_ACTIVE
    nodes = tuple(
        Node(n, 1 + draw(_SMALL) % 3 if active_active and draw(_BOOL) else None) for n in names
    )
    servers = []
    for i in range(1, 2 + draw(_SMALL) + draw(_BOOL)):
        possible = subset(draw, names) if draw(_BOOL) else []
        pool = possible or names
        servers.append(VirtualServer(
            name=f"vs{i}",
            preferred_owners=tuple(subset(draw, pool, ordered=True)),
            possible_owners=tuple(possible) if possible else None,
            priority=draw(_PRIORITY),
            failback=_failback(draw),
            failover_threshold=draw(_SMALL) if draw(_BOOL) else None,
            failover_period_hours=draw(_PERIOD),
        ))
    return ClusterConfig(
        nodes=nodes,
        virtual_servers=tuple(servers),
        placement=PlacementMode.ACTIVE_ACTIVE if active_active else PlacementMode.ACTIVE_PASSIVE,
        capacity=1 + draw(_SMALL) % 3 if active_active else 1,
    )


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    config = draw(clusters())
    node_names = list(config.node_names)
    vs_names = [v.name for v in config.virtual_servers]
    owners: list[str | None] = [None, *node_names, GHOST]
    now = draw(_NOW)
    statuses = {n: s for n in node_names if (s := draw(_NODE_STATUS)) is not None}
    states = {
        v: VsState(pick(draw, owners), draw(_VS_STATUS), draw(_MANUAL))
        for v in vs_names
        if draw(_PRESENT)
    }
    records = [
        FailoverRecord(pick(draw, vs_names), float(now - draw(_AGE)), pick(draw, node_names))
        for _ in range(draw(_SMALL) + draw(_SMALL) + draw(_SMALL))
    ]
    return Snapshot(
        config=config,
        now=float(now),
        nodes=statuses,
        virtual_servers=states,
        failovers=tuple(records),
        move_requests={pick(draw, vs_names): pick(draw, [*node_names, GHOST])
                       for _ in range(draw(_SMALL) % 3)},
        failures_cleared={pick(draw, vs_names): float(now - draw(_AGE))
                          for _ in range(draw(_SMALL) % 3)},
        offline=frozenset(pick(draw, vs_names) for _ in range(draw(_SMALL) % 3)),
        utc_offset=draw(_OFFSET),
    )
