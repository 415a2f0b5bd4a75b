"""The cluster event log: chronological, bounded, and never trimmed silently."""

from __future__ import annotations

import json
from pathlib import Path

from clustermail.cluster import eventlog, keys
from clustermail.coord import Store
from tests.support.cluster_state import sqlite_store


async def test_log_is_chronological_and_trimmed_with_a_notice(store: Store) -> None:
    # The log has its own prefix in the store; this backend instance is per test for
    # sqlite, shared for etcd, so start from an empty log.
    await store.delete_prefix("/clustermail-log/")
    for i in range(30):
        await eventlog.append(store, eventlog.make("node1", "test", f"entry {i}"))
    entries = await eventlog.read(store)
    assert [e.message for e in entries] == [f"entry {i}" for i in range(30)]
    removed = await eventlog.trim(store, "node1", max_entries=10)
    assert removed == 21
    entries = await eventlog.read(store)
    assert len(entries) == 10
    assert entries[-1].event == "log_trimmed" and "trimmed the 21 oldest" in entries[-1].message
    assert [e.message for e in entries[:-1]] == [f"entry {i}" for i in range(21, 30)]
    assert await eventlog.trim(store, "node1", max_entries=10) == 0
    await store.delete_prefix("/clustermail-log/")


MALFORMED_VALUES = {
    b"not json": "not JSON",
    b"\xff\xfe": "not JSON",
    b"[1, 2]": "expected a JSON object, got list",
    b'{"node": "node1", "event": "x", "message": "m"}': "field 'time': expected a number",
    b'{"time": 1, "node": "node1", "event": "x"}': "field 'message': expected a string",
    b'{"time": 1, "node": 7, "event": "x", "message": "m"}':
        "field 'node': expected a string, got int",
    b'{"time": 1, "node": "n", "event": "x", "message": "m", "extra": []}':
        "field 'extra': expected an object, got list",
}


async def test_a_malformed_entry_is_read_as_a_note_in_its_place(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        await eventlog.append(store, eventlog.make("node1", "test", "before"))
        bad_keys = []
        for value in MALFORMED_VALUES:
            key = eventlog.entry_key(eventlog.make("node2", "test", ""))
            bad_keys.append(key)
            await store.put(key, value)
        # A newer writer's extra field is no reason to skip an entry.
        newer = eventlog.make("node1", "test", "after")
        await store.put(eventlog.entry_key(newer), json.dumps(
            {**json.loads(newer.to_json()), "severity": "info"}))
        entries = await eventlog.read(store)
        assert [e.message for e in (entries[0], entries[-1])] == ["before", "after"]
        notes = entries[1:-1]
        assert [e.event for e in notes] == [eventlog.MALFORMED] * len(MALFORMED_VALUES)
        for note, key, problem in zip(notes, bad_keys, MALFORMED_VALUES.values(), strict=True):
            assert note.message.startswith(f"skipped a malformed log entry {key}: {problem}")
            assert note.node == "node2"  # from the key, as is the time
            assert entries[0].time <= note.time <= entries[-1].time


async def test_the_log_is_trimmed_past_malformed_entries(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        await store.put(keys.LOG + "0-garbage", b"{")  # first, and not even a key of ours
        for i in range(5):
            if i == 3:
                await store.put(eventlog.entry_key(eventlog.make("node1", "test", "")), b"[]")
            await eventlog.append(store, eventlog.make("node1", "test", f"entry {i}"))
        assert await eventlog.trim(store, "node1", max_entries=2) == 6
        entries = await eventlog.read(store)
        assert [e.message for e in entries[:-1]] == ["entry 4"]
        assert entries[-1].event == "log_trimmed"
        assert "trimmed the 6 oldest" in entries[-1].message
