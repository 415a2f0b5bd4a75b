"""The ceiling of IMAP protocol work in several processes: N complete servers, each on
its own copy of the same mailbox database, listening on one port with ``SO_REUSEPORT``
(the kernel spreads the sessions; no hand-off between the servers at all, so no cost of
one either), against one, alternated in the same minutes.

    python -m bench.imap_ceiling [--servers 1,2] [--rounds 2] [--messages 10000]
                                 [--sessions 10] [--ops 1000] [--workloads store,mixed]

bench/imap.py's client; the workloads of bench.imap_cpu (every STORE changes a flag;
the mixed workload is bench.imap's, run for ``--ops`` ÷ 2 commands). Each cell warms up
with half its commands, then reports the rate and how many cores each server kept busy.
With separate databases a STORE's news reaches only the sessions of its own server, so
this is an upper bound of what spreading sessions over processes could give, not a
design (see docs/decisions.md, "Protocol work stays in one process per virtual server").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.imap import Client, prepare_ours
from bench.imap_cpu import positive, session_workloads, workloads
from bench.mail import free_port
from bench.proc_cpu import cpu_seconds

ROOT = Path(__file__).resolve().parent.parent

#: One server: bench.imap's, listening with SO_REUSEPORT on a given port.
SERVE = r"""
import asyncio, sys
from clustermail import eventloop
from clustermail.mail.imap.server import ImapServer
from clustermail.mail.store import MailboxDatabase
from tests.support.imap_server import MemoryAuthenticator
from bench.imap import USER, PASSWORD

async def main() -> None:
    loop = asyncio.get_running_loop()
    create = loop.create_server
    async def reusing(*args, **kwargs):
        return await create(*args, **kwargs, reuse_port=True)
    loop.create_server = reusing
    db = MailboxDatabase(sys.argv[1])
    db.mount(2)
    server = ImapServer(MemoryAuthenticator({USER: PASSWORD}), lambda user: (db, user),
                        allow_plaintext_on_loopback=True)
    await server.listen("127.0.0.1", int(sys.argv[2]))
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes it, or dies

eventloop.run(main())
"""


async def cell(
    port: int, pids: list[int], name: str, sessions: int, messages: int, ops: int
) -> tuple[float, list[float]]:
    """(ops/s, cores each server kept busy) of one workload over ``sessions``."""
    clients = [await Client.connect(port) for _ in range(sessions)]
    for c in clients:
        await c.cmd(b"SELECT INBOX")
    makers = session_workloads(name, sessions, messages)

    async def worker(c: Client, i: int, n: int) -> None:
        rnd = random.Random(i)
        for _ in range(n):
            await c.cmd(makers[i](rnd))

    await asyncio.gather(*(worker(c, i, ops // 2) for i, c in enumerate(clients)))
    before, started = [cpu_seconds([p]) for p in pids], time.perf_counter()
    await asyncio.gather(*(worker(c, i, ops) for i, c in enumerate(clients)))
    elapsed = time.perf_counter() - started
    busy = [(cpu_seconds([p]) - b) / elapsed for p, b in zip(pids, before, strict=True)]
    for c in clients:
        await c.close()
    return sessions * ops / elapsed, busy


def run_servers(
    base: Path, tmp: Path, n: int, args: argparse.Namespace
) -> list[tuple[str, float, list[float]]]:
    port = free_port()
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(n):
            folder = Path(tempfile.mkdtemp(dir=tmp))
            shutil.copy(base, folder / base.name)
            server = subprocess.Popen(
                [sys.executable, "-c", SERVE, str(folder / base.name), str(port)],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )
            servers.append(server)
            assert server.stdout is not None
            if server.stdout.readline().strip() != b"ready":
                raise SystemExit("a server did not start")
        pids = [s.pid for s in servers]
        out = []
        for name in args.workloads:
            ops = args.ops if name == "store" else max(1, args.ops // 2)
            rate, busy = asyncio.run(cell(port, pids, name, args.sessions, args.messages, ops))
            out.append((name, rate, busy))
        return out
    finally:
        for server in servers:
            server.kill()
            server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="1,2", help="comma-separated server counts")
    parser.add_argument("--rounds", type=positive, default=2)
    parser.add_argument("--messages", type=positive, default=10_000)
    parser.add_argument("--sessions", type=positive, default=10)
    parser.add_argument("--ops", type=positive, default=1000, help="per session (STORE)")
    parser.add_argument("--workloads", type=workloads, default=["store", "mixed"])
    args = parser.parse_args()
    try:
        counts = [int(x) for x in args.servers.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        parser.error(f"--servers: expected counts ≥ 1 like 1,2, got {args.servers!r}")
    with tempfile.TemporaryDirectory() as tmp:
        base = prepare_ours(Path(tempfile.mkdtemp(dir=tmp)), args.messages, 0)
        for r in range(args.rounds):
            for n in counts:
                for name, rate, busy in run_servers(base, Path(tmp), n, args):
                    cores = ", ".join(f"{b:.2f}" for b in busy)
                    print(f"round {r + 1} servers {n}: {name} {rate:,.0f} ops/s, cores busy "
                          f"per server {cores}, load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
