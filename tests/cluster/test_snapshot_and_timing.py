"""Snapshot parsing (the what-if input), explain's edges, and lease timing rules."""

from __future__ import annotations

import json

import pytest

from clustermail.cluster.config import ConfigError
from clustermail.cluster.placement import UnknownVirtualServer, explain, place
from clustermail.cluster.snapshot import FailoverRecord, NodeStatus, Snapshot, VsState, VsStatus
from clustermail.cluster.timing import (
    DEFAULT_TIMING,
    FAST_TIMING,
    PROFILES,
    LeaseTiming,
    TimingError,
    custom_timing,
    lease_raised,
)
from tests.support.banner_cluster import banner_cluster_config


def _snapshot() -> Snapshot:
    return Snapshot(
        config=banner_cluster_config(),
        now=50000.0,
        nodes={"node1": NodeStatus.UP, "node2": NodeStatus.PAUSED, "node3": NodeStatus.DOWN,
               "node4": NodeStatus.UP},
        virtual_servers={"mail1": VsState("node1", VsStatus.ONLINE, manual=True),
                         "mail2": VsState(None, VsStatus.FAILED)},
        failovers=(FailoverRecord("mail2", 49000.0, "node2"),),
        move_requests={"mail1": "node4"},
        failures_cleared={"mail3": 1.0},
        offline=frozenset({"mail3"}),
        utc_offset=3600.0,
    )


def test_snapshot_round_trips_through_json() -> None:
    snap = _snapshot()
    again = Snapshot.from_dict(json.loads(json.dumps(snap.to_dict())))
    assert again == snap
    assert place(again) == place(snap)


def test_snapshot_errors_name_each_key_path() -> None:
    data = _snapshot().to_dict()
    data["nodes"]["node1"] = "sleeping"
    data["virtual_servers"]["mail1"]["status"] = "fine"
    data["failovers"][0]["time"] = "yesterday"
    data["config"]["virtual_servers"]["mail1"]["failback"] = "sometimes"
    data["extra"] = 1
    with pytest.raises(ConfigError) as info:
        Snapshot.from_dict(data, "what-if.json")
    text = str(info.value)
    assert text.startswith("what-if.json: ")
    for expected in (
        "nodes.node1: expected one of up, down, paused, got 'sleeping'",
        "virtual_servers.mail1.status: expected one of online, starting, stopping, offline, "
        "failed, got 'fine'",
        "failovers[0].time: expected a number, got str",
        "extra: unknown key 'extra'",
    ):
        assert expected in text
    # A bad configuration inside a snapshot is reported with its path too.
    data = _snapshot().to_dict()
    data["config"]["virtual_servers"]["mail1"]["failback"] = "sometimes"
    with pytest.raises(ConfigError, match=r"config\.virtual_servers\.mail1\.failback: "):
        Snapshot.from_dict(data)


def test_explain_lists_every_candidate() -> None:
    text = explain(_snapshot(), "mail2")
    lines = text.splitlines()
    assert lines[0] == "mail2: node1 [start]"
    assert lines[2] == "  before: no owner, status failed"
    assert "failovers: 1 in the last 6 h, threshold 3 (default: nodes - 1)" in text
    assert "- node2  preferred #1          paused (takes no new virtual servers)" in text
    assert ("- node4  preferred #2          taken by mail1, moving there at an administrator's "
            "request") in text
    assert "* node1  possible owner        chosen" in text
    assert "- node3  possible owner        down" in text


def test_explain_unknown_virtual_server() -> None:
    with pytest.raises(UnknownVirtualServer) as info:
        explain(_snapshot(), "mail9")
    assert str(info.value) == ("'mail9' is not a virtual server of this cluster "
                               "(virtual servers: mail1, mail2, mail3)")


def test_placement_helpers() -> None:
    placement = place(_snapshot())
    assert placement.owners() == {"mail1": "node4", "mail2": "node1", "mail3": None}
    assert [d.virtual_server for d in placement.changes()] == ["mail1", "mail2"]
    assert placement.lines()[0] == "mail1: moves to node4: requested by an administrator"
    with pytest.raises(KeyError):
        placement["nope"]


# --------------------------------------------------------------------------- timing


def test_profiles_meet_the_rule_and_the_failover_targets() -> None:
    assert PROFILES == {"default": DEFAULT_TIMING, "fast": FAST_TIMING}
    assert DEFAULT_TIMING.ttl <= 3.0  # failover p50 <= 3 s needs detection well under 3 s
    assert FAST_TIMING.ttl <= 1.0  # failover p99 <= 1.5 s
    for timing in PROFILES.values():
        assert 2 * timing.renew_interval + timing.safety_margin < timing.ttl
        assert 0 < timing.fence_after < timing.ttl
        # A host's own fence comes after its agent's and well before the store's expiry.
        assert 0 < timing.host_grace <= timing.safety_margin / 2


def test_timing_to_dict() -> None:
    assert DEFAULT_TIMING.to_dict() == "default"
    assert FAST_TIMING.to_dict() == "fast"
    assert custom_timing(3, 0.5, 0.5).to_dict() == {
        "ttl": 3.0, "renew_interval": 0.5, "safety_margin": 0.5}


@pytest.mark.parametrize(
    ("ttl", "renew", "margin", "message"),
    [
        (2.0, 1.0, 0.5, "renew_interval 1 s x 2 (a renewal and one retry) + safety_margin "
                        "0.5 s = 2.5 s must be less than ttl 2 s"),
        (1.0, 0.3, 0.4, "= 1 s must be less than ttl 1 s"),
        (0.0, 0.1, 0.1, "ttl must be greater than 0 (got 0)"),
        (1.0, 0.1, -1, "safety_margin must be greater than 0 (got -1)"),
    ],
)
def test_unsafe_timing_names_the_numbers(ttl: float, renew: float, margin: float,
                                         message: str) -> None:
    with pytest.raises(TimingError) as info:
        LeaseTiming(ttl, renew, margin)
    assert message in str(info.value)


def test_a_longer_lease_than_asked_is_told_with_both_numbers() -> None:
    assert lease_raised(2.0, 2.0) is None and lease_raised(1.0, 1.0) is None
    said = lease_raised(1.0, 2.0)
    assert said is not None and "2 s lease for the 1 s asked" in said
    assert "election" in said
