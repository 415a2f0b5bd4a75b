"""`clustermail status --watch`: the picture drawn from a real store, and the command
redrawing live in a real process until Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from rich.console import Console

from clustermail.admin.watch import picture
from clustermail.cluster import keys
from clustermail.cluster.records import StatusRecord
from clustermail.cluster.view import read_view
from tests.support.cluster_state import apply, config, elect, join, own, sqlite_store
from tests.support.local_up import WITH_DEFAULT_SIGNALS


async def test_picture_shows_nodes_with_their_virtual_servers(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        await apply(store, config())
        lease = await join(store, "node1")
        await elect(store, "node1", lease)
        await own(store, "mail1", "node1", lease)
        await store.put(keys.STATUS + "mail1", StatusRecord(node="node1", state="online")
                        .to_store(), lease=lease)
        console = Console(record=True, width=160)
        console.print(picture(await read_view(store)))
        text = console.export_text()
    assert "node1 up ★" in text and "mail1 online" in text
    assert "node2 down" in text and "not running" in text and "mail2 offline" in text


async def test_status_watch_redraws_until_ctrl_c(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        await apply(store, config())
    url = f"sqlite://{tmp_path}/cluster.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WITH_DEFAULT_SIGNALS, "-m", "clustermail", "status", "--watch",
        "--store", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True, env={**os.environ, "COLUMNS": "160", "TERM": "dumb"})
    assert proc.stdout is not None
    try:
        seen = b""
        async with asyncio.timeout(30):
            while b"node3" not in seen:
                seen += await proc.stdout.read(4096)
        async with sqlite_store(tmp_path) as store:
            await join(store, "node2")
            async with asyncio.timeout(30):
                while b"node2 up" not in seen:
                    seen += await proc.stdout.read(4096)
        os.killpg(proc.pid, signal.SIGINT)
        # Keep reading: a redraw blocked on a full pipe would keep it from exiting.
        await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 130
    finally:
        if proc.returncode is None:  # a failed wait above: never leave it running
            proc.kill()
            await proc.wait()
