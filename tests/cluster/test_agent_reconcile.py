"""The node agent's reconcile step (`NodeAgent._cycle`) on a real SQLite store, with
real resource host processes: one agent (node1) and the state the leader and
administrators write, put into the store by the test. node2 is registered and
leads, so node1's cycle only reconciles."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from clustermail.cluster import keys, undo
from clustermail.cluster.agent import LocalVS, NodeAgent
from clustermail.cluster.host_pool import HostPool
from clustermail.cluster.leader import Leader
from clustermail.cluster.records import (
    AssignmentRecord,
    EpochRecord,
    OwnerRecord,
    ResourceIntent,
    VsIntent,
)
from clustermail.cluster.timing import DEFAULT_TIMING
from clustermail.cluster.view import read_view
from clustermail.coord import EventType, KeyValue, Store, open_store
from tests.support.agent_loop import event_loop_policy  # noqa: F401  (asyncio, as the agent)
from tests.support.cluster_state import apply, elect, join

#: Bound on every wait for the agent and its resource host.
WAIT = 15.0
#: A service that takes a moment to stop after SIGTERM, so a hand-over that did not
#: wait for it would be seen with the service still running.
SLOW_STOP = "trap 'sleep 0.3; exit 0' TERM; sleep 600 & wait"


def resource(command: str | list[str]) -> dict[str, Any]:
    return {"type": "process", "properties": {"command": command, "start_grace": 0.1,
                                              "stop_timeout": 5}}


def cluster(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "cluster": {"name": "test", "placement": "active-passive"},
        "nodes": {"node1": {}, "node2": {}},
        "virtual_servers": {"mail1": {"preferred_owners": ["node1", "node2"],
                                      "resources": resources}},
    }


ONE_SERVICE = cluster({"svc": resource(SLOW_STOP)})


def alive(pid: int) -> bool:
    """Running (a zombie has exited: only its exit status is left to collect)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Node1:
    """node1's agent, driven cycle by cycle as its run loop would drive it."""

    def __init__(self, store: Store, agent: NodeAgent) -> None:
        self.store = store
        self.agent = agent

    async def until(self, done: Callable[[], Awaitable[bool]], what: str) -> None:
        """Runs cycles until ``done()``; between cycles, waits for a store change
        (the host's events are written as status) as the agent's loop does."""
        agent = self.agent
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    agent.wake.clear()
                    await agent._cycle()
                    if await done():
                        return
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await agent.wake.wait()
        except TimeoutError:
            raise AssertionError(f"not within {WAIT:g} s: {what} (last reason line: "
                                 f"{agent.last_reason!r})") from None

    async def assign(self, node: str) -> None:
        await self.store.put(keys.ASSIGN + "mail1",
                             AssignmentRecord(node=node, code="start").to_store())

    def local(self) -> LocalVS:
        return self.agent.local["mail1"]

    async def online(self) -> LocalVS:
        """Assigns mail1 here and runs cycles until it is online."""
        await self.assign("node1")
        await self.until(self.is_online, "mail1 online on node1")
        return self.local()

    async def is_online(self) -> bool:
        lvs = self.agent.local.get("mail1")
        return lvs is not None and lvs.state == "online"

    async def get(self, key: str) -> KeyValue | None:
        return await self.store.get(key)


@pytest.fixture
async def node1(tmp_path: Path) -> AsyncIterator[Node1]:
    url = f"sqlite://{tmp_path}/cluster.db"
    store = await open_store(url)
    await apply(store, ONE_SERVICE)
    await elect(store, "node2", await join(store, "node2"))
    agent = NodeAgent(url, "node1", tmp_path / "data")
    agent.store = store
    agent.timing = DEFAULT_TIMING
    # No warm spare: each test starts the one host it needs.
    agent.hosts = HostPool(agent.data_dir, agent.name, keep_spare=lambda: False)
    await agent._register()
    loop = asyncio.get_running_loop()
    # What `run` starts beside the cycles: store changes wake the loop; the hosts
    # hear how long the lease is good (or they fence themselves).
    agent._tasks.append(loop.create_task(agent._watch_loop()))
    agent._tasks.append(loop.create_task(agent._deadline_feeder(), name="deadline"))
    try:
        yield Node1(store, agent)
    finally:
        await agent._shutdown()  # kills what still runs, revokes the lease, closes the store


