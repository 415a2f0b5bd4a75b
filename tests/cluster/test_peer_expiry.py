"""Which leases a node agent asks the store about (``cluster/peer_expiry.py``)."""

from __future__ import annotations

from clustermail.cluster.peer_expiry import watched_peers
from clustermail.cluster.records import NodeRecord


def nodes(*names: str, backstop: float = 1.0) -> dict[str, NodeRecord]:
    return {n: NodeRecord(lease=100 + i, backstop=backstop) for i, n in enumerate(names)}


NODES = nodes("node1", "node2", "node3", "node4")


def watched(me: str, leader: str | None, owners: set[str],
            registered: dict[str, NodeRecord] = NODES) -> list[str]:
    return [name for name, _ in watched_peers(registered, leader, owners, me)]


def test_the_leader_asks_about_every_other_owner_and_the_deputy_about_the_leader() -> None:
    owners = {"node1", "node2", "node3"}  # node4 is the standby
    assert watched("node2", "node2", owners) == ["node1", "node3"]
    assert watched("node1", "node2", owners) == ["node2"]  # the deputy: first by name
    assert watched("node3", "node2", owners) == []
    assert watched("node4", "node2", owners) == []
    # The standby leads: it asks about all three owners; node1 is the deputy.
    assert watched("node4", "node4", owners) == ["node1", "node2", "node3"]
    assert watched("node1", "node4", owners) == ["node4"]
    # node1 leads: the deputy is the next by name.
    assert watched("node2", "node1", owners) == ["node1"]


def test_nothing_is_asked_without_a_leader_or_about_leases_without_a_backstop() -> None:
    assert all(watched(n, None, {"node1", "node2"}) == [] for n in NODES)
    plain = nodes("node1", "node2", backstop=0.0)  # the SQLite store: it expires on time
    assert watched("node1", "node1", {"node2"}, plain) == []
    assert watched("node2", "node1", {"node2"}, plain) == []
    # An owner whose registration is gone (its lease already expired) is not asked about.
    assert watched("node1", "node1", {"node2", "node9"}) == ["node2"]
