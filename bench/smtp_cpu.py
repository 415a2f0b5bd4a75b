"""Server CPU per SMTP message: bench.mail's server (``bench/mail_server.py``) driven by
Postfix's ``smtp-source``, with what the server process spent (user + system time from
``/proc``) divided by the messages it took, for its event loop's thread and for all its
other threads (the store's writer and preparer), and the rate.

    python -m bench.smtp_cpu [--cells 10x2,10x20,1x2] [--messages 5000] [--rounds 3]
                             [--src DIR[,DIR...]] [--bench-from-src]

On a shared machine rates move more from run to run than most changes do; CPU per
message much less. ``--src`` compares source trees (a checkout of the version to compare
with, and ``.`` for this one) **alternately in the same minutes**: every round runs each
cell on each tree in turn, a fresh server each time (one warm-up of 300 messages, then
``--messages``; one session gets a fifth of them). The server's bench code is this
tree's (so every tree serves the same store setup) unless ``--bench-from-src``. Medians
over the rounds at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.imap_cpu import positive
from bench.mail import free_port
from bench.proc_cpu import main_and_other_threads

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 300


def cells(text: str) -> list[tuple[int, int]]:
    """``10x2,1x20``: (sessions, KB) pairs."""
    out = []
    for cell in (c for c in text.split(",") if c):
        sessions, x, size = cell.partition("x")
        if not x or not sessions.isdigit() or not size.isdigit() or not int(sessions) \
                or not int(size):
            raise argparse.ArgumentTypeError(f"cells are SESSIONSxKB, got {cell!r}")
        out.append((int(sessions), int(size)))
    if not out:
        raise argparse.ArgumentTypeError("no cells")
    return out


def trees(text: str) -> list[Path]:
    out = [Path(t).resolve() for t in text.split(",") if t]
    for tree in out:
        if not (tree / "src" / "clustermail").is_dir():
            raise argparse.ArgumentTypeError(f"{tree} holds no src/clustermail")
    return out or [ROOT]


def source(port: int, sessions: int, kb: int, messages: int) -> None:
    subprocess.run(
        ["smtp-source", "-d", "-s", str(sessions), "-m", str(messages), "-l", str(kb * 1024),
         "-f", "a@x.test", "-t", "u1@bench.test", f"127.0.0.1:{port}"],
        check=True, capture_output=True, timeout=600,
    )


def measure(tree: Path, bench: Path, sessions: int, kb: int, messages: int
            ) -> tuple[float, float, float]:
    """(msg/s, event loop µs/msg, other threads µs/msg) of a fresh server from ``tree``."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = dict(os.environ, PYTHONPATH=f"{tree / 'src'}{os.pathsep}{bench}")
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.mail_server", tmp, "127.0.0.1", str(port),
             str(free_port())],
            cwd=bench, env=env, stdout=subprocess.PIPE,
        )
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != b"ready":
                raise SystemExit(f"the server from {tree} did not start")
            source(port, sessions, kb, WARM_UP)
            main0, other0 = main_and_other_threads(server.pid)
            started = time.perf_counter()
            source(port, sessions, kb, messages)  # returns after the last 250 (durable)
            elapsed = time.perf_counter() - started
            main1, other1 = main_and_other_threads(server.pid)
        finally:
            server.terminate()
            server.wait(10)
    return messages / elapsed, (main1 - main0) / messages * 1e6, \
        (other1 - other0) / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=cells, default=cells("10x2,10x20,1x2"))
    parser.add_argument("--messages", type=positive, default=5000,
                        help="per cell at 10 sessions (a fifth at 1 session)")
    parser.add_argument("--rounds", type=positive, default=3)
    parser.add_argument("--src", type=trees, default=[ROOT],
                        help="comma-separated source trees, run alternately")
    parser.add_argument("--bench-from-src", action="store_true",
                        help="each tree's own bench/mail_server.py")
    args = parser.parse_args()
    if shutil.which("smtp-source") is None:
        parser.error("smtp-source (Postfix) is not installed; `python -m bench.mail` installs it")
    runs: dict[tuple[str, int, int], list[tuple[float, float, float]]] = {}
    for r in range(args.rounds):
        for sessions, kb in args.cells:
            messages = args.messages if sessions > 1 else max(1, args.messages // 5)
            for tree in args.src:
                bench = tree if args.bench_from_src else ROOT
                rate, main_us, other_us = measure(tree, bench, sessions, kb, messages)
                runs.setdefault((str(tree), sessions, kb), []).append((rate, main_us, other_us))
                print(f"round {r + 1} {sessions}x{kb}KB {tree}: {rate:,.0f} msg/s, server CPU "
                      f"{main_us + other_us:.0f} µs/msg (event loop {main_us:.0f}, other "
                      f"threads {other_us:.0f}), load {os.getloadavg()[0]:.1f}", flush=True)
    print("medians:")
    for (tree, sessions, kb), got in runs.items():
        rate = statistics.median(g[0] for g in got)
        cpu = statistics.median(g[1] + g[2] for g in got)
        loop = statistics.median(g[1] for g in got)
        print(f"  {sessions}x{kb}KB {tree}: {rate:,.0f} msg/s, {cpu:.0f} µs/msg "
              f"(event loop {loop:.0f})")


if __name__ == "__main__":
    main()