async def test_an_assignment_here_is_taken_in_one_transaction_and_started(
        node1: Node1) -> None:
    agent = node1.agent
    await node1.assign("node1")
    await agent._cycle()
    assert agent.last_reason == "took mail1 (epoch 1)"
    owner_kv = await node1.get(keys.OWNER + "mail1")
    epoch_kv = await node1.get(keys.EPOCH + "mail1")
    assert owner_kv is not None and epoch_kv is not None
    assert owner_kv.lease == agent._my_lease()  # it goes with node1's lease
    owner = OwnerRecord.from_store(owner_kv.key, owner_kv.value)
    assert (owner.node, owner.epoch) == ("node1", 1)
    assert EpochRecord.from_store(epoch_kv.key, epoch_kv.value).epoch == 1
    assert owner_kv.mod_revision == epoch_kv.mod_revision  # one transaction
    lvs = node1.local()
    assert lvs.proc.returncode is None and alive(lvs.proc.pid)

    await node1.until(node1.is_online, "mail1 online")
    assert alive(lvs.resource_pids["svc"])
    status = await node1.get(keys.STATUS + "mail1")
    assert status is not None and status.lease == agent._my_lease()
    # Taken once: later cycles leave it be.
    await agent._cycle()
    assert agent.last_reason == "no action: node1 hosts mail1 online"
    assert node1.local() is lvs
    kv = await node1.get(keys.OWNER + "mail1")
    assert kv is not None and kv.mod_revision == owner_kv.mod_revision


async def test_an_assignment_elsewhere_releases_only_once_the_services_are_stopped(
        node1: Node1) -> None:
    lvs = await node1.online()
    service = lvs.resource_pids["svc"]
    seen_at_release: list[tuple[bool, str]] = []

    async def watch_release(start: int) -> None:
        async for ev in node1.store.watch(keys.OWNER + "mail1", start):
            if ev.type is EventType.DELETE:
                seen_at_release.append((alive(service), lvs.state))
                return

    watcher = asyncio.create_task(watch_release(await node1.store.revision() + 1))
    await node1.assign("node2")
    await node1.agent._cycle()
    assert node1.agent.last_reason == "taking mail1 offline: assigned to node2"

    async def released() -> bool:
        return "mail1" not in node1.agent.local and watcher.done()

    await node1.until(released, "mail1 released by node1")
    # When the owner key went, the service was already stopped, the host done.
    [(service_alive, group_state)] = seen_at_release
    assert not service_alive and group_state == "offline"
    assert await lvs.proc.wait() == 0 and not alive(lvs.proc.pid)
    assert await node1.get(keys.OWNER + "mail1") is None
    assert await node1.get(keys.STATUS + "mail1") is None
    assert await node1.get(keys.GIVEUP + "mail1") is None  # a clean hand-over, no failure
    epoch = await node1.get(keys.EPOCH + "mail1")
    assert epoch is not None and epoch.value == b"1"  # kept for the next owner to bump


async def test_a_changed_configuration_updates_the_running_host(node1: Node1) -> None:
    lvs = await node1.online()
    host, service = lvs.proc.pid, lvs.resource_pids["svc"]
    await apply(node1.store, cluster({"svc": resource(SLOW_STOP),
                                      "extra": resource(["sleep", "600"])}))

    async def extra_online() -> bool:
        return lvs.resources.get("extra") == "online" and lvs.state == "online"

    await node1.until(extra_online, "the added resource online")
    # Updated live: the same host, the first service untouched, ownership unchanged.
    assert node1.local() is lvs and lvs.proc.pid == host and lvs.proc.returncode is None
    assert lvs.resource_pids["svc"] == service and alive(service)
    assert alive(lvs.resource_pids["extra"])
    owner = await node1.get(keys.OWNER + "mail1")
    assert owner is not None and OwnerRecord.from_store(owner.key, owner.value).epoch == 1

    extra = lvs.resource_pids["extra"]
    await apply(node1.store, ONE_SERVICE)

    async def extra_gone() -> bool:
        return not alive(extra)

    await node1.until(extra_gone, "the removed resource stopped")
    assert alive(service) and lvs.proc.pid == host


async def test_an_administrators_resource_offline_reaches_the_host(node1: Node1) -> None:
    lvs = await node1.online()
    service = lvs.resource_pids["svc"]
    intent = keys.RESOURCE_ADMIN + "mail1/svc"
    await node1.store.put(intent, ResourceIntent(offline=True).to_store())

    async def held_offline() -> bool:
        return lvs.resources.get("svc") == "offline"

    await node1.until(held_offline, "svc offline")
    assert not alive(service)
    assert lvs.offline_resources == {"svc"} and node1.local() is lvs
    await node1.store.delete(intent)

    async def back_online() -> bool:
        return lvs.resources.get("svc") == "online"

    await node1.until(back_online, "svc online again")
    assert lvs.resource_pids["svc"] != service and alive(lvs.resource_pids["svc"])
    assert lvs.offline_resources == set()


