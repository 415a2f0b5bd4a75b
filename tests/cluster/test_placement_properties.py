"""Placement properties over random clusters, snapshots and event sequences.

The checks recompute what they need from the snapshot (eligibility, failover
counts) instead of trusting placement's own bookkeeping.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustermail.cluster.model import ClusterConfig, FailbackMode, PlacementMode, VirtualServer
from clustermail.cluster.placement import Placement, ReasonCode, explain, place
from clustermail.cluster.snapshot import FailoverRecord, NodeStatus, Snapshot, VsState, VsStatus

from .strategies import GHOST, clusters, snapshots

T = TypeVar("T")
V = TypeVar("V")
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEPT_NODE = (NodeStatus.UP, NodeStatus.PAUSED)


# --------------------------------------------------------------------------- oracle helpers


def failure_node(snap: Snapshot, vs: VirtualServer) -> str | None:
    """The node a virtual server failed on in this snapshot, if it did."""
    state = snap.state(vs.name)
    owner = state.owner
    if vs.name in snap.offline or owner is None or owner not in snap.config.node_names:
        return None
    if snap.nodes.get(owner, NodeStatus.DOWN) is NodeStatus.DOWN:
        return owner
    return owner if state.status is VsStatus.FAILED else None


def can_keep(snap: Snapshot, vs: VirtualServer) -> bool:
    """Its owner may keep it: a valid, live, possible owner and it did not fail."""
    state = snap.state(vs.name)
    owner = state.owner
    return (
        vs.name not in snap.offline
        and owner is not None
        and owner in snap.config.node_names
        and snap.nodes.get(owner) in KEPT_NODE
        and state.status is not VsStatus.FAILED
        and owner in snap.config.possible_owners(vs)
    )


def count_failovers(snap: Snapshot, vs: VirtualServer) -> int:
    cleared = snap.failures_cleared.get(vs.name, float("-inf"))
    since = snap.now - vs.failover_period_hours * 3600
    return len([r for r in snap.failovers
                if r.virtual_server == vs.name and r.time > since and r.time > cleared])


def try_order(config: ClusterConfig, vs: VirtualServer) -> list[str]:
    possible = config.possible_owners(vs)
    rest = sorted(n for n in possible if n not in vs.preferred_owners)
    return [*vs.preferred_owners, *rest]


def check_invariants(snap: Snapshot, placement: Placement) -> None:
    config = snap.config
    assert [d.virtual_server for d in placement] == sorted(v.name for v in config.virtual_servers)
    load = Counter(d.owner for d in placement if d.owner is not None)
    for d in placement:
        vs = config.virtual_server(d.virtual_server)
        assert vs is not None
        assert d.reason and "\n" not in d.reason
        if d.owner is None:
            continue
        # Never straight back onto the node it just failed on.
        assert d.owner != failure_node(snap, vs)
        # Only possible owners, each real and alive; new placements only on up nodes.
        assert d.owner in config.possible_owners(vs)
        status = snap.nodes.get(d.owner)
        assert status is NodeStatus.UP or (status is NodeStatus.PAUSED and not d.moved)
    for node, count in load.items():
        assert count <= config.capacity_of(node)
        if config.placement is PlacementMode.ACTIVE_PASSIVE:
            assert count == 1
    # Exactly one failover record per failure, naming the node it failed on.
    expected = sorted((v.name, n) for v in config.virtual_servers
                      if (n := failure_node(snap, v)) is not None)
    assert sorted((r.virtual_server, r.node) for r in placement.failovers) == expected
    assert all(r.time == snap.now for r in placement.failovers)


# --------------------------------------------------------------------------- single snapshots


@FAST
@given(snapshots())
def test_invariants(snap: Snapshot) -> None:
    check_invariants(snap, place(snap))


@FAST
@given(snapshots())
def test_admin_offline_wins(snap: Snapshot) -> None:
    placement = place(snap)
    for name in snap.offline:
        if snap.config.virtual_server(name):
            assert placement[name].owner is None
            assert placement[name].code is ReasonCode.OFFLINE


@FAST
@given(snapshots())
def test_stickiness(snap: Snapshot) -> None:
    """A keepable virtual server moves only on request, failback or lack of room."""
    config = snap.config
    placement = place(snap)
    keepers = Counter(snap.state(v.name).owner for v in config.virtual_servers
                      if can_keep(snap, v))
    for vs in config.virtual_servers:
        if not can_keep(snap, vs):
            continue
        state = snap.state(vs.name)
        owner = state.owner
        assert owner is not None
        decision = placement[vs.name]
        if keepers[owner] > config.capacity_of(owner):
            continue  # over capacity: some must relocate
        request = snap.move_requests.get(vs.name)
        failback_possible = (vs.failback.mode is not FailbackMode.NEVER and not state.manual
                             and state.status is VsStatus.ONLINE)
        allowed = {owner}
        if request is not None:
            allowed.add(request)
        if failback_possible:
            preferred = vs.preferred_owners
            above = preferred[: preferred.index(owner)] if owner in preferred else preferred
            allowed.update(above)
        assert decision.owner in allowed, decision.reason
        if request is None and not failback_possible:
            assert decision.code is ReasonCode.STAY


@FAST
@given(snapshots())
def test_preferred_order_when_moving(snap: Snapshot) -> None:
    """A failover or start goes to the first eligible node in try order that had room."""
    config = snap.config
    placement = place(snap)
    # Room is judged on the final placement plus the nodes failbacks left: a failback
    # runs after failed virtual servers are placed, so its source was full at that time.
    load = Counter(d.owner for d in placement if d.owner is not None)
    load.update(d.previous_owner for d in placement
                if d.code is ReasonCode.FAILBACK and d.previous_owner is not None)
    for d in placement:
        if d.code not in (ReasonCode.FAILOVER, ReasonCode.START, ReasonCode.RELOCATE):
            continue
        vs = config.virtual_server(d.virtual_server)
        assert vs is not None and d.owner is not None
        order = try_order(config, vs)
        for node in order[: order.index(d.owner)]:
            eligible = (snap.nodes.get(node) is NodeStatus.UP
                        and node != failure_node(snap, vs))
            if eligible:
                assert load[node] >= config.capacity_of(node), (node, d.reason)
        if d.owner in vs.preferred_owners:
            assert "preferred order" in d.reason


def rank(vs: VirtualServer) -> tuple[int, str]:
    return (-vs.priority, vs.name)


@FAST
@given(snapshots())
def test_competition_goes_by_priority_then_name(snap: Snapshot) -> None:
    """A virtual server left without a node lost only to higher-ranked competitors."""
    config = snap.config
    placement = place(snap)
    placed = [d for d in placement
              if d.code in (ReasonCode.FAILOVER, ReasonCode.START, ReasonCode.RELOCATE)]
    for loser in placement:
        if loser.code is not ReasonCode.NO_NODE:
            continue
        lvs = config.virtual_server(loser.virtual_server)
        assert lvs is not None
        for winner in placed:
            wvs = config.virtual_server(winner.virtual_server)
            node = winner.owner
            assert wvs is not None and node is not None
            if (node in config.possible_owners(lvs) and node != failure_node(snap, lvs)
                    and snap.nodes.get(node) is NodeStatus.UP):
                assert rank(wvs) < rank(lvs), (winner.reason, loser.reason)
                if config.capacity_of(node) == 1:
                    assert f"{node} taken by {wvs.name}, which goes first" in loser.reason


@FAST
@given(snapshots())
def test_failback_only_per_policy(snap: Snapshot) -> None:
    placement = place(snap)
    for d in placement:
        if d.code is not ReasonCode.FAILBACK:
            continue
        vs = snap.config.virtual_server(d.virtual_server)
        assert vs is not None
        state = snap.state(vs.name)
        assert vs.failback.is_open(snap.local_hour)
        assert not state.manual and state.status is VsStatus.ONLINE
        assert d.previous_owner is not None and d.owner is not None
        preferred = vs.preferred_owners
        assert d.owner in preferred
        if d.previous_owner in preferred:
            assert preferred.index(d.owner) < preferred.index(d.previous_owner)


@FAST
@given(snapshots())
def test_past_threshold_stays_failed_until_cleared(snap: Snapshot) -> None:
    config = snap.config
    placement = place(snap)
    for vs in config.virtual_servers:
        if vs.name in snap.offline:
            continue
        threshold = config.failover_threshold(vs)
        count = count_failovers(snap, vs)
        failed = failure_node(snap, vs) is not None
        ownerless = snap.state(vs.name).owner is None
        if (failed and count >= threshold) or (ownerless and count >= max(threshold, 1)):
            decision = placement[vs.name]
            assert decision.owner is None
            assert decision.code is ReasonCode.THRESHOLD
            assert f"clustermail vs clear-failures {vs.name}" in decision.reason
            # Clearing the failures resets the count (threshold 0: never fail over).
            cleared = dataclasses.replace(
                snap, failures_cleared={**snap.failures_cleared, vs.name: snap.now})
            if not (failed and threshold == 0):
                assert place(cleared)[vs.name].code is not ReasonCode.THRESHOLD


@FAST
@given(st.data())
def test_deterministic_and_independent_of_input_order(data: st.DataObject) -> None:
    snap = data.draw(snapshots())
    first = place(snap)
    assert place(snap) == first

    def shuffled(items: Sequence[T]) -> list[T]:
        return list(data.draw(st.permutations(items)))

    def mapping(d: Mapping[str, V]) -> dict[str, V]:
        return {k: d[k] for k in shuffled(list(d))}

    config = dataclasses.replace(
        snap.config,
        nodes=tuple(shuffled(snap.config.nodes)),
        virtual_servers=tuple(shuffled(snap.config.virtual_servers)),
    )
    other = dataclasses.replace(
        snap,
        config=config,
        nodes=mapping(snap.nodes),
        virtual_servers=mapping(snap.virtual_servers),
        failovers=tuple(shuffled(snap.failovers)),
        move_requests=mapping(snap.move_requests),
        failures_cleared=mapping(snap.failures_cleared),
    )
    assert place(other) == first


@settings(max_examples=100, deadline=None)
@given(snapshots())
def test_explain_agrees_with_place(snap: Snapshot) -> None:
    placement = place(snap)
    for d in placement:
        text = explain(snap, d.virtual_server)
        assert d.reason in text
        assert f"[{d.code.value}]" in text.splitlines()[0]
        assert len(d.candidates) == len(snap.config.nodes)


# --------------------------------------------------------------------------- event sequences

EVENTS = ("down", "up", "pause", "fail", "move", "clear", "offline", "online", "wait")


def apply(snap: Snapshot, placement: Placement, now: float) -> Snapshot:
    """What a leader and converging agents make of a placement (instantly)."""
    states = {}
    for d in placement:
        if d.owner is not None:
            states[d.virtual_server] = VsState(d.owner, VsStatus.ONLINE, d.manual)
        else:
            failed = d.code in (ReasonCode.NO_NODE, ReasonCode.THRESHOLD)
            states[d.virtual_server] = VsState(None, VsStatus.FAILED if failed
                                               else VsStatus.OFFLINE)
    return dataclasses.replace(snap, now=now, virtual_servers=states,
                               failovers=(*snap.failovers, *placement.failovers),
                               move_requests={})


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_event_sequences(data: st.DataObject) -> None:
    config = data.draw(clusters())
    nodes, servers = list(config.node_names), [v.name for v in config.virtual_servers]
    snap = Snapshot(config, 100_000.0, {n: NodeStatus.UP for n in nodes})
    placement = place(snap)
    check_invariants(snap, placement)
    for _ in range(data.draw(st.integers(1, 12))):
        snap = apply(snap, placement, snap.now + 60)
        event = data.draw(st.sampled_from(EVENTS))
        node, vs = data.draw(st.sampled_from(nodes)), data.draw(st.sampled_from(servers))
        statuses = dict(snap.nodes)
        before = placement[vs]
        if event in ("down", "up", "pause"):
            statuses[node] = {"down": NodeStatus.DOWN, "up": NodeStatus.UP,
                              "pause": NodeStatus.PAUSED}[event]
            snap = dataclasses.replace(snap, nodes=statuses)
        elif event == "fail" and snap.state(vs).owner is not None:
            states = {**snap.virtual_servers,
                      vs: dataclasses.replace(snap.state(vs), status=VsStatus.FAILED)}
            snap = dataclasses.replace(snap, virtual_servers=states)
        elif event == "move":
            target = data.draw(st.sampled_from([*nodes, GHOST]))
            snap = dataclasses.replace(snap, move_requests={vs: target})
        elif event == "clear":
            snap = dataclasses.replace(
                snap, failures_cleared={**snap.failures_cleared, vs: snap.now})
        elif event == "offline":
            snap = dataclasses.replace(snap, offline=snap.offline | {vs})
        elif event == "online":
            snap = dataclasses.replace(snap, offline=snap.offline - {vs})
        elif event == "wait":
            snap = dataclasses.replace(snap, now=snap.now + data.draw(st.sampled_from(
                [600.0, 3 * 3600.0, 7 * 3600.0])))
        placement = place(snap)
        check_invariants(snap, placement)
        # Past its threshold it stays failed until cleared (or the failures age out).
        if (before.code is ReasonCode.THRESHOLD and event not in ("clear", "wait")
                and vs not in snap.offline):
            assert placement[vs].owner is None
        # Without new events the cluster settles, and settling records no failover.
        settled = apply(snap, placement, snap.now)
        for _round in range(len(servers) + 1):
            again = place(settled)
            assert not again.failovers
            if again.owners() == settled_owners(settled):
                break
            settled = apply(settled, again, settled.now)
        else:
            raise AssertionError("placement did not settle")


def settled_owners(snap: Snapshot) -> dict[str, str | None]:
    return {v.name: snap.state(v.name).owner for v in snap.config.virtual_servers}


def test_settles_after_a_failure_record_is_applied() -> None:
    """A left-failed virtual server does not record a second failover on the next cycle."""
    from tests.support.banner_cluster import banner_cluster_config

    config = banner_cluster_config()
    snap = Snapshot(config, 1000.0, {"node1": NodeStatus.DOWN},
                    {"mail1": VsState("node1", VsStatus.ONLINE)})
    first = place(snap)
    assert first.failovers == (FailoverRecord("mail1", 1000.0, "node1"),)
    second = place(apply(snap, first, 1001.0))
    assert not second.failovers and second["mail1"].owner is None
