"""The cluster event log: chronological, bounded, and never trimmed silently."""

from __future__ import annotations

from clustermail.cluster import eventlog
from clustermail.coord import Store


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
