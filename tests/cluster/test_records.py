"""The typed records of the store: exact round trips, unknown fields kept, clear errors."""

from __future__ import annotations

import json

import pytest

from clustermail.cluster.records import (
    ANY_NODE,
    AssignmentRecord,
    ConfigRecord,
    EpochRecord,
    FailoverEntry,
    FailoverHistory,
    GiveUpRecord,
    LeaderRecord,
    NameRecord,
    NodeIntent,
    NodeRecord,
    OwnerRecord,
    RecordError,
    ResourceIntent,
    StatusRecord,
    StoreRecord,
    VsIntent,
)
from tests.support.cluster_state import config

KEY = "/clustermail/some/key"

#: One fully populated record of every kind.
RECORDS: list[StoreRecord] = [
    ConfigRecord(config()),
    NodeRecord(pid=42, host="h1", started=1.5, lease=7, draining=True),
    NodeIntent(paused=True, time=3.0),
    LeaderRecord("node1"),
    AssignmentRecord(node="node2", manual=True, code="move", reason="moved", failed=False,
                     time=9.0),
    AssignmentRecord(node=None, code="no-node", reason="no node", failed=True),
    OwnerRecord(node="node1", epoch=3, since=2.0),
    EpochRecord(12),
    StatusRecord(node="node1", state="online", epoch=3, pid=99, resources={"ip": "online"},
                 resource_pids={"svc": 100}, reason="all online", since=4.0),
    VsIntent(offline=True, time=1.0, move_to="node3", move_id="abc", move_time=2.0,
             move_done="abc", move_result="", cleared_at=5.0),
    FailoverHistory((FailoverEntry(10.0, "node1", "mail1"), FailoverEntry(11.0, "node3"),
                     FailoverEntry(12.0, "node4", "mail1", failure="smtp: port in use"))),
    GiveUpRecord(node="node2", time=6.0, reason="disk failed", epoch=4),
    StatusRecord(node="node1", state="failed", epoch=3, reason="smtp failed",
                 start_failure="smtp: port in use"),
    GiveUpRecord(node="node2", time=6.0, reason="smtp failed", epoch=4,
                 start_failure="smtp: port in use"),
    ResourceIntent(offline=True),
    NameRecord(name="mail1", address="127.0.0.11", node="node1", vs="mail1", epoch=2),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_every_record_round_trips(record: StoreRecord) -> None:
    value = record.to_store()
    assert type(record).from_store(KEY, value) == record
    # Empty optional fields are left out rather than written as null.
    assert b"null" not in value


@pytest.mark.parametrize(
    "kind", [NodeRecord, NodeIntent, AssignmentRecord, OwnerRecord, StatusRecord, VsIntent,
             GiveUpRecord, ResourceIntent, NameRecord])
def test_unknown_fields_are_kept_and_written_back(kind: type[StoreRecord]) -> None:
    base = json.loads(next(r for r in RECORDS if type(r) is kind).to_store())
    base["added_by_a_newer_version"] = {"nested": [1, 2]}
    record = kind.from_store(KEY, json.dumps(base).encode())
    assert json.loads(record.to_store()) == base


def test_history_entries_keep_unknown_fields() -> None:
    value = json.dumps([{"time": 1.0, "node": "node1", "why": "crash"}]).encode()
    history = FailoverHistory.from_store(KEY, value)
    assert history.entries[0].extra == {"why": "crash"}
    assert json.loads(history.to_store()) == [{"time": 1.0, "node": "node1", "why": "crash",
                                               "virtual_server": ""}]


def test_records_written_by_the_previous_version_still_read() -> None:
    # Exactly what the agent and the leader wrote before the records existed.
    assignment = AssignmentRecord.from_store(KEY, json.dumps(
        {"node": None, "manual": False, "code": "offline", "reason": "set offline",
         "failed": False, "time": 1.0}).encode())
    assert assignment.node is None and assignment.code == "offline"
    intent = VsIntent.from_store(KEY, b'{"move_to": "*", "move_id": "m1", "move_time": 1,'
                                      b' "offline": false}')
    assert intent.pending_move == ANY_NODE
    assert EpochRecord.from_store(KEY, b"7").epoch == 7
    assert EpochRecord.from_store(KEY, b"").epoch == 0


@pytest.mark.parametrize(
    ("kind", "value", "problem"),
    [
        (NodeRecord, b"{not json", "not JSON"),
        (NodeRecord, b"[1, 2]", "expected a JSON object, got an array"),
        (NodeRecord, b'{"pid": "12"}', "field 'pid': expected an integer, got a string ('12')"),
        (NodeIntent, b'{"paused": 1}', "field 'paused': expected true or false, got a number"),
        (AssignmentRecord, b'{"node": 3}', "field 'node': expected a string, got a number (3)"),
        (OwnerRecord, b'{"epoch": 1}', "field 'node' is missing"),
        (OwnerRecord, b'{"node": "n1"}', "field 'epoch' is missing"),
        (StatusRecord, b'{"node": "n1", "resources": {"ip": 1}}',
         "field 'resources': expected an object of strings"),
        (VsIntent, b'{"cleared_at": true}', "field 'cleared_at': expected a number"),
        (FailoverHistory, b'{"time": 1}', "expected a JSON array, got an object"),
        (FailoverHistory, b'[{"time": 1, "node": "n1"}, {"node": "n2"}]',
         "entry 1: field 'time' is missing"),
        (FailoverHistory, b'["x"]', "entry 0: expected a JSON object, got a string"),
        (GiveUpRecord, b"null", "expected a JSON object, got null"),
        (NameRecord, b'{"epoch": 1.5}', "field 'epoch': expected an integer, got a number"),
        (EpochRecord, b"seven", "expected a non-negative integer, got 'seven'"),
        (EpochRecord, b"-1", "expected a non-negative integer"),
        (LeaderRecord, b"", "empty: expected a node name"),
        (LeaderRecord, b"\xff\xfe", "not UTF-8 text"),
        (ConfigRecord, b'"text"', "expected a JSON object, got a string"),
        (ResourceIntent, b"\xff", "not JSON"),
    ],
)
def test_a_malformed_record_is_an_error_naming_the_key(kind: type[StoreRecord], value: bytes,
                                                       problem: str) -> None:
    with pytest.raises(RecordError) as caught:
        kind.from_store(KEY, value)
    assert caught.value.key == KEY
    assert str(caught.value).startswith(f"{KEY}: ")
    assert problem in caught.value.problem


def test_a_move_is_pending_until_the_leader_answers_it() -> None:
    intent = VsIntent(move_to="node3", move_id="m1")
    assert intent.pending_move == "node3"
    assert intent.answer_to("m1") is None
    refused = intent.answered("node3 is down")
    assert refused.pending_move is None
    assert refused.answer_to("m1") == "node3 is down"
    assert refused.answer_to("another move") is None
    assert intent.answered("").answer_to("m1") == ""
    assert VsIntent(offline=True).pending_move is None


def test_history_keeps_recent_entries_up_to_a_count() -> None:
    history = FailoverHistory(tuple(FailoverEntry(float(t), "n1") for t in (10, 50, 60, 70)))
    new = [FailoverEntry(100.0, "n2")]
    kept = history.extended(new, now=100.0, keep_seconds=45.0, keep_count=2)
    assert [e.time for e in kept.entries] == [60.0, 70.0, 100.0]
    kept = history.extended(new, now=100.0, keep_seconds=1000.0, keep_count=0)
    assert [e.time for e in kept.entries] == [100.0]


def test_the_same_decision_ignores_when_it_was_made() -> None:
    a = AssignmentRecord(node="node1", code="stay", reason="r", time=1.0)
    assert a.same_decision(AssignmentRecord(node="node1", code="stay", reason="r", time=2.0))
    assert not a.same_decision(AssignmentRecord(node="node1", code="stay", reason="other"))


def test_the_configuration_record_parses_into_the_model() -> None:
    parsed = ConfigRecord(config()).parse()
    assert parsed.node_names == ("node1", "node2", "node3")
    assert ConfigRecord.of(parsed).parse() == parsed
