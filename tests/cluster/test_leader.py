"""One leader cycle (`Leader.step`) on a real SQLite store, with the cluster's state
written as node agents and administrators leave it: no agent processes."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clustermail.cluster import eventlog, keys
from clustermail.cluster.leader import HISTORY_DAYS, Leader
from clustermail.cluster.records import (
    FailoverEntry,
    FailoverHistory,
    GiveUpRecord,
    NodeIntent,
    StatusRecord,
    VsIntent,
)
from clustermail.cluster.view import ClusterView, read_view
from clustermail.coord import Store
from tests.support.cluster_state import apply, config, elect, join, own, sqlite_store


class Cluster:
    """Three registered nodes, node2 the leader (it survives node1 in every test)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.leader = Leader("node2")
        self.leases: dict[str, int] = {}

    async def start(self, data: dict[str, Any] | None = None) -> None:
        await apply(self.store, data or config())
        for node in ("node1", "node2", "node3"):
            self.leases[node] = await join(self.store, node)
        await elect(self.store, "node2", self.leases["node2"])

    async def step(self) -> list[str]:
        return await self.leader.step(self.store, await read_view(self.store))

    async def view(self) -> ClusterView:
        return await read_view(self.store)

    async def owners(self) -> dict[str, str | None]:
        view = await self.view()
        return {vs: view.assignment(vs).node for vs in view.vs_names()}

    async def take_assigned(self) -> None:
        """What the agents do next: each takes what it was assigned."""
        view = await self.view()
        for vs in view.vs_names():
            node = view.assignment(vs).node
            if node is not None:
                await own(self.store, vs, node, self.leases[node])

    async def node_gone(self, node: str) -> None:
        """Its lease expires: its registration and ownerships go with it."""
        await self.store.revoke(self.leases[node])


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with sqlite_store(tmp_path) as store:
        yield Cluster(store)


async def test_initial_placement_puts_each_on_its_preferred_node(cluster: Cluster) -> None:
    await cluster.start()
    lines = await cluster.step()
    assert await cluster.owners() == {"mail1": "node1", "mail2": "node2"}
    view = await cluster.view()
    assert {view.assignment(vs).code for vs in view.vs_names()} == {"start"}
    assert [line.split(":")[:2] for line in lines] == [["leader", " mail1"],
                                                       ["leader", " mail2"]]
    logged = [e for e in await eventlog.read(cluster.store) if e.event == "placement"]
    assert [e.vs for e in logged] == ["mail1", "mail2"]
    # Once taken, they stay: one line for the new decision, then nothing to write.
    await cluster.take_assigned()
    assert [line.split(": ")[2] for line in await cluster.step()] == ["stays on node1",
                                                                       "stays on node2"]
    before = (await cluster.view()).revision
    assert await cluster.step() == []
    assert (await cluster.view()).revision == before


async def test_a_virtual_server_fails_over_when_its_owners_node_is_gone(
        cluster: Cluster) -> None:
    await cluster.start()
    await cluster.step()
    await cluster.take_assigned()
    await cluster.node_gone("node1")
    lines = await cluster.step()
    assert await cluster.owners() == {"mail1": "node3", "mail2": "node2"}
    view = await cluster.view()
    assert view.assignment("mail1").code == "failover"
    assert [(e.node, e.virtual_server) for e in view.failures["mail1"].entries] == [
        ("node1", "mail1")]
    assert any(line.startswith("leader: mail1:") for line in lines)


async def test_a_leader_that_just_rejoined_waits_for_the_missing_nodes(
        cluster: Cluster) -> None:
    """A stalled store fences every node at once: the first to rejoin and lead must
    not fail the others' virtual servers over while they are rejoining too."""
    await cluster.start()
    await cluster.step()
    await cluster.take_assigned()
    await cluster.node_gone("node1")
    cluster.leader.rejoined(60.0)
    lines = await cluster.step()
    assert len(lines) == 1 and lines[0].startswith(
        "rejoined after losing the lease: waiting "), lines
    assert lines[0].endswith(" s more for node1 to rejoin before placing"), lines
    assert await cluster.owners() == {"mail1": "node1", "mail2": "node2"}
    assert "mail1" not in (await cluster.view()).failures

    # node1 is back within the wait: nothing moves, nothing counts as a failover.
    cluster.leases["node1"] = await join(cluster.store, "node1")
    await cluster.step()
    assert await cluster.owners() == {"mail1": "node1", "mail2": "node2"}
    assert "mail1" not in (await cluster.view()).failures


async def test_the_wait_after_a_rejoin_is_bounded(cluster: Cluster) -> None:
    await cluster.start()
    await cluster.step()
    await cluster.take_assigned()
    await cluster.node_gone("node1")
    cluster.leader.rejoined(0.0)  # the wait is over: node1 is down for real
    await cluster.step()
    assert await cluster.owners() == {"mail1": "node3", "mail2": "node2"}


