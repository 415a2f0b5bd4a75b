"""SELECT latency against Dovecot on its own formats, side by side in one run.

    python -m bench.imap_select [--messages 10000] [--sessions 10] [--rounds 3]

The SELECT workload of bench/imap.py (``--sessions`` concurrent sessions, each selecting
INBOX ``--rounds`` times; median latency) on a ``--messages``-message INBOX, against our
server and Dovecot with sdbox, mdbox and maildir, each filled by APPEND with Dovecot's
default ``mail_fsync`` and restarted (bench/imap.DovecotBox). NOOP latency is measured
the same way, for scale. bench/imap.py measures the same against every format among its
other workloads; this one is the quick SELECT-only run, with more rounds.
Results go to bench/results/imap_select.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench.imap import FORMATS, RESULTS, Client, DovecotBox, Ours, latencies
from bench.machine import loadavg


async def select_latencies(port: int, sessions: int, rounds: int) -> dict[str, float]:
    """bench/imap.py's SELECT and NOOP latencies, after the same warm-up."""
    clients = [await Client.connect(port) for _ in range(sessions)]
    await clients[0].cmd(b"SELECT INBOX")  # warm caches (Dovecot builds its index)
    await clients[0].cmd(b"FETCH 1:* (FLAGS ENVELOPE)")
    out = await latencies(clients, rounds)
    for c in clients:
        await c.close()
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"params": vars(args) | {"out": str(args.out)}, "servers": {}, "load": {}}

    async def measure(server: Ours | DovecotBox) -> None:
        before = loadavg()
        got = await select_latencies(server.port, args.sessions, args.rounds)
        out["servers"][server.name] = got
        out["load"][server.name] = [before, loadavg()]

    with tempfile.TemporaryDirectory() as tmp:
        ours = Ours(Path(tmp), args.messages, 0)
        try:
            await measure(ours)
        finally:
            ours.stop()
    for fmt in FORMATS:
        ref = DovecotBox(fmt)
        try:
            await ref.fill(args.messages, args.sessions)
            await measure(ref)
        finally:
            ref.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "imap_select.json")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    ours = results["servers"]["clustermail"]["select_ms"]
    print("server               SELECT ms   NOOP ms   SELECT ratio (theirs / ours)")
    for name, got in results["servers"].items():
        select, noop = got["select_ms"], got["noop_ms"]
        print(f"{name:20} {select:9.3f} {noop:9.3f}   {select / ours:.2f}x")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