async def test_without_a_usable_configuration_what_runs_keeps_running(node1: Node1) -> None:
    agent, store = node1.agent, node1.store
    lvs = await node1.online()
    host, service = lvs.proc.pid, lvs.resource_pids["svc"]
    owner = await node1.get(keys.OWNER + "mail1")
    # An administrator asks to move it: with a usable configuration the leader would.
    await store.put(keys.VS_ADMIN + "mail1",
                    VsIntent(move_to="node2", move_id="m1").to_store())
    leader = Leader("node2")
    invalid = cluster({"svc": {"type": "no_such_type", "properties": {}}})
    for written, problem in ((b"{not json", "unreadable: /clustermail/config: not JSON"),
                             (json.dumps(invalid).encode(), "no_such_type")):
        await store.put(keys.CONFIG, written)

        async def holding(problem: str = problem) -> bool:
            return problem in agent.last_reason

        await node1.until(holding, f"a reason line naming {problem!r}")
        assert agent.last_reason.startswith("no usable configuration (")
        assert agent.last_reason.endswith(
            "): keeping what runs here as it is (mail1) until a valid one is applied")
        await agent._cycle()  # and again: still nothing done
        assert node1.local() is lvs and not lvs.stopping and lvs.state == "online"
        assert lvs.proc.returncode is None and alive(service)
        assert await node1.get(keys.OWNER + "mail1") == owner
        # The leader moves nothing and leaves the move unanswered.
        before = (await read_view(store)).revision
        assert await leader.step(store, await read_view(store)) == []
        view = await read_view(store)
        assert view.revision == before and view.assignment("mail1").node == "node1"
        assert view.vs_intent("mail1").pending_move == "node2"

    await apply(store, ONE_SERVICE)
    await node1.until(node1.is_online, "mail1 online")
    assert agent.last_reason == "no action: node1 hosts mail1 online"
    assert lvs.proc.pid == host and lvs.resource_pids["svc"] == service and alive(service)
    # Usable again: the leader does the move it held back.
    await leader.step(store, await read_view(store))
    assert (await read_view(store)).assignment("mail1").node == "node2"


async def test_a_stopping_node_goes_offline_even_without_a_usable_configuration(
        node1: Node1) -> None:
    lvs = await node1.online()
    await node1.store.put(keys.CONFIG, b"{not json")
    node1.agent._request_stop()

    async def stopped() -> bool:
        return not node1.agent.local

    await node1.until(stopped, "node1 stopped hosting mail1")
    assert await lvs.proc.wait() == 0
    assert await node1.get(keys.OWNER + "mail1") is None


async def _lose_lease_and_rejoin(agent: NodeAgent) -> None:
    """What a store stall does to node1 mid-cycle: its lease's safe deadline passes
    (the fence runs) and the agent rejoins with a new lease."""
    old = agent.keeper
    assert old is not None
    old._lose("test: the lease's safe deadline passed")
    async with asyncio.timeout(WAIT):
        while agent.keeper is old or agent.keeper is None or not agent._lease_ok():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("lost_during", ["the ownership transaction", "the host's start"])
async def test_a_take_whose_lease_is_lost_meanwhile_starts_no_host(
        node1: Node1, lost_during: str) -> None:
    """Found by the fault campaign: a take bound to a lease lost (and replaced by a
    rejoin) while it awaited started a host anyway; its owner key expired with the
    old lease and another node served the same virtual server beside it."""
    agent = node1.agent
    old = agent.keeper
    assert old is not None
    if lost_during == "the ownership transaction":
        real_txn = agent.store.txn  # type: ignore[union-attr]

        async def txn(*args: Any, **kw: Any) -> Any:
            result = await real_txn(*args, **kw)
            if any(getattr(op, "key", "") == keys.OWNER + "mail1" for op in args[1]):
                await _lose_lease_and_rejoin(agent)
            return result

        agent.store.txn = txn  # type: ignore[method-assign,union-attr]
    else:
        real_take = agent.hosts.take

        async def take() -> Any:
            proc = await real_take()
            await _lose_lease_and_rejoin(agent)
            return proc

        agent.hosts.take = take  # type: ignore[method-assign]
    await node1.assign("node1")
    await agent._cycle()
    assert agent.keeper is not old
    assert "mail1" not in agent.local, "a host was started under the lost lease"
    assert agent.last_reason.startswith(f"mail1: taken under lease {old.id:x}, lost meanwhile")
    owner = await node1.get(keys.OWNER + "mail1")
    assert owner is not None and owner.lease == old.id  # goes with the old lease
    # The next cycle waits for that key to go rather than serving under it.
    await agent._cycle()
    assert "mail1" not in agent.local
    assert "waiting for node1's lease on it to expire" in agent.last_reason


