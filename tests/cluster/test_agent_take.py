"""Taking a virtual server across a lost lease: a node agent whose lease is lost and
replaced by a rejoin while its ownership write is in flight starts nothing on it.

Seen in a fault campaign: after a stalled store, the take of mail2 was written on the
lease being lost, and its host started under the next one; the owner key went with
the old lease, and mail2 ran with no owner key at all (nothing kept another node from
taking it) while its status could never be written again."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from clustermail.cluster import keys
from clustermail.cluster.agent import NodeAgent
from clustermail.cluster.view import read_view
from clustermail.coord import TxnResult
from tests.support.cluster_state import apply, config, sqlite_store


async def test_a_take_written_on_a_lease_lost_meanwhile_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sqlite_store(tmp_path) as store:
        await apply(store, config())
        agent = NodeAgent(f"sqlite://{tmp_path}/cluster.db", "node1", tmp_path / "data")
        agent.store = store
        view = await read_view(store)
        agent.timing = view.applied_config().timing
        await agent._register()
        first = agent.keeper
        assert first is not None
        real_txn: Callable[..., Awaitable[TxnResult]] = store.txn

        async def txn_then_rejoin(*args: Any, **kwargs: Any) -> TxnResult:
            result = await real_txn(*args, **kwargs)
            # While the take was in flight: the lease is lost, the agent rejoins.
            await first.stop(revoke=True)
            await agent._register()
            return result

        monkeypatch.setattr(store, "txn", txn_then_rejoin)
        try:
            reason = await agent._maybe_start(view, view.config or {}, "mail1",
                                              view.mod_revision(keys.ASSIGN + "mail1"))
            monkeypatch.setattr(store, "txn", real_txn)
            assert reason is None
            assert agent.local == {}, "a resource host started on ownership that is gone"
            assert await store.get(keys.OWNER + "mail1") is None  # went with the old lease
        finally:
            for lvs in agent.local.values():
                lvs.proc.kill()
            agent.hosts.close()
            if agent.keeper is not None:
                await agent.keeper.stop(revoke=True)
