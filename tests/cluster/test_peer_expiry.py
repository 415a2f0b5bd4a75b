"""Which leases a node agent asks the store about (``cluster/peer_expiry.py``)."""

from __future__ import annotations

from clustermail.cluster.peer_expiry import watched_leases
from clustermail.cluster.records import NodeRecord


def nodes(*names: str, backstop: float = 1.0) -> dict[str, NodeRecord]:
    return {n: NodeRecord(lease=lease_of(n), backstop=backstop) for n in names}


def lease_of(node: str) -> int:
    return 100 + int(node.removeprefix("node"))


NODES = nodes("node1", "node2", "node3", "node4")
#: node1..node3 own mail1..mail3 under their node leases; node4 is the standby.
OWNED = [("node1", 101), ("node2", 102), ("node3", 103)]


def watched(me: str, leader: str | None, owned: list[tuple[str, int]] = OWNED,
            registered: dict[str, NodeRecord] = NODES) -> list[tuple[str, int]]:
    lease = lease_of(leader) if leader else 0
    return [(w.node, w.lease) for w in watched_leases(registered, leader, lease, owned, me)]


def test_the_leader_asks_about_every_other_owner_and_the_deputy_about_the_leader() -> None:
    assert watched("node2", "node2") == [("node1", 101), ("node3", 103)]
    assert watched("node1", "node2") == [("node2", 102)]  # the deputy: first by name
    assert watched("node3", "node2") == []
    assert watched("node4", "node2") == []
    # The standby leads: it asks about all three owners; node1 is the deputy.
    assert watched("node4", "node4") == [("node1", 101), ("node2", 102), ("node3", 103)]
    assert watched("node1", "node4") == [("node4", 104)]
    # node1 leads: the deputy is the next by name.
    assert watched("node2", "node1") == [("node1", 101)]


def test_an_owner_that_rejoined_is_asked_about_under_the_lease_its_keys_still_hold() -> None:
    # node3 lost its lease and rejoined (its record now carries lease 203); mail3's
    # ownership key is still bound to the lost lease 103, which goes only when asked.
    registered = {**NODES, "node3": NodeRecord(lease=203, backstop=1.0)}
    assert watched("node4", "node4", OWNED, registered) == [
        ("node1", 101), ("node2", 102), ("node3", 103)]
    # Two virtual servers under one lease: asked about once.
    assert watched("node4", "node4", [("node1", 101), ("node1", 101)]) == [("node1", 101)]


def test_nothing_is_asked_without_a_leader_or_about_leases_without_a_backstop() -> None:
    assert all(watched(n, None) == [] for n in NODES)
    plain = nodes("node1", "node2", backstop=0.0)  # the SQLite store: it expires on time
    assert watched("node1", "node1", [("node2", 102)], plain) == []
    assert watched("node2", "node1", [("node2", 102)], plain) == []
    # An owner whose registration is gone: its backstop is not known, so not asked about.
    assert watched("node1", "node1", [("node2", 102), ("node9", 109)]) == [("node2", 102)]
    assert watched_leases(NODES, "node1", 101, [], "node1") == []
