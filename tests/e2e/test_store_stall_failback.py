"""A stall of the whole store (SQLite: its write lock held by another process for
longer than the lease TTL) fences every node at once. It is no failure of any node:
once the store answers, they all rejoin within a fraction of a second, and the
first of them to lead waits for the others instead of failing their virtual
servers over to whichever node rejoined first — which left the virtual server that
fails back (mail1) away from its preferred node for good when another virtual
server, that never fails back, took that node meanwhile."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from clustermail.cluster import eventlog
from tests.e2e.harness import SEED, LocalCluster, cluster_toml, free_addresses, owners

HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""
#: Seconds the store stalls: 2.5 x the default timing's 2 s TTL.
STALL = 5.0


async def hold_write_lock(db: Path, seconds: float) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert await asyncio.to_thread(holder.stdout.readline) == "locked\n"
        await asyncio.to_thread(holder.wait, seconds + 30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


async def test_after_a_store_stall_every_virtual_server_returns_where_it_was(
    tmp_path: Path,
) -> None:
    base, port = free_addresses()
    toml = cluster_toml(base, port).replace('failback = "never"', 'failback = "immediate"', 1)
    async with LocalCluster(tmp_path, f"sqlite://{tmp_path}/cluster.db", toml) as c:
        c.start_all()
        await c.wait_for(lambda s: owners(s) == SEED, timeout=60, what="the initial layout")
        assert c.store is not None
        await hold_write_lock(tmp_path / "cluster.db", STALL)
        await c.wait_for(lambda s: owners(s) == SEED, timeout=60,
                         what="every virtual server back on its preferred node")
        entries = await eventlog.read(c.store, 500)
        assert any(e.event == "node_rejoined" for e in entries)  # the stall did fence
        moved = [e.message for e in entries if e.event == "placement"
                 and ("moves to" in e.message or "left failed" in e.message)]
        assert moved == [], moved
