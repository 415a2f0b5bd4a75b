"""The view builder on a real SQLite store: typed records, unknown fields, malformed keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clustermail.cluster import keys
from clustermail.cluster.config import ConfigError
from clustermail.cluster.records import (
    AssignmentRecord,
    FailoverEntry,
    FailoverHistory,
    GiveUpRecord,
    NameRecord,
    NodeIntent,
    ResourceIntent,
    StatusRecord,
    StoreRecord,
    VsIntent,
)
from clustermail.cluster.view import read_view
from tests.support.cluster_state import apply, config, elect, join, own, sqlite_store


async def test_every_key_becomes_its_typed_record(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        await apply(store, config())
        lease = await join(store, "node1")
        await elect(store, "node1", lease)
        await own(store, "mail1", "node1", lease, epoch=4)
        writes: dict[str, StoreRecord] = {
            keys.NODE_ADMIN + "node2": NodeIntent(paused=True, time=1.0),
            keys.ASSIGN + "mail1": AssignmentRecord(node="node1", code="start", reason="r"),
            keys.STATUS + "mail1": StatusRecord(node="node1", state="online",
                                                resources={"ip": "online"}),
            keys.VS_ADMIN + "mail2": VsIntent(move_to="node3", move_id="m1"),
            keys.FAILURES + "mail2": FailoverHistory((FailoverEntry(1.0, "node2", "mail2"),)),
            keys.GIVEUP + "mail2": GiveUpRecord(node="node2", reason="failed"),
            keys.RESOURCE_ADMIN + "mail1/ip": ResourceIntent(offline=True),
            keys.NAMES + "mail1": NameRecord(name="mail1", address="127.0.0.11", vs="mail1"),
        }
        for key, record in writes.items():
            await store.put(key, record.to_store())
        view = await read_view(store)
        assert view.problems == ()
        assert view.cluster_config is not None and view.cluster_config.name == "test"
        assert view.applied_config() is view.cluster_config
        assert view.vs_names() == ["mail1", "mail2"]
        assert view.node_names() == ["node1", "node2", "node3"]
        assert view.leader == "node1"
        assert view.nodes["node1"].lease == lease
        assert view.paused("node2") and not view.paused("node1")
        assert view.assignment("mail1").node == "node1"
        assert view.assignment("mail2") == AssignmentRecord()  # no decision yet
        owner = view.owner["mail1"]
        assert (owner.node, owner.epoch, view.epoch_of("mail1")) == ("node1", 4, 4)
        assert view.meta[keys.OWNER + "mail1"].lease == lease
        assert view.status["mail1"].resources == {"ip": "online"}
        assert view.vs_intent("mail2").pending_move == "node3"
        assert view.failures["mail2"].entries[0].node == "node2"
        assert view.giveup["mail2"].reason == "failed"
        assert view.offline_resources("mail1") == ["ip"]
        assert view.resource_intent("mail1", "ip").offline
        assert not view.resource_intent("mail2", "ip").offline
        assert view.names["mail1"].address == "127.0.0.11"
        assert view.mod_revision(keys.ASSIGN + "mail1") > 0
        assert view.mod_revision(keys.ASSIGN + "mail2") == 0


async def test_unknown_fields_reach_the_record(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        await apply(store, config())
        await store.put(keys.VS_ADMIN + "mail1",
                        json.dumps({"offline": True, "maintenance_window": "sun"}))
        view = await read_view(store)
        intent = view.vs_intent("mail1")
        assert intent.offline and intent.extra == {"maintenance_window": "sun"}


async def test_a_malformed_record_is_left_out_with_its_key_and_problem(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        await apply(store, config())
        await store.put(keys.ASSIGN + "mail1", b"{oops")
        await store.put(keys.OWNER + "mail2", json.dumps({"node": "node2", "epoch": "two"}))
        await store.put(keys.ASSIGN + "mail2", AssignmentRecord(node="node2").to_store())
        view = await read_view(store)
        assert sorted(p.key for p in view.problems) == [keys.ASSIGN + "mail1",
                                                        keys.OWNER + "mail2"]
        owner_problem = next(p for p in view.problems if p.key == keys.OWNER + "mail2")
        assert "field 'epoch': expected an integer" in str(owner_problem)
        # Left out, but the rest of the view is there ...
        assert "mail1" not in view.assign and "mail2" not in view.owner
        assert view.assignment("mail2").node == "node2"
        # ... and the leader can still replace the bad record by compare-and-swap.
        assert view.mod_revision(keys.ASSIGN + "mail1") > 0


async def test_an_invalid_configuration_is_an_error_only_where_it_is_used(
        tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        bad = config()
        bad["virtual_servers"]["mail1"]["preferred_owners"] = ["node9"]
        await apply(store, bad)
        view = await read_view(store)
        assert view.config == bad and view.cluster_config is None
        assert view.vs_names() == ["mail1", "mail2"]
        with pytest.raises(ConfigError, match="node9"):
            view.applied_config()
        problem = view.config_problem()
        assert problem is not None and "node9" in problem and "\n" not in problem
        # Unreadable is said as such, not as "none has been applied".
        await store.put(keys.CONFIG, b"{not json")
        view = await read_view(store)
        assert view.config is None and view.cluster_config is None
        assert [p.key for p in view.problems] == [keys.CONFIG]
        with pytest.raises(ConfigError, match="unreadable: /clustermail/config: not JSON"):
            view.applied_config()
        assert (view.config_problem() or "").startswith("unreadable: /clustermail/config: not")
        await store.delete(keys.CONFIG)
        view = await read_view(store)
        assert view.config is None
        with pytest.raises(ConfigError, match="none has been applied"):
            view.applied_config()
        assert view.config_problem() == "none has been applied"
        await apply(store, config())
        assert (await read_view(store)).config_problem() is None


async def test_the_configuration_is_validated_once_per_document(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        await apply(store, config())
        first = (await read_view(store)).cluster_config
        await store.put(keys.NODE_ADMIN + "node1", NodeIntent(paused=True).to_store())
        assert (await read_view(store)).cluster_config is first
        await apply(store, config(priority=5))
        changed = (await read_view(store)).cluster_config
        assert changed is not first and changed is not None
        assert changed.virtual_servers[0].priority == 5