async def test_a_start_failure_that_repeats_on_the_next_node_leaves_it_failed(
        cluster: Cluster) -> None:
    """The owner's failed status carries the start failure (before its give-up record
    exists); the leader keeps it in the history; the same failure on the standby
    leaves the virtual server failed, one failure counted."""
    failure = "banner: 127.0.0.11:2525 is already in use (held by pid 4242: stray)"
    await cluster.start()
    await cluster.step()
    await cluster.take_assigned()
    status = StatusRecord(node="node1", state="failed", epoch=1, start_failure=failure)
    await cluster.store.put(keys.STATUS + "mail1", status.to_store())
    await cluster.step()
    view = await cluster.view()
    assert view.assignment("mail1").code == "failover"
    assert [(e.node, e.failure) for e in view.failures["mail1"].entries] == [("node1", failure)]

    await cluster.store.delete(keys.OWNER + "mail1")
    await cluster.take_assigned()
    giveup = GiveUpRecord(node="node3", reason="resource banner failed", epoch=2,
                          start_failure=failure)
    await cluster.store.put(keys.GIVEUP + "mail1", giveup.to_store())
    lines = await cluster.step()
    view = await cluster.view()
    assignment = view.assignment("mail1")
    assert (assignment.node, assignment.code, assignment.failed) == (None, "repeated", True)
    assert f"the same start failure on node1 and node3: {failure}" in assignment.reason
    assert [e.node for e in view.failures["mail1"].entries] == ["node1", "node3"]
    assert any("left failed: the same start failure" in line for line in lines)


async def test_an_administrators_move_is_done_and_answered(cluster: Cluster) -> None:
    await cluster.start()
    await cluster.step()
    await cluster.take_assigned()
    # A newer admin tool's field must survive the leader's answer.
    await cluster.store.put(keys.VS_ADMIN + "mail1", json.dumps(
        {"move_to": "node3", "move_id": "m1", "move_time": time.time(), "ticket": "CHG-1"}))
    await cluster.step()
    view = await cluster.view()
    assert view.assignment("mail1").node == "node3"
    assert view.assignment("mail1").code == "move" and view.assignment("mail1").manual
    intent = view.vs_intent("mail1")
    assert intent.answer_to("m1") == "" and intent.pending_move is None
    assert intent.extra == {"ticket": "CHG-1"}


async def test_a_move_placement_refuses_is_answered_with_the_reason(cluster: Cluster) -> None:
    await cluster.start()
    await cluster.step()
    await cluster.take_assigned()
    await cluster.store.put(keys.VS_ADMIN + "mail1",
                            VsIntent(move_to="node2", move_id="m2").to_store())
    lines = await cluster.step()
    view = await cluster.view()
    assert view.assignment("mail1").node == "node1"
    refused = view.vs_intent("mail1").answer_to("m2")
    assert refused and "node2" in refused
    assert any("move refused" in line for line in lines)


async def test_a_paused_node_takes_nothing_new(cluster: Cluster) -> None:
    await cluster.start()
    await cluster.store.put(keys.NODE_ADMIN + "node3", NodeIntent(paused=True).to_store())
    await cluster.step()
    await cluster.take_assigned()
    await cluster.node_gone("node1")
    await cluster.step()
    view = await cluster.view()
    assignment = view.assignment("mail1")
    # node3, the standby, is paused and node2 is busy (active-passive): left failed.
    assert (assignment.node, assignment.code, assignment.failed) == (None, "no-node", True)
    assert view.assignment("mail2").node == "node2"


async def test_a_malformed_assignment_is_replaced(cluster: Cluster) -> None:
    await cluster.start()
    await cluster.store.put(keys.ASSIGN + "mail1", b"\x00 not json")
    await cluster.step()
    view = await cluster.view()
    assert view.problems == ()
    assert view.assignment("mail1").node == "node1"


@pytest.mark.parametrize(("period_hours", "kept"), [(6.0, False), (30 * 24.0, True)])
async def test_failover_history_is_kept_for_the_longest_failover_period(
        cluster: Cluster, period_hours: float, kept: bool) -> None:
    await cluster.start(config(failover_period_hours=period_hours))
    await cluster.step()
    await cluster.take_assigned()
    old = time.time() - (HISTORY_DAYS + 3) * 86400  # older than the fixed 7 days
    await cluster.store.put(keys.FAILURES + "mail1", FailoverHistory(
        (FailoverEntry(old, "node3", "mail1"),)).to_store())
    await cluster.node_gone("node1")
    await cluster.step()
    view = await cluster.view()
    assert view.assignment("mail1").node == "node3"
    times = [e.time for e in view.failures["mail1"].entries]
    # A 30-day period counts the old failover, so it must still be there.
    assert (old in times) is kept
    assert len(times) == (2 if kept else 1)
