"""The seed's scenario with real node processes: 4 nodes, 3 virtual servers, active-passive."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.harness import LocalCluster, banner, cluster_toml, free_addresses, owners, vs_of


async def test_seed_failover_sequence(tmp_path: Path, cluster_store_url: str) -> None:
    base, port = free_addresses()
    async with LocalCluster(tmp_path, cluster_store_url, cluster_toml(base, port)) as c:
        c.start_all()
        expected = {"mail1": "node1", "mail2": "node2", "mail3": "node3"}
        await c.wait_for(lambda s: owners(s) == expected, what="the initial layout")
        for i in (1, 2, 3):
            line = banner(f"{base}.{10 + i}", port)
            assert line is not None and f"mail{i}" in line

        # node3 fails: mail3 moves to the standby node4, the others stay.
        c.kill_node("node3")
        await c.wait_for(
            lambda s: owners(s) == {**expected, "mail3": "node4"}, what="mail3 on node4"
        )
        line = banner(f"{base}.13", port)
        assert line is not None and "mail3" in line and "node4" in line

        # node2 fails while node3 is down: no standby is left, mail2 is left failed.
        c.kill_node("node2")
        status = await c.wait_for(
            lambda s: vs_of(s, "mail2")["state"] == "failed", what="mail2 failed"
        )
        assert "no standby" in vs_of(status, "mail2")["reason"]
        assert owners(status)["mail3"] == "node4" and owners(status)["mail1"] == "node1"
        assert banner(f"{base}.12", port) is None

        # node3 returns: the failed mail2 starts there; mail3 does not fail back.
        c.start_node("node3")
        status = await c.wait_for(
            lambda s: owners(s) == {"mail1": "node1", "mail2": "node3", "mail3": "node4"},
            what="mail2 on node3",
        )
        line = banner(f"{base}.12", port)
        assert line is not None and "mail2" in line and "node3" in line