async def test_a_host_killed_at_a_fence_is_gone_before_it_starts_here_again(
        node1: Node1) -> None:
    """Found by the fault campaign: an etcd leader frozen for 6 s let every lease
    expire; node2 fenced (SIGKILL to its host), rejoined, was still mail2's assigned
    owner and started a new host 70 ms later — which mounted the disk 143 ms before
    the killed host had exited. A fenced host now holds back its virtual server's
    next start here until it is seen to exit."""
    agent = node1.agent
    lvs = await node1.online()
    old_host = lvs.proc
    # A host that takes its time to be gone after the fence's SIGKILL (under load, a
    # large process): the kill lands half a second late.
    real_kill = old_host.kill
    loop = asyncio.get_running_loop()
    old_host.kill = lambda: loop.call_later(0.5, real_kill)  # type: ignore[assignment,method-assign]
    old = agent.keeper
    assert old is not None
    await node1.store.revoke(old.id)  # as the store expired it: the owner key is gone
    await _lose_lease_and_rejoin(agent)
    await agent._cycle()
    assert "mail1" not in agent.local, "started again beside the host the fence killed"
    assert f"waiting for its resource host {old_host.pid}, killed at the fence" in (
        agent.last_reason)
    assert alive(old_host.pid)
    await node1.until(node1.is_online, "mail1 online again once the old host exited")
    assert node1.local().proc is not old_host
    assert old_host.returncode is not None and not alive(old_host.pid)


async def test_every_renewal_reaches_the_host_at_once(node1: Node1) -> None:
    """After a store stall a renewal can land just before the deadline; the host must
    hear of it then, not on the deadline feeder's next tick (the fault campaign saw
    healthy hosts fence themselves, exit 4, while their agents did not). With the
    feeder stopped, the renewals alone keep the host alive for several leases."""
    agent = node1.agent
    lvs = await node1.online()
    feeder = [t for t in agent._tasks if t.get_name() == "deadline"]
    assert len(feeder) == 1
    feeder[0].cancel()
    assert agent.keeper is not None and agent.timing is not None
    renewals = agent.keeper.renewals
    with pytest.raises(TimeoutError):  # the host fences (exits 4) within a lease otherwise
        await asyncio.wait_for(asyncio.shield(lvs.proc.wait()), 3 * agent.timing.ttl)
    assert agent.keeper.renewals >= renewals + 3
    assert alive(lvs.proc.pid) and agent.counters.fenced == 0


async def test_a_dead_host_whose_undo_fails_is_held_until_it_is_reverted(
        node1: Node1, tmp_path: Path) -> None:
    """What a dead host left on the machine (an interface address) must be reverted
    before another node may bring the same thing up: while the undo command fails the
    virtual server stays owned here, and it is let go once the command succeeds."""
    agent = node1.agent
    lvs = await node1.online()
    fixed = tmp_path / "fixed"
    undo.record(agent.data_dir, "node1", "mail1", "ip", ["sh", "-c", f"test -e {fixed}"],
                "address 192.0.2.7 on eth9")
    owner = await node1.get(keys.OWNER + "mail1")
    assert owner is not None
    os.kill(lvs.proc.pid, signal.SIGKILL)  # dies without reverting anything

    async def held() -> bool:
        return agent.local.get("mail1") is lvs and lvs.reason.startswith(
            "cannot revert what its resource host left (ip)")

    await node1.until(held, "mail1 held after its undo failed")
    kv = await node1.get(keys.OWNER + "mail1")
    assert kv is not None and kv.mod_revision == owner.mod_revision  # still ours
    assert await node1.get(keys.GIVEUP + "mail1") is None
    fixed.touch()  # the command works now: the retry reverts, then the group is let go

    async def released() -> bool:
        return (await node1.get(keys.OWNER + "mail1") is None
                and await node1.get(keys.GIVEUP + "mail1") is not None)

    await node1.until(released, "mail1 released once reverted")
    assert not (agent.data_dir / undo.UNDO_DIR / "node1" / "mail1" / "ip.json").exists()


async def test_a_stop_finishes_though_an_undo_fails_and_leaves_the_lease_to_expire(
        node1: Node1, tmp_path: Path) -> None:
    """A stop always finishes: a dead host whose undo keeps failing is let go when the
    node stops, but its ownership is not released early (no revoke of the lease)."""
    agent = node1.agent
    lvs = await node1.online()
    undo.record(agent.data_dir, "node1", "mail1", "ip", ["false"], "address 192.0.2.7 on eth9")
    agent.stopping = True  # a stop is under way (as _request_stop sets it)
    os.kill(lvs.proc.pid, signal.SIGKILL)
    async with asyncio.timeout(WAIT):
        while "mail1" in agent.local:
            await asyncio.sleep(0.05)
    assert agent._unreverted == {"mail1"}
    keeper = agent.keeper
    assert keeper is not None
    await agent._shutdown()  # closes node1's store: look through another handle
    other = await open_store(f"sqlite://{tmp_path}/cluster.db")
    try:
        assert await other.get(keys.OWNER + "mail1") is not None  # not revoked: expires
    finally:
        await other.close()
    agent.keeper = None  # shut down already (the fixture's second shutdown is a no-op)
