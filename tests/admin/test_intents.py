"""Administrative intents on a real SQLite store: typed records written, fields kept,
configuration rewrites validated and compared-and-swapped."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from clustermail.admin import intents
from clustermail.admin.errors import AdminError
from clustermail.cluster import keys
from clustermail.cluster.config import config_from_dict
from clustermail.cluster.records import ANY_NODE, NodeIntent, VsIntent
from clustermail.cluster.view import read_view
from clustermail.coord import Compare, Put, open_store
from tests.support.cluster_state import apply, config, join, sqlite_store


def with_resources() -> dict[str, Any]:
    data = config()
    data["virtual_servers"]["mail1"]["resources"] = {
        "ip": {"type": "ip_address", "properties": {"address": "127.0.0.11"}},
        "name": {"type": "network_name", "depends_on": ["ip"],
                 "properties": {"name": "mail1"}},
    }
    return data


async def test_intents_keep_the_fields_they_do_not_set(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        await apply(store, config())
        await store.put(keys.VS_ADMIN + "mail1", json.dumps({"offline": True, "note": "x"}))
        move_id = await intents.move_vs(store, "mail1", None)
        await intents.clear_failures(store, "mail1")
        view = await read_view(store)
        intent = view.vs_intent("mail1")
        assert (intent.move_to, intent.move_id, intent.offline) == (ANY_NODE, move_id, False)
        assert intent.cleared_at is not None and intent.extra == {"note": "x"}
        assert intents.move_answer(view, "mail1", move_id) is None


async def test_an_unreadable_intent_is_replaced(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        await apply(store, config())
        await store.put(keys.NODE_ADMIN + "node1", b"garbage")
        await intents.pause_node(store, "node1", True)
        view = await read_view(store)
        assert view.paused("node1") and view.problems == ()


async def test_evicting_a_node_rewrites_the_owner_lists(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        data = config()
        data["virtual_servers"]["mail1"]["possible_owners"] = ["node1", "node3"]
        await apply(store, data)
        await intents.pause_node(store, "node3", True)
        await intents.evict_node(store, "node3")
        view = await read_view(store)
        assert view.node_names() == ["node1", "node2"]
        mail1 = view.applied_config().virtual_server("mail1")
        assert mail1 is not None
        assert (mail1.preferred_owners, mail1.possible_owners) == (("node1",), ("node1",))
        assert "node3" not in view.node_admin
        await join(store, "node2")
        with pytest.raises(AdminError, match="node2 is up"):
            await intents.evict_node(store, "node2")


async def test_resources_are_added_and_removed_through_the_typed_configuration(
        tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        await apply(store, with_resources())
        with pytest.raises(AdminError, match="name depends on mail1/ip"):
            await intents.remove_resource(store, "mail1", "ip")
        await intents.set_resource_offline(store, "mail1", "name", True)
        await intents.remove_resource(store, "mail1", "name")
        view = await read_view(store)
        mail1 = view.applied_config().virtual_server("mail1")
        assert mail1 is not None and [r.name for r in mail1.resources] == ["ip"]
        assert view.offline_resources("mail1") == []
        await intents.add_resource(store, "mail1", "network_name", name="name",
                                   depends_on=["ip"], properties={"name": "mail1"})
        # Back to what was applied at first.
        assert (await read_view(store)).applied_config() == config_from_dict(
            with_resources())
        with pytest.raises(AdminError, match="property"):
            await intents.add_resource(store, "mail1", "disk", properties={"size": 1})
        with pytest.raises(AdminError, match="no resource 'nope'"):
            await intents.set_resource_offline(store, "mail1", "nope", True)



def concurrently(write: Coroutine[Any, Any, None]) -> None:
    """Runs ``write`` on its own connection from another thread (another writer of the
    store) and returns once it is done: called between a command's read and its write."""
    writer = threading.Thread(target=asyncio.run, args=(write,))
    writer.start()
    writer.join()


async def leader_answers(url: str, vs: str) -> None:
    """The leader answers the pending move of ``vs`` as `Leader.step` does: compare-and-
    swap on the key's mod revision."""
    store = await open_store(url)
    try:
        kv = await store.get(keys.VS_ADMIN + vs)
        assert kv is not None
        answered = VsIntent.from_store(kv.key, kv.value).answered("")
        result = await store.txn([Compare.mod_is(kv.key, kv.mod_revision)],
                                 [Put(kv.key, answered.to_store())])
        assert result.succeeded
    finally:
        await store.close()


async def unpause(url: str, node: str) -> None:
    store = await open_store(url)
    try:
        await store.put(keys.NODE_ADMIN + node, NodeIntent(paused=False).to_store())
    finally:
        await store.close()


async def test_an_intent_update_never_overwrites_an_answer_written_meanwhile(
        tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        await apply(store, config())
        move_id = await intents.move_vs(store, "mail1", "node2")
        seen: list[VsIntent] = []

        def take_offline(intent: VsIntent) -> VsIntent:
            seen.append(intent)
            if len(seen) == 1:
                concurrently(leader_answers(store.url, "mail1"))
            return replace(intent, offline=True)

        key = keys.VS_ADMIN + "mail1"
        await intents._update(store, key, VsIntent.from_store, VsIntent(), take_offline)
        assert [i.answer_to(move_id) for i in seen] == [None, ""]  # read again, reapplied
        intent = (await read_view(store)).vs_intent("mail1")
        assert intent.offline and intent.answer_to(move_id) == ""


async def test_an_intent_that_keeps_changing_is_a_clear_error(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        await apply(store, config())
        calls = 0

        def pause(intent: NodeIntent) -> NodeIntent:
            nonlocal calls
            calls += 1
            concurrently(unpause(store.url, "node1"))
            return replace(intent, paused=True)

        with pytest.raises(AdminError, match=r"node-admin/node1 kept changing while this "
                           r"command wrote it \(5 attempts\); run the command again"):
            await intents._update(store, keys.NODE_ADMIN + "node1", NodeIntent.from_store,
                                  NodeIntent(), pause)
        assert calls == intents.UPDATE_ATTEMPTS
