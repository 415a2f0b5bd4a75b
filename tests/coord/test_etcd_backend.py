"""The etcd backend against a real single-member etcd: every Store operation,
plus the failure paths (etcd stopped or frozen mid-call, compaction, close)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from clustermail.coord import (
    Compacted,
    Compare,
    CoordError,
    Delete,
    Event,
    EventType,
    Get,
    KeyValue,
    LeaseNotFound,
    Put,
    Store,
    StoreUnavailable,
    open_store,
)
from clustermail.coord.api import Op, Target
from clustermail.coord.etcd import EtcdStore
from tests.support.etcd_server import EtcdCluster
from tests.support.ports import free_ports

# ---------------------------------------------------------------- fixtures, helpers


@pytest.fixture
def etcd1(tmp_path: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster.start(tmp_path, 1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def estore(etcd1: EtcdCluster) -> AsyncIterator[Store]:
    store = await open_store(etcd1.url)
    try:
        yield store
    finally:
        await store.close()


async def take(it: AsyncIterator[Event], n: int, timeout: float = 5.0) -> list[Event]:
    """The next ``n`` events, or a TimeoutError (never a hang)."""
    out: list[Event] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await anext(it))
    return out


async def aclose(it: AsyncIterator[Event]) -> None:
    closer = getattr(it, "aclose", None)
    if closer is not None:
        await closer()


# ---------------------------------------------------------------- connect


async def test_open_store_url_and_repr(etcd1: EtcdCluster) -> None:
    store = await open_store(etcd1.url)
    try:
        assert isinstance(store, EtcdStore)
        assert store.url == etcd1.url
        assert etcd1.url in repr(store)
    finally:
        await store.close()


async def test_connect_to_nothing_is_unavailable_promptly() -> None:
    (port,) = free_ports(1)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        await EtcdStore.connect([("127.0.0.1", port)], timeout=1.0)
    assert time.monotonic() - t0 < 3.0
    assert f"127.0.0.1:{port}" in str(info.value)


async def test_a_dead_endpoint_in_the_list_is_skipped(etcd1: EtcdCluster) -> None:
    (dead,) = free_ports(1)
    store = await EtcdStore.connect([("127.0.0.1", dead), *etcd1.endpoints])
    try:
        start = await store.put("e/1", "x")  # a write is retried: it was never sent
        result = await store.txn([Compare.absent("e/2")], [Put("e/2", "y")])
        assert result.succeeded
        (event,) = await take(store.watch("e/", start), 1)
        assert event.key == "e/1"
        assert store.url == f"etcd://127.0.0.1:{dead},{etcd1.url.removeprefix('etcd://')}"
    finally:
        await store.close()


async def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError):
        await EtcdStore.connect([])
    with pytest.raises(ValueError):
        await EtcdStore.connect([("127.0.0.1", 2379)], timeout=0)


async def test_context_manager_closes(etcd1: EtcdCluster) -> None:
    async with await open_store(etcd1.url) as store:
        await store.put("k", "v")
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.get("k")


# ---------------------------------------------------------------- keys


async def test_put_get_metadata(estore: Store) -> None:
    assert await estore.get("a") is None
    r1 = await estore.put("a", "one")
    r2 = await estore.put("a", b"two")
    assert r2 == r1 + 1
    kv = await estore.get("a")
    assert kv == KeyValue("a", b"two", create_revision=r1, mod_revision=r2, version=2)
    assert kv.text() == "two"
    assert await estore.revision() == r2


async def test_binary_and_unicode(estore: Store) -> None:
    await estore.put("ключ/ü", b"\x00\xff\xfe")
    await estore.put("ключ/z", "ñ")
    kv = await estore.get("ключ/ü")
    assert kv is not None and kv.value == b"\x00\xff\xfe"
    assert [k.key for k in (await estore.range("ключ/")).kvs] == ["ключ/z", "ключ/ü"]


async def test_empty_key_is_a_clear_error(estore: Store) -> None:
    with pytest.raises(CoordError, match="key is not provided"):
        await estore.put("", "v")


async def test_range_prefix_order_and_snapshot(estore: Store) -> None:
    for key in ["b", "a/2", "a/1", "a0", "a/", "a/10"]:
        await estore.put(key, key)
    result = await estore.range("a/")
    assert [kv.key for kv in result.kvs] == ["a/", "a/1", "a/10", "a/2"]
    assert result.revision == await estore.revision()
    everything = await estore.range("")
    assert [kv.key for kv in everything.kvs] == ["a/", "a/1", "a/10", "a/2", "a0", "b"]
    assert (await estore.range("zzz")).kvs == []


async def test_delete_and_delete_prefix(estore: Store) -> None:
    await estore.put("x", "1")
    assert await estore.delete("x") is True
    assert await estore.delete("x") is False
    for i in range(3):
        await estore.put(f"p/{i}", "v")
    await estore.put("q", "v")
    before = await estore.revision()
    assert await estore.delete_prefix("p/") == 3
    # one revision for the whole prefix delete
    assert await estore.revision() == before + 1
    events = await take(estore.watch("p/", before + 1), 3)
    assert {e.revision for e in events} == {before + 1}
    assert all(e.type is EventType.DELETE and e.value == b"" for e in events)
    assert await estore.delete_prefix("p/") == 0
    assert await estore.get("q") is not None


# ---------------------------------------------------------------- txn


async def test_txn_cas_takes_ownership_once(estore: Store) -> None:
    first = await estore.txn([Compare.absent("owner")], [Put("owner", "n1")])
    second = await estore.txn([Compare.absent("owner")], [Put("owner", "n2")],
                              [Get("owner")])
    assert first.succeeded and not second.succeeded
    assert first.responses == [first.revision]
    assert second.revision == first.revision  # nothing written
    (kvs,) = second.responses
    assert isinstance(kvs, list) and kvs[0].value == b"n1"


async def test_txn_is_one_revision_with_typed_responses(estore: Store) -> None:
    await estore.put("t/a", "1")
    await estore.put("t/b", "2")
    await estore.put("u/1", "x")
    await estore.put("u/2", "y")
    before = await estore.revision()
    result = await estore.txn(
        [Compare.exists("t/a")],
        [Put("t/c", "3"), Get("t/", prefix=True), Delete("t/a"), Put("t/d", "4"),
         Delete("u/", prefix=True), Get("t/a"), Delete("t/nothing")],
    )
    assert result.succeeded
    assert result.revision == before + 1
    put1, got, deleted, put2, deleted_prefix, got_after, deleted_none = result.responses
    assert put1 == put2 == result.revision
    # reads inside a txn see the txn's own earlier writes
    assert isinstance(got, list) and [kv.key for kv in got] == ["t/a", "t/b", "t/c"]
    assert deleted == 1 and deleted_prefix == 2 and deleted_none == 0
    assert got_after == []
    assert [kv.key for kv in (await estore.range("")).kvs] == ["t/b", "t/c", "t/d"]


async def test_txn_writing_a_key_twice_is_rejected(estore: Store) -> None:
    """etcd refuses a txn branch that writes one key twice (two puts, or a put
    inside a deleted range); the error says so and nothing is written."""
    before = await estore.revision()
    with pytest.raises(CoordError, match="duplicate key"):
        await estore.txn([], [Put("d/a", "1"), Put("d/a", "2")])
    with pytest.raises(CoordError, match="duplicate key"):
        await estore.txn([], [Put("d/a", "1"), Delete("d/", prefix=True)])
    assert await estore.revision() == before


async def test_txn_otherwise_branch(estore: Store) -> None:
    result = await estore.txn([Compare.value_is("missing", "x")], [Put("yes", "1")],
                              [Put("no", "1"), Get("no")])
    assert not result.succeeded
    assert await estore.get("yes") is None
    assert result.responses[0] == result.revision
    got = result.responses[1]
    assert isinstance(got, list) and got[0].key == "no"
    empty = await estore.txn([Compare.absent("no")])
    assert not empty.succeeded and empty.responses == []


async def test_txn_compare_table_matches_the_pure_semantics(estore: Store) -> None:
    """Every target and operator, on an existing and a missing key: etcd agrees
    with :meth:`Compare.holds`, the definition every backend follows."""
    lease = await estore.grant(30)
    await estore.put("c", "l")
    await estore.put("c", "m", lease=lease.id)
    kv = await estore.get("c")
    assert kv is not None
    operands: dict[Target, list[bytes | int]] = {
        Target.VALUE: [b"m", b"a", b"n", b"", b"mm"],
        Target.VERSION: [0, 1, 2, 3],
        Target.CREATE: [0, kv.create_revision - 1, kv.create_revision, kv.create_revision + 1],
        Target.MOD: [0, kv.mod_revision - 1, kv.mod_revision, kv.mod_revision + 1],
        Target.LEASE: [0, lease.id, lease.id + 1],
    }
    mismatches = []
    checked = 0
    for key, current in (("c", kv), ("nothing-here", None)):
        for target, values in operands.items():
            for op in Op:
                for operand in values:
                    cmp = Compare(key, target, op, operand)
                    result = await estore.txn([cmp])
                    checked += 1
                    if result.succeeded != cmp.holds(current):
                        mismatches.append((key, target.value, op.value, operand,
                                           result.succeeded))
    assert checked > 100
    assert mismatches == []


async def test_txn_all_compares_must_hold(estore: Store) -> None:
    await estore.put("k", "v")
    kv = await estore.get("k")
    assert kv is not None
    ok = await estore.txn([Compare.mod_is("k", kv.mod_revision), Compare.version_is("k", 1),
                           Compare.create_is("k", kv.create_revision),
                           Compare.value_is("k", "v")])
    assert ok.succeeded
    bad = await estore.txn([Compare.mod_is("k", kv.mod_revision), Compare.version_is("k", 2)])
    assert not bad.succeeded


async def test_txn_rejects_wrong_operand_types(estore: Store) -> None:
    with pytest.raises(TypeError):
        await estore.txn([Compare("k", Target.VERSION, Op.EQ, b"1")])
    with pytest.raises(TypeError):
        await estore.txn([Compare("k", Target.VALUE, Op.EQ, 1)])


# ---------------------------------------------------------------- leases


async def test_grant_rounds_ttl_up(estore: Store) -> None:
    assert (await estore.grant(0.2)).ttl >= 1
    lease = await estore.grant(1.5)
    assert lease.ttl == 2
    ttl = await estore.time_to_live(lease.id)
    assert ttl is not None and 0 <= ttl <= 2


async def test_keep_alive_revoke_and_lease_not_found(estore: Store) -> None:
    lease = await estore.grant(30)
    assert await estore.keep_alive_once(lease.id) == 30
    await estore.put("held", "x", lease=lease.id)
    kv = await estore.get("held")
    assert kv is not None and kv.lease == lease.id
    await estore.revoke(lease.id)
    assert await estore.get("held") is None
    assert await estore.time_to_live(lease.id) is None
    with pytest.raises(LeaseNotFound) as info:
        await estore.keep_alive_once(lease.id)
    assert info.value.lease_id == lease.id
    with pytest.raises(LeaseNotFound):
        await estore.put("held", "x", lease=lease.id)
    with pytest.raises(LeaseNotFound) as in_txn:
        await estore.txn([], [Put("held", "x", lease=lease.id)])
    assert in_txn.value.lease_id == lease.id
    await estore.revoke(lease.id)  # revoking a missing lease is a no-op
    assert await estore.time_to_live(123456789) is None


async def test_lease_expiry_deletes_keys_with_delete_events(estore: Store) -> None:
    lease = await estore.grant(1)
    start = await estore.put("ephemeral/a", "x", lease=lease.id) + 1
    watch = estore.watch("ephemeral/", start)
    try:
        # etcd checks expiry every 500 ms: a 1 s lease is gone within ~2 s.
        (event,) = await take(watch, 1, timeout=10)
    finally:
        await aclose(watch)
    assert event.type is EventType.DELETE and event.key == "ephemeral/a"
    assert await estore.get("ephemeral/a") is None
    assert await estore.time_to_live(lease.id) is None
    with pytest.raises(LeaseNotFound):
        await estore.keep_alive_once(lease.id)


# ---------------------------------------------------------------- watch


async def test_watch_replays_history_in_order(estore: Store) -> None:
    start = await estore.put("w/a", "1")
    await estore.put("other", "x")
    lease = await estore.grant(30)
    await estore.put("w/b", "2", lease=lease.id)
    await estore.put("w/a", "3")
    await estore.delete("w/b")
    watch = estore.watch("w/", start)
    try:
        events = await take(watch, 4)
    finally:
        await aclose(watch)
    assert [(e.type, e.key, e.value) for e in events] == [
        (EventType.PUT, "w/a", b"1"),
        (EventType.PUT, "w/b", b"2"),
        (EventType.PUT, "w/a", b"3"),
        (EventType.DELETE, "w/b", b""),
    ]
    revisions = [e.revision for e in events]
    assert revisions == sorted(revisions) and revisions[0] == start
    assert events[1].lease == lease.id and events[1].version == 1
    assert events[2].version == 2 and events[2].create_revision == start
    # 0 and 1 both mean "from the first revision" (etcd itself reads 0 as "now")
    for origin in (0, 1):
        replay = estore.watch("w/", origin)
        try:
            assert await take(replay, 4) == events
        finally:
            await aclose(replay)


async def test_watch_txn_events_share_a_revision(estore: Store) -> None:
    start = await estore.revision() + 1
    result = await estore.txn([], [Put("s/1", "a"), Put("s/2", "b"), Put("t/x", "c")])
    watch = estore.watch("s/", start)
    try:
        events = await take(watch, 2)
    finally:
        await aclose(watch)
    assert [e.key for e in events] == ["s/1", "s/2"]
    assert {e.revision for e in events} == {result.revision}


async def test_watch_without_start_sees_only_new_changes(estore: Store) -> None:
    await estore.put("n/old", "x")
    watch = estore.watch("n/")
    first = asyncio.ensure_future(anext(watch))
    try:
        # The stream is created when iteration starts: write until it is seen.
        async with asyncio.timeout(5):
            while not first.done():
                await estore.put("n/new", "y")
                await asyncio.wait({first}, timeout=0.05)
        event = first.result()
    finally:
        first.cancel()
        await aclose(watch)
    assert event.key == "n/new"


async def test_watch_from_the_future_waits(estore: Store) -> None:
    future = await estore.revision() + 2
    watch = estore.watch("f/", future)
    try:
        await estore.put("f/1", "skipped")
        await estore.put("f/2", "seen")
        (event,) = await take(watch, 1)
    finally:
        await aclose(watch)
    assert event.key == "f/2" and event.revision == future


async def test_compacted_revision_raises_compacted(estore: Store) -> None:
    first = await estore.put("h/k", "1")
    await estore.put("h/k", "2")
    rev = await estore.put("h/k", "3")
    await estore.compact(rev)
    await estore.compact(rev)  # again: a no-op
    await estore.compact(first)  # older than the compaction point: a no-op
    with pytest.raises(Compacted) as info:
        await take(estore.watch("h/", first), 1)
    assert info.value.requested == first
    assert info.value.compact_revision == rev
    (event,) = await take(estore.watch("h/", rev), 1)
    assert event.value == b"3"
    with pytest.raises(CoordError, match="newer than"):
        await estore.compact(rev + 100)


async def test_abandoned_watch_releases_its_stream(etcd1: EtcdCluster) -> None:
    store = await EtcdStore.connect(etcd1.endpoints)
    try:
        start = await store.put("r/1", "x")
        for _ in range(3):
            watch = store.watch("r/", start)
            await take(watch, 1)
            await aclose(watch)
        assert not store._calls and not store._tasks
    finally:
        await store.close()


# ---------------------------------------------------------------- failure paths


async def test_watch_resumes_without_gap_across_a_restart(etcd1: EtcdCluster) -> None:
    # A 5 s timeout: the last of the 4 attempts to re-establish comes ~4.4 s
    # after the break, ample for a restart (~0.2 s here).
    store = await EtcdStore.connect(etcd1.endpoints, timeout=5.0)
    try:
        start = await store.put("g/1", "before")
        watch = store.watch("g/", start)
        (first,) = await take(watch, 1)
        etcd1.stop_member(0)
        etcd1.restart_member(0)
        async with asyncio.timeout(10):
            while True:
                try:
                    await store.put("g/2", "after")
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.05)
        events = await take(watch, 1, timeout=10)
        await aclose(watch)
    finally:
        await store.close()
    assert first.value == b"before"
    assert [e.value for e in events] == [b"after"]
    assert events[0].revision > first.revision


async def test_stopped_mid_watch_raises_unavailable_promptly(etcd1: EtcdCluster) -> None:
    store = await EtcdStore.connect(etcd1.endpoints)
    try:
        start = await store.put("d/1", "x")
        watch = store.watch("d/", start)
        await take(watch, 1)
        pending = asyncio.ensure_future(anext(watch))
        await asyncio.sleep(0.1)  # let the read be in flight when etcd goes away
        t0 = time.monotonic()
        etcd1.stop_member(0)
        with pytest.raises(StoreUnavailable) as info:
            async with asyncio.timeout(10):
                await pending
        assert time.monotonic() - t0 < 5.0
        assert store.url.removeprefix("etcd://") in str(info.value)
    finally:
        await store.close()


async def test_stopped_mid_keep_alive_fails_within_the_ttl(etcd1: EtcdCluster) -> None:
    store = await EtcdStore.connect(etcd1.endpoints)
    try:
        lease = await store.grant(3)
        stopped = asyncio.Event()
        failed_at: list[float] = []

        async def keep_alive_loop() -> None:
            # What a node agent does: renew at a third of the TTL.
            while True:
                try:
                    await store.keep_alive_once(lease.id)
                except StoreUnavailable:
                    failed_at.append(time.monotonic())
                    raise
                if stopped.is_set():
                    await asyncio.sleep(0.05)
                else:
                    await asyncio.sleep(lease.ttl / 3)

        task = asyncio.ensure_future(keep_alive_loop())
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        etcd1.stop_member(0)
        stopped.set()
        with pytest.raises(StoreUnavailable):
            async with asyncio.timeout(10):
                await task
        assert failed_at[0] - t0 < lease.ttl
    finally:
        await store.close()


async def test_frozen_server_is_detected_not_waited_for(etcd1: EtcdCluster) -> None:
    """SIGSTOP keeps the sockets open: only deadlines and the watch's idle
    probe can notice. Every call must still end, within its budget."""
    store = await EtcdStore.connect(etcd1.endpoints, timeout=0.5)
    try:
        start = await store.put("z/1", "x")
        watch = store.watch("z/", start)
        await take(watch, 1)
        pending = asyncio.ensure_future(anext(watch))
        etcd1.pause_member(0)
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.get("z/1")
        with pytest.raises(StoreUnavailable, match="outcome unknown"):
            await store.put("z/2", "y")
        with pytest.raises(StoreUnavailable):
            async with asyncio.timeout(10):
                await pending
        # idle probe (2 x 0.5 s) + re-establishing budget (2 x 0.5 s), with slack
        assert time.monotonic() - t0 < 4.0
    finally:
        etcd1.resume_member(0)
        await store.close()


async def test_close_ends_watches_and_tasks(etcd1: EtcdCluster) -> None:
    store = await EtcdStore.connect(etcd1.endpoints)
    start = await store.put("c/1", "x")
    watch = store.watch("c/", start)
    await take(watch, 1)
    pending: asyncio.Future[Any] = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.05)
    await store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        async with asyncio.timeout(5):
            await pending
    assert not store._tasks and not store._calls
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.put("c/2", "y")
    with pytest.raises(StoreUnavailable, match="closed"):
        await take(store.watch("c/"), 1)
    await store.close()  # twice is fine
