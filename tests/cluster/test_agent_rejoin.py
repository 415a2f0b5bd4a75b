"""A node agent that lost its lease rejoins, however long the store takes to answer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from clustermail.cluster import keys
from clustermail.cluster.agent import NodeAgent
from clustermail.cluster.timing import FAST_TIMING
from clustermail.coord import open_store
from tests.support.agent_loop import event_loop_policy  # noqa: F401  (asyncio, as the agent)

WAIT = 10.0


async def agent_with_closed_store(tmp_path: Path) -> NodeAgent:
    """An agent whose store refuses every call (closed), retrying without pauses."""
    url = f"sqlite://{tmp_path}/cluster.db"
    agent = NodeAgent(url, "node1", tmp_path / "data")
    agent.timing = FAST_TIMING
    agent.rejoin_max_delay = 0.0
    closed = await open_store(url)
    await closed.close()
    agent.store = closed
    return agent


async def failures_past(agent: NodeAgent, count: int, task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(WAIT):
        while agent.rejoin_failures <= count:
            assert not task.done(), "the agent gave up rejoining"
            await asyncio.sleep(0)  # one retry per turn of the loop: nothing to wait for


async def test_rejoin_keeps_trying_until_the_store_answers(tmp_path: Path) -> None:
    agent = await agent_with_closed_store(tmp_path)
    task = asyncio.create_task(agent._rejoin("lease expired"))
    await failures_past(agent, 1000, task)  # an earlier agent gave up after 1,000

    store = await open_store(agent.store_url)
    agent.store = store
    try:
        async with asyncio.timeout(WAIT):
            await task
        assert await store.get(keys.NODES + "node1") is not None
        assert agent.keeper is not None and not agent.keeper.lost.is_set()
        # Should it lead, it first waits for the nodes the same outage fenced.
        assert agent.leader.rejoin_wait_until > time.monotonic()
    finally:
        if agent.keeper is not None:
            await agent.keeper.stop(revoke=True)
        await store.close()


async def test_rejoin_ends_when_the_node_stops(tmp_path: Path) -> None:
    agent = await agent_with_closed_store(tmp_path)
    task = asyncio.create_task(agent._rejoin("lease expired"))
    await failures_past(agent, 3, task)
    agent.stopping = True
    async with asyncio.timeout(WAIT):
        await task
    assert agent.keeper is None
