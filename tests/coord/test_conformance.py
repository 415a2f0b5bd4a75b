"""One conformance suite for every coordination-store backend (real SQLite file, real etcd)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clustermail.coord import (
    Compacted,
    Compare,
    Delete,
    Event,
    EventType,
    Get,
    LeaseNotFound,
    Put,
    Store,
)
from clustermail.coord.lease import LeaseKeeper

ROOT = Path(__file__).resolve().parents[2]
WAIT = 10.0  # upper bound for anything the store does "promptly"


async def take(events: AsyncIterator[Event], n: int, timeout: float = WAIT) -> list[Event]:
    out: list[Event] = []

    async def collect() -> None:
        async for ev in events:
            out.append(ev)
            if len(out) == n:
                return

    await asyncio.wait_for(collect(), timeout)
    return out


# ----------------------------------------------------------------------- keys


async def test_put_get_revisions(store: Store, ns: str) -> None:
    r0 = await store.revision()
    r1 = await store.put(ns + "a", "one")
    assert r1 == r0 + 1
    kv = await store.get(ns + "a")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"one", r1, r1, 1)
    r2 = await store.put(ns + "a", b"two")
    kv = await store.get(ns + "a")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"two", r1, r2, 2)
    assert await store.get(ns + "missing") is None
    assert await store.revision() == r2


async def test_range_is_sorted_and_prefix_exact(store: Store, ns: str) -> None:
    for key in ["b", "a", "c/1", "c/0"]:
        await store.put(ns + "x/" + key, key)
    await store.put(ns + "xy", "not under x/")
    result = await store.range(ns + "x/")
    assert [kv.key for kv in result.kvs] == [ns + "x/" + k for k in ["a", "b", "c/0", "c/1"]]
    assert result.revision == await store.revision()


async def test_delete_and_delete_prefix(store: Store, ns: str) -> None:
    await store.put(ns + "k", "v")
    assert await store.delete(ns + "k") is True
    assert await store.delete(ns + "k") is False
    assert await store.get(ns + "k") is None
    for i in range(3):
        await store.put(f"{ns}p/{i}", "v")
    await store.put(ns + "q", "stays")
    before = await store.revision()
    assert await store.delete_prefix(ns + "p/") == 3
    assert await store.revision() == before + 1  # one revision for the whole prefix
    assert (await store.range(ns + "p/")).kvs == []
    assert await store.get(ns + "q") is not None


async def test_recreated_key_starts_a_new_life(store: Store, ns: str) -> None:
    await store.put(ns + "k", "1")
    await store.delete(ns + "k")
    rev = await store.put(ns + "k", "2")
    kv = await store.get(ns + "k")
    assert kv is not None and kv.version == 1 and kv.create_revision == rev


# ----------------------------------------------------------------------- transactions


async def test_txn_create_if_absent(store: Store, ns: str) -> None:
    key = ns + "owner"
    first = await store.txn([Compare.absent(key)], [Put(key, "node1")], [Get(key)])
    assert first.succeeded
    second = await store.txn([Compare.absent(key)], [Put(key, "node2")], [Get(key)])
    assert not second.succeeded
    got = second.responses[0]
    assert isinstance(got, list) and got[0].value == b"node1"
    assert second.revision == first.revision  # the else branch wrote nothing


async def test_txn_compares_every_target(store: Store, ns: str) -> None:
    key = ns + "k"
    rev = await store.put(key, "v1")
    kv = await store.get(key)
    assert kv is not None
    for cmp, expected in [
        (Compare.value_is(key, "v1"), True),
        (Compare.value_is(key, "v2"), False),
        (Compare.mod_is(key, rev), True),
        (Compare.mod_is(key, rev - 1), False),
        (Compare.create_is(key, rev), True),
        (Compare.version_is(key, 1), True),
        (Compare.version_is(key, 2), False),
        (Compare.exists(key), True),
        (Compare.absent(key), False),
        (Compare.lease_is(key, 0), True),
        (Compare.value_is(ns + "nothing", ""), False),
        (Compare.mod_is(ns + "nothing", 0), True),
    ]:
        result = await store.txn([cmp])
        assert result.succeeded is expected, cmp


async def test_txn_is_atomic_and_one_revision(store: Store, ns: str) -> None:
    before = await store.revision()
    result = await store.txn(
        [Compare.absent(ns + "a")],
        [Put(ns + "a", "1"), Put(ns + "b", "2"), Delete(ns + "c"), Get(ns + "a")],
    )
    assert result.succeeded
    assert result.revision == before + 1
    a, b = await store.get(ns + "a"), await store.get(ns + "b")
    assert a is not None and b is not None and a.mod_revision == b.mod_revision == before + 1
    assert result.responses[2] == 0
    got = result.responses[3]
    assert isinstance(got, list) and got[0].value == b"1"


async def test_txn_with_missing_lease_writes_nothing(store: Store, ns: str) -> None:
    before = await store.revision()
    with pytest.raises(LeaseNotFound):
        await store.txn([], [Put(ns + "a", "1"), Put(ns + "b", "2", lease=0x7EADBEEF)])
    assert await store.get(ns + "a") is None
    assert await store.revision() == before


async def test_cas_race_between_processes_has_one_winner(store_url: str, ns: str) -> None:
    key = ns + "leader"
    start_at = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.coord.racer", "cas", store_url, key, f"p{i}",
             str(start_at)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    outcomes = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=60)
            assert p.returncode == 0
            outcomes.append(out.strip())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert sorted(outcomes) == ["lost"] * 5 + ["won"]
    from clustermail.coord import open_store

    store = await open_store(store_url)
    try:
        kv = await store.get(key)
        assert kv is not None and kv.value == f"p{outcomes.index('won')}".encode()
    finally:
        await store.close()


# ----------------------------------------------------------------------- leases


async def test_lease_revoke_deletes_keys_and_emits_deletes(store: Store, ns: str) -> None:
    lease = await store.grant(5)
    assert lease.ttl >= 5
    start = await store.revision() + 1
    await store.put(ns + "a", "1", lease=lease.id)
    await store.put(ns + "b", "2", lease=lease.id)
    await store.put(ns + "c", "3")
    kv = await store.get(ns + "a")
    assert kv is not None and kv.lease == lease.id
    ttl = await store.time_to_live(lease.id)
    assert ttl is not None and 0 < ttl <= lease.ttl
    await store.revoke(lease.id)
    assert await store.get(ns + "a") is None and await store.get(ns + "b") is None
    assert await store.get(ns + "c") is not None
    assert await store.time_to_live(lease.id) is None
    events = await take(store.watch(ns, start), 5)
    assert [(e.type, e.key) for e in events[3:]] == [
        (EventType.DELETE, ns + "a"),
        (EventType.DELETE, ns + "b"),
    ]
    assert events[3].revision == events[4].revision  # one revision for the revoke
    with pytest.raises(LeaseNotFound):
        await store.keep_alive_once(lease.id)
    with pytest.raises(LeaseNotFound):
        await store.put(ns + "d", "x", lease=lease.id)
    await store.revoke(lease.id)  # revoking twice is harmless


async def test_lease_expiry_removes_keys_and_watch_sees_it(store: Store, ns: str) -> None:
    lease = await store.grant(1)
    await store.put(ns + "node", "alive", lease=lease.id)
    watch = store.watch(ns)
    granted = time.monotonic()
    [event] = await take(watch, 1, timeout=lease.ttl + WAIT)
    assert (event.type, event.key) == (EventType.DELETE, ns + "node")
    assert time.monotonic() - granted >= lease.ttl * 0.9  # not before its time
    assert await store.get(ns + "node") is None
    with pytest.raises(LeaseNotFound):
        await store.keep_alive_once(lease.id)


async def test_keep_alive_extends_a_lease(store: Store, ns: str) -> None:
    lease = await store.grant(1)
    await store.put(ns + "node", "alive", lease=lease.id)
    deadline = time.monotonic() + lease.ttl * 2.5
    while time.monotonic() < deadline:  # outlive the TTL by renewing
        assert await store.keep_alive_once(lease.id) >= lease.ttl
        await asyncio.sleep(lease.ttl / 4)
    assert await store.get(ns + "node") is not None


async def test_a_lease_its_peers_expire_goes_at_its_ttl_and_never_before(
    store: Store, ns: str
) -> None:
    # A node agent's lease: its peers call expire_overdue, where the store (etcd) would
    # only expire it a backstop later; the SQLite store expires it on time itself.
    lease = await store.grant(1, peers_expire=True)
    assert lease.ttl >= 1
    await store.put(ns + "node", "alive", lease=lease.id)
    deadline = time.monotonic() + lease.ttl * 2.5
    while time.monotonic() < deadline:  # renewed: never overdue
        sent = time.monotonic()
        assert await store.keep_alive_once(lease.id) == lease.ttl + lease.backstop
        assert not await store.expire_overdue(lease.id, lease.backstop)
        await asyncio.sleep(lease.ttl / 4)
    revoked = False
    limit = time.monotonic() + lease.ttl + lease.backstop + WAIT
    while await store.get(ns + "node") is not None and time.monotonic() < limit:
        if await store.expire_overdue(lease.id, lease.backstop):
            # The store's clock said more than the TTL passed since the last renewal
            # it received, which was sent no earlier than `sent`.
            assert time.monotonic() - sent >= lease.ttl
            revoked = True
        await asyncio.sleep(0.02)
    assert await store.get(ns + "node") is None
    assert revoked == (lease.backstop > 0)  # etcd: gone before its own expiry
    assert not await store.expire_overdue(lease.id, lease.backstop)  # gone: nothing to do


async def test_a_plain_lease_is_never_expired_by_peers(store: Store, ns: str) -> None:
    lease = await store.grant(1)
    assert lease.backstop == 0
    await store.put(ns + "plain", "x", lease=lease.id)
    # Whatever backstop a confused caller names, a lease granted without one is the
    # store's to expire: etcd's answer for it is never read as overdue.
    assert not await store.expire_overdue(lease.id, 1)
    assert await store.get(ns + "plain") is not None


@pytest.mark.parametrize("peers_expire", [False, True])
async def test_lease_keeper_keeps_alive_and_reports_loss(
    store: Store, ns: str, peers_expire: bool
) -> None:
    lease = await store.grant(1, peers_expire=peers_expire)
    await store.put(ns + "node", "alive", lease=lease.id)
    reasons: list[str] = []
    keeper = LeaseKeeper(
        store, lease, renew_interval=0.2, safety_margin=0.3, on_lost=reasons.append
    )
    extended: list[float] = []
    keeper.on_extended = extended.append
    keeper.start()
    try:
        watch = store.watch(ns)
        # Nothing happens to the key while the keeper runs: wait past two TTLs.
        with pytest.raises(TimeoutError):
            await take(watch, 1, timeout=lease.ttl * 2.5)
        assert not keeper.lost.is_set() and keeper.renewals >= 3
        # Every move of the deadline is told at once, in order, and is the deadline.
        assert len(extended) >= 3 and extended == sorted(extended)
        assert extended[-1] == keeper.safe_until
        # The deadline follows the TTL the peers expire the lease at, not the backstop.
        assert keeper.safe_until - time.monotonic() <= lease.ttl - keeper.safety_margin
        await store.revoke(lease.id)  # somebody else kills the lease
        await asyncio.wait_for(keeper.lost.wait(), lease.ttl + WAIT)
        assert reasons and "expired or was revoked" in reasons[0]
    finally:
        await keeper.stop()


# ----------------------------------------------------------------------- watches


async def test_watch_delivers_every_event_in_order_under_concurrent_writers(
    store: Store, store_url: str, ns: str
) -> None:
    start = await store.revision() + 1
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.coord.racer", "write", store_url, ns, "proc", "60"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:

        async def local(name: str) -> None:
            for i in range(40):
                await store.put(f"{ns}{name}/{i:04d}", f"{name}-{i}")

        await asyncio.gather(local("t1"), local("t2"), local("t3"))
        out, _ = writer.communicate(timeout=60)
        assert writer.returncode == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    total = 3 * 40 + 60
    events = await take(store.watch(ns, start), total)
    revisions = [e.revision for e in events]
    assert revisions == sorted(revisions) and len(set(revisions)) == total
    assert all(e.type is EventType.PUT for e in events)
    # No gaps: the events are exactly the keys written, each once.
    assert {e.key for e in events} == {kv.key for kv in (await store.range(ns)).kvs}
    # Per-writer order is preserved.
    for name in ("t1", "t2", "t3", "proc"):
        mine = [e.key for e in events if e.key.startswith(f"{ns}{name}/")]
        assert mine == sorted(mine)
    assert [int(r) for r in out.split()] == [
        e.revision for e in events if e.key.startswith(f"{ns}proc/")
    ]


async def test_watch_resumes_from_a_revision(store: Store, ns: str) -> None:
    start = await store.revision() + 1
    for i in range(10):
        await store.put(f"{ns}{i}", str(i))
    first = await take(store.watch(ns, start), 4)
    resumed = await take(store.watch(ns, first[-1].revision + 1), 6)
    assert [e.key for e in first + resumed] == [f"{ns}{i}" for i in range(10)]
    # A watch from now sees only what comes after it started: keep writing
    # until it reports (it registers asynchronously), then check what it saw.
    live = asyncio.ensure_future(take(store.watch(ns), 1))
    for i in range(200):
        await store.put(f"{ns}late/{i}", "x")
        done, _ = await asyncio.wait([live], timeout=0.05)
        if done:
            break
    [event] = await live
    assert event.key.startswith(ns + "late/") and event.value == b"x"


async def test_watch_from_compacted_revision_fails_clearly(store: Store, ns: str) -> None:
    start = await store.revision() + 1
    for i in range(5):
        await store.put(f"{ns}{i}", str(i))
    now = await store.revision()
    await store.compact(now)
    with pytest.raises(Compacted) as info:
        await take(store.watch(ns, start), 1)
    assert info.value.compact_revision == now and "compacted" in str(info.value)
    await store.put(ns + "after", "x")  # a watch from the compaction point still works
    [event] = await take(store.watch(ns, now + 1), 1)
    assert event.key == ns + "after"


async def test_watch_sees_delete_events(store: Store, ns: str) -> None:
    start = await store.revision() + 1
    await store.put(ns + "a", "1")
    await store.delete(ns + "a")
    events = await take(store.watch(ns, start), 2)
    assert [e.type for e in events] == [EventType.PUT, EventType.DELETE]
    assert events[1].value == b""


