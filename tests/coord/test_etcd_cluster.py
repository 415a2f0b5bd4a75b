"""The etcd backend on a 3-member etcd cluster on loopback: the leader is killed
(SIGKILL) under load, a follower freezes under a lease keeper, and several OS
processes race for one key."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clustermail.cluster.timing import DEFAULT_TIMING, FAST_TIMING, LeaseTiming
from clustermail.coord import Compare, Event, Put, Store, StoreUnavailable
from clustermail.coord.etcd import EtcdStore
from clustermail.coord.lease import LeaseKeeper
from tests.support.etcd_server import EtcdCluster

REPO = Path(__file__).resolve().parents[2]
#: After a leader SIGKILL the survivors elect a new leader in ~0.5-1 s here;
#: each operation must work again well within this bound.
RECOVERY = 10.0


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster.start(tmp_path, 3)
    try:
        yield cluster
    finally:
        cluster.stop()


async def cas_increment(store: Store, key: str, deadline: float) -> int:
    """Adds one to a counter with compare-and-swap, the way callers must use
    txn: after an unknown outcome, re-read and decide again (the unique token
    in the value tells whether the lost attempt was applied)."""
    while True:
        if time.monotonic() > deadline:
            raise AssertionError(f"no successful increment of {key} before the deadline")
        try:
            kv = await store.get(key)
        except StoreUnavailable:
            await asyncio.sleep(0.05)
            continue
        count = int(kv.value.split(b":")[0]) if kv else 0
        token = f"{count + 1}:{uuid.uuid4().hex}"
        try:
            result = await store.txn([Compare.mod_is(key, kv.mod_revision if kv else 0)],
                                     [Put(key, token)])
            if result.succeeded:
                return count + 1
        except StoreUnavailable:
            for _ in range(100):
                try:
                    now = await store.get(key)
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.05)
            else:
                continue
            if now is not None and now.value == token.encode():
                return count + 1  # the "lost" attempt had been applied


async def test_operations_continue_when_the_leader_is_killed(etcd3: EtcdCluster) -> None:
    leader = etcd3.leader_index()
    # The leader's endpoint first: the adapter is connected to the member that dies.
    endpoints = [etcd3.endpoints[leader]] + [
        e for i, e in enumerate(etcd3.endpoints) if i != leader
    ]
    store = await EtcdStore.connect(endpoints)
    try:
        lease = await store.grant(5)
        await store.put("owner", "me", lease=lease.id)
        start = await store.revision() + 1
        seen: list[Event] = []

        async def watcher() -> None:
            async for event in store.watch("load/", start):
                seen.append(event)

        watch_task = asyncio.ensure_future(watcher())
        written: list[int] = []
        unknown = 0
        stop = asyncio.Event()

        async def writer() -> None:
            nonlocal unknown
            i = 0
            while not stop.is_set():
                try:
                    written.append(await store.put(f"load/{i:05}", str(i)))
                    i += 1
                except StoreUnavailable:
                    unknown += 1  # outcome unknown: the next put reuses the key
                await asyncio.sleep(0.01)

        write_task = asyncio.ensure_future(writer())
        await asyncio.sleep(0.3)
        before_kill = len(written)
        assert before_kill > 0

        killed_at = time.monotonic()
        etcd3.kill_member(leader)
        deadline = killed_at + RECOVERY

        # writes resume
        while len(written) < before_kill + 20:
            assert time.monotonic() < deadline, f"writes stuck after the kill ({unknown} lost)"
            await asyncio.sleep(0.05)
        # compare-and-swap works
        for expected in range(1, 4):
            assert await cas_increment(store, "counter", deadline) == expected
        # the lease can still be kept alive and still holds its key
        while True:
            try:
                assert await store.keep_alive_once(lease.id) == lease.ttl
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        owner = await store.get("owner")
        assert owner is not None and owner.lease == lease.id
        assert etcd3.leader_index() != leader

        stop.set()
        await write_task
        # the watch saw every write, in order, without a gap, across the kill
        final = await store.range("load/")
        async with asyncio.timeout(RECOVERY):
            while not seen or seen[-1].revision < max(kv.mod_revision for kv in final.kvs):
                await asyncio.sleep(0.02)
        assert not watch_task.done()
        revisions = [e.revision for e in seen]
        assert revisions == sorted(set(revisions))
        assert set(written) <= set(revisions)
        # A put whose outcome was unknown may have been applied, then repeated
        # on the same key: the last event of each key is its current state.
        last = {e.key: e.revision for e in seen}
        assert last == {kv.key: kv.mod_revision for kv in final.kvs}
        watch_task.cancel()
    finally:
        await store.close()


@pytest.mark.parametrize("timing", [DEFAULT_TIMING, FAST_TIMING], ids=lambda t: t.profile)
async def test_lease_keeper_moves_off_a_frozen_member(
    etcd3: EtcdCluster, timing: LeaseTiming
) -> None:
    """A frozen or partitioned member keeps its TCP connection looking healthy, so a
    renewal sent to it hangs. The keeper must renew through another member before its
    deadline; fencing a healthy node because one etcd member froze is a failover for
    nothing (the lab saw it whenever a machine holding a member was cut off)."""
    frozen = (etcd3.leader_index() + 1) % 3  # a follower: the cluster keeps quorum
    # The frozen member's endpoint first: the store is talking to it when it freezes.
    endpoints = [etcd3.endpoints[frozen]] + [
        e for i, e in enumerate(etcd3.endpoints) if i != frozen
    ]
    store = await EtcdStore.connect(endpoints)
    keeper: LeaseKeeper | None = None
    try:
        lease = await store.grant(timing.ttl)
        await store.put("node/me", "alive", lease=lease.id)
        keeper = LeaseKeeper(store, lease, renew_interval=timing.renew_interval,
                             safety_margin=timing.safety_margin)
        renewed = asyncio.Event()
        keeper.on_renewed = lambda _rtt: renewed.set()
        keeper.start()
        async with asyncio.timeout(RECOVERY):
            await renewed.wait()
        before = keeper.renewals
        etcd3.pause_member(frozen)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(3 * lease.ttl):
                await keeper.lost.wait()
        assert keeper.renewals > before + 3, keeper.reason
        assert await store.get("node/me") is not None  # the store kept the lease too
    finally:
        etcd3.resume_member(frozen)
        if keeper is not None:
            await keeper.stop()
        await store.close()


async def test_a_watch_leaves_a_frozen_member_once_a_call_gives_up_on_it(
    etcd3: EtcdCluster,
) -> None:
    """A frozen member keeps its watch streams open and silent: alone, the stream's
    idle probe notices after two timeouts (4 s). A call to that member given up on
    (a lease keeper's renewal) makes its watches probe at once: the change made
    meanwhile arrives in about a quarter of a timeout, through another member."""
    frozen = (etcd3.leader_index() + 1) % 3
    endpoints = [etcd3.endpoints[frozen]] + [
        e for i, e in enumerate(etcd3.endpoints) if i != frozen
    ]
    store = await EtcdStore.connect(endpoints)  # 2 s per attempt, as the agents use
    writer = await EtcdStore.connect([e for i, e in enumerate(etcd3.endpoints) if i != frozen])
    try:
        start = await store.put("w/0", "before")
        watch = store.watch("w/", start)
        assert (await anext(watch)).key == "w/0"  # the stream is on the frozen member
        pending = asyncio.ensure_future(anext(watch))
        etcd3.pause_member(frozen)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.get("w/0"), 0.3)  # given up on, as a keeper does
        await writer.put("w/1", "while frozen")
        async with asyncio.timeout(RECOVERY):
            event = await pending
        assert event.key == "w/1"
        assert time.monotonic() - t0 < 2.0  # < one timeout: not the 4 s idle probe
    finally:
        etcd3.resume_member(frozen)
        await writer.close()
        await store.close()


async def test_lost_quorum_is_unavailable_promptly_then_recovers(etcd3: EtcdCluster) -> None:
    store = await EtcdStore.connect(etcd3.endpoints, timeout=1.0)
    try:
        start = await store.put("q/1", "x")
        watch = store.watch("q/", start)
        async with asyncio.timeout(5):
            await anext(watch)
        pending = asyncio.ensure_future(anext(watch))
        survivor = etcd3.leader_index()
        for i in range(3):
            if i != survivor:
                etcd3.kill_member(i)
        # The survivor refuses requests once it notices it has no leader
        # ("etcdserver: no leader", thanks to the hasleader metadata), and dead
        # members refuse connections: every call ends within its budget.
        t0 = time.monotonic()
        async with asyncio.timeout(10):
            while True:
                try:
                    await store.get("q/1")
                except StoreUnavailable as exc:
                    assert "127.0.0.1" in str(exc)
                    break
                await asyncio.sleep(0.05)
            with pytest.raises(StoreUnavailable):
                await store.put("q/2", "y")
            with pytest.raises(StoreUnavailable):
                await pending
        assert time.monotonic() - t0 < 8.0
        # one member back: quorum (2 of 3) again, and the store works again
        etcd3.restart_member((survivor + 1) % 3)
        async with asyncio.timeout(RECOVERY):
            while True:
                try:
                    await store.put("q/3", "z")
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.05)
        kv = await store.get("q/3")
        assert kv is not None and kv.value == b"z"
    finally:
        await store.close()


async def test_cas_race_between_processes_has_one_winner(etcd3: EtcdCluster) -> None:
    contenders = 5
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "src")]))
    procs = []
    try:
        for n in range(contenders):
            # each process prefers a different member
            eps = etcd3.endpoints[n % 3:] + etcd3.endpoints[: n % 3]
            url = "etcd://" + ",".join(f"{h}:{p}" for h, p in eps)
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.support.cas_worker", url, "race/owner", f"p{n}",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=REPO,
                env=env,
            ))
        async with asyncio.timeout(60):
            for proc in procs:
                assert proc.stdout is not None
                line = await proc.stdout.readline()
                assert line == b"ready\n", line
            for proc in procs:  # the starting gun, as close together as we can
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
            for proc in procs:
                assert proc.stdin is not None
                await proc.stdin.drain()
            results = []
            for proc in procs:
                out, _ = await proc.communicate()
                results.append(out.decode().strip())
                assert proc.returncode == 0
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert sorted(results) == ["lost"] * (contenders - 1) + ["won"], results
    store = await EtcdStore.connect(etcd3.endpoints)
    try:
        kv = await store.get("race/owner")
    finally:
        await store.close()
    assert kv is not None and kv.version == 1
    assert kv.text() == f"p{results.index('won')}"
