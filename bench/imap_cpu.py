"""Server CPU per IMAP operation: bench/imap.py's client and workloads against our server
alone, with what the server process spent (user + system time from ``/proc``) divided by
the operations it served, for its event loop's thread and for all its other threads.

    python -m bench.imap_cpu [--workloads store,mixed,append,unseen] [--ops 2000]
                             [--messages 10000] [--sessions 10] [--src DIR]

On a shared machine rates move more from run to run than most changes do; CPU per
operation much less. Compare two versions of the code by running them alternately in
the same minutes: ``--src`` runs the server from another source tree (a checkout of the
version to compare with; the client and the prepared mailbox stay this tree's). Each
workload runs once unmeasured (warm-up), then measured; ``--sessions`` sessions with
INBOX selected each send ``--ops`` commands.

The STORE workload here is not bench/imap.py's (random messages, ``+FLAGS`` only, where
after the warm-up most STOREs find \\Flagged already set and change nothing): every
STORE of it changes a flag. Session *i* owns the messages *i*, *i* + sessions, … and
walks them in turn, toggling \\Flagged on each (``+FLAGS.SILENT`` where it is unset,
``-FLAGS.SILENT`` where it is set: the prepared mailbox has none set), so the CPU per
operation is that of a STORE that commits a change and tells the other sessions of it.
The mixed and APPEND workloads are bench/imap.py's; ``unseen`` is its UID SEARCH UNSEEN
(a third of the prepared messages are unseen: an answer of ~3,300 UIDs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.imap import Client, prepare_ours, workload
from bench.proc_cpu import main_and_other_threads

Make = Callable[[random.Random], bytes]


def toggling_store(session: int, sessions: int, messages: int) -> Make:
    """Session ``session``'s STOREs: each toggles \\Flagged on its next own message."""
    own = list(range(session + 1, messages + 1, sessions)) or [1]
    flagged: set[int] = set()
    turn = 0

    def store(_: random.Random) -> bytes:
        nonlocal turn
        n = own[turn % len(own)]
        turn += 1
        sign = b"-" if n in flagged else b"+"
        flagged.symmetric_difference_update((n,))
        return b"STORE %d %sFLAGS.SILENT (\\Flagged)" % (n, sign)

    return store


def session_workloads(name: str, sessions: int, messages: int) -> list[Make]:
    """One command maker per session (a maker may keep state across both rounds)."""
    if name == "store":
        return [toggling_store(i, sessions, messages) for i in range(sessions)]
    if name == "unseen":
        return [lambda _: b"UID SEARCH UNSEEN"] * sessions
    return [workload(name, messages)] * sessions


async def measure(
    port: int, pid: int, makers: list[Make], ops: int
) -> tuple[float, float, float]:
    """(ops/s, main thread µs/op, other threads µs/op) of one measured round."""
    sessions = len(makers)
    clients = [await Client.connect(port) for _ in range(sessions)]
    for c in clients:
        await c.cmd(b"SELECT INBOX")

    async def worker(c: Client, seed: int) -> None:
        rnd = random.Random(seed)
        make = makers[seed % sessions]
        for _ in range(ops):
            await c.cmd(make(rnd))

    # warm-up (seeds ≡ i mod sessions keep each client on its own maker)
    await asyncio.gather(*(worker(c, 1000 * sessions + i) for i, c in enumerate(clients)))
    main0, other0 = main_and_other_threads(pid)
    started = time.perf_counter()
    await asyncio.gather(*(worker(c, i) for i, c in enumerate(clients)))
    elapsed = time.perf_counter() - started
    main1, other1 = main_and_other_threads(pid)
    for c in clients:
        await c.close()
    n = sessions * ops
    return n / elapsed, (main1 - main0) / n * 1e6, (other1 - other0) / n * 1e6


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}")
    return int(text)


def workloads(text: str) -> list[str]:
    names = [w for w in text.split(",") if w]
    unknown = [w for w in names if w not in ("store", "mixed", "append", "unseen")]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"workloads are store, mixed, append and unseen, got {text!r}"
        )
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", type=workloads, default=["store", "mixed"])
    parser.add_argument("--ops", type=positive, default=2000, help="per session")
    parser.add_argument("--messages", type=positive, default=10_000)
    parser.add_argument("--sessions", type=positive, default=10)
    parser.add_argument("--src", type=Path, help="run the server from this source tree")
    args = parser.parse_args()
    if args.src is not None and not (args.src / "src" / "clustermail").is_dir():
        parser.error(f"--src: {args.src} holds no src/clustermail")
    env = dict(os.environ)
    cwd = Path(__file__).parent.parent
    if args.src is not None:
        cwd = args.src.resolve()
        env["PYTHONPATH"] = f"{cwd / 'src'}{os.pathsep}{cwd}"
    with tempfile.TemporaryDirectory() as tmp:
        db = prepare_ours(Path(tmp), args.messages, 0)
        port_file = Path(tmp) / "port"
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.imap", "--serve", str(db), str(port_file)],
            cwd=cwd,
            env=env,
        )
        try:
            deadline = time.monotonic() + 60
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.05)
            port = int(port_file.read_text())
            for name in args.workloads:
                rate, main_us, other_us = asyncio.run(
                    measure(
                        port,
                        server.pid,
                        session_workloads(name, args.sessions, args.messages),
                        args.ops,
                    )
                )
                print(
                    f"{name}: {rate:,.0f} ops/s, server CPU {main_us + other_us:.0f} µs/op "
                    f"(event loop {main_us:.0f}, other threads {other_us:.0f}), "
                    f"load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
