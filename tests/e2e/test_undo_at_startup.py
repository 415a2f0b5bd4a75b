"""A node agent reverts what resource hosts of its earlier run left on the machine
(undo records) before it joins the cluster, and says so in the cluster log."""

from __future__ import annotations

import json
from pathlib import Path

from clustermail.cluster import undo
from tests.e2e.harness import LocalCluster, cluster_toml, free_addresses, owners


async def test_the_agent_reverts_leftovers_before_it_joins(tmp_path: Path) -> None:
    base, port = free_addresses()
    toml = cluster_toml(base, port, nodes=2, servers=1)
    async with LocalCluster(tmp_path, f"sqlite://{tmp_path}/cluster.db", toml) as c:
        marker = tmp_path / "reverted"
        # What a host killed together with its agent might leave: a change and its record.
        undo.record(c.data, "node1", "mail1", "ip", ["sh", "-c", f"echo reverted > {marker}"],
                    f"address {base}.11 on eth9")
        undo.record(c.data, "node2", "mail1", "ip", ["sh", "-c", f"echo wrong > {marker}"],
                    "another node's change")
        c.start_node("node1")
        await c.wait_for(lambda s: owners(s)["mail1"] == "node1", timeout=60,
                         what="mail1 online on node1")
        assert marker.read_text() == "reverted\n"
        assert not (c.data / undo.UNDO_DIR / "node1" / "mail1" / "ip.json").exists()
        assert (c.data / undo.UNDO_DIR / "node2" / "mail1" / "ip.json").exists()  # not ours
        out = c.cli("log", "--json")
        assert out.returncode == 0, out.stderr
        entries = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        events = [e for e in entries if e.get("event") == "undone"]
        assert events and f"removed address {base}.11 on eth9" in events[0]["message"]
