"""Pure group logic: dependency order, restart windows, group state."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustermail.cluster.group import DependencyGraph, GroupError, RestartWindow, group_state
from clustermail.cluster.host_protocol import GroupState, ResourceState

MAIL1 = [("ip", []), ("name", ["ip"]), ("disk", []), ("banner", ["ip", "disk"])]


def test_online_order_is_topological_and_follows_the_listing() -> None:
    graph = DependencyGraph(MAIL1)
    assert graph.online_order() == ["ip", "name", "disk", "banner"]
    assert graph.offline_order() == ["banner", "disk", "name", "ip"]


def test_listing_order_breaks_ties() -> None:
    graph = DependencyGraph([("smtp", ["store"]), ("disk", []), ("store", ["disk"]), ("ip", [])])
    assert graph.online_order() == ["disk", "store", "smtp", "ip"]


def test_transitive_dependents_and_dependencies() -> None:
    graph = DependencyGraph(
        [("ip", []), ("name", ["ip"]), ("disk", []), ("store", ["disk"]),
         ("smtp", ["name", "store"])]
    )
    assert graph.all_dependents({"ip"}) == {"name", "smtp"}
    assert graph.all_dependents({"smtp"}) == set()
    assert graph.all_dependencies({"smtp"}) == {"name", "ip", "store", "disk"}
    assert graph.sort({"smtp", "ip", "disk"}) == ["ip", "disk", "smtp"]
    assert graph.dependencies("smtp") == ("name", "store")


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ([("a", ["b"])], "depends on 'b', which is not in the group"),
        ([("a", ["a"])], "depends on itself"),
        ([("a", []), ("a", [])], "listed twice"),
        ([("a", ["c"]), ("b", ["a"]), ("c", ["b"])], "dependency cycle: a -> c -> b -> a"),
        ([("x", []), ("a", ["b"]), ("b", ["a"]), ("d", ["a"])], "dependency cycle: a -> b -> a"),
    ],
)
def test_bad_graphs_are_rejected_with_a_clear_message(
    resources: list[tuple[str, list[str]]], message: str
) -> None:
    with pytest.raises(GroupError, match=message.replace("(", r"\(")):
        DependencyGraph(resources)


@st.composite
def dags(draw: st.DrawFn) -> list[tuple[str, list[str]]]:
    n = draw(st.integers(0, 12))
    names = [f"r{i}" for i in range(n)]
    ranks = draw(st.permutations(list(range(n))))
    out: list[tuple[str, list[str]]] = []
    for i, name in enumerate(names):
        lower = [names[j] for j in range(n) if ranks[j] < ranks[i]]
        deps = draw(st.lists(st.sampled_from(lower), unique=True)) if lower else []
        out.append((name, deps))
    return out


@given(dags())
def test_every_dependency_comes_online_first(resources: list[tuple[str, list[str]]]) -> None:
    order = DependencyGraph(resources).online_order()
    assert sorted(order) == sorted(name for name, _ in resources)
    position = {name: i for i, name in enumerate(order)}
    for name, deps in resources:
        assert all(position[d] < position[name] for d in deps)
    assert DependencyGraph(resources).online_order() == order  # deterministic


def test_restart_window_allows_threshold_restarts_then_fails() -> None:
    window = RestartWindow(threshold=3, period=900.0)
    decisions = [window.record_failure(t) for t in (0.0, 10.0, 20.0, 30.0)]
    assert [d.restart for d in decisions] == [True, True, True, False]
    assert decisions[0].reason == "restart 1 of 3 within 900 s"
    assert decisions[3].failures == 4
    assert "threshold exceeded: 4 failures within 900 s" in decisions[3].reason


def test_restart_window_slides() -> None:
    window = RestartWindow(threshold=2, period=100.0)
    assert window.record_failure(0.0).restart
    assert window.record_failure(50.0).restart
    # At t=100 the failure at t=0 has left the window: it holds 50 and 100.
    assert window.record_failure(100.0).restart
    assert not window.record_failure(120.0).restart  # 50, 100, 120
    assert window.failures(400.0) == 0
    assert window.record_failure(400.0).restart


def test_restart_window_threshold_zero_never_restarts_and_reset_forgives() -> None:
    window = RestartWindow(threshold=0, period=60.0)
    assert not window.record_failure(0.0).restart
    window.reset()
    assert window.failures(0.0) == 0
    with pytest.raises(ValueError):
        RestartWindow(threshold=-1, period=60.0)


ON, OFF, FAILED = ResourceState.ONLINE, ResourceState.OFFLINE, ResourceState.FAILED


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ({"a": ON, "b": ON}, GroupState.ONLINE),
        ({"a": ON, "b": OFF}, GroupState.PARTIALLY_ONLINE),
        ({"a": ON, "b": FAILED}, GroupState.PARTIALLY_ONLINE),
        ({"a": ON, "b": ResourceState.ONLINE_PENDING}, GroupState.PARTIALLY_ONLINE),
        ({"a": OFF, "b": FAILED}, GroupState.OFFLINE),
        ({}, GroupState.ONLINE),
    ],
)
def test_group_state(states: dict[str, ResourceState], expected: GroupState) -> None:
    assert group_state(states) is expected
