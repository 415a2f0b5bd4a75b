"""Server CPU per message read: POP3 RETR and IMAP FETCH n BODY.PEEK[], ours and Dovecot's.

    python -m bench.body_reads [--rounds 3] [--seconds 3] [--messages 10000] [--ops 500]
                               [--formats maildir,sdbox] [--only pop3|imap]
                               [--pop3-placement shared|split|any]

POP3: one session sending ``RETR n`` over 100 messages of 2 KB (bench.mail's client and
corpus) to our POP3 service and to Dovecot's (Maildir), the client and the server on one
CPU unless told otherwise (bench.mail.PLACEMENTS). IMAP: 10 sessions each sending
``--ops`` ``FETCH n BODY.PEEK[]`` of random messages of a ``--messages`` INBOX
(bench.imap's corpus, ~4.5 KB each) to our IMAP server and to Dovecot on each of
``--formats``. Rounds are interleaved (ours, then each peer, again). Each cell gives the
rate and the server's CPU time per operation (user + system from /proc: our server's
process; Dovecot's pop3 or imap processes, children of its master), a measure that moves
less with a shared machine's load than the rate. Writes bench/results/body-reads.json.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import imap, mail
from bench import mail_peers as peers
from bench.proc_cpu import children, cpu_seconds, master_pid

RESULTS = Path(__file__).with_name("results") / "body-reads.json"
SESSIONS = 10

Cell = tuple[float, float]  # ops/s, server CPU µs per op
Pids = Callable[[], list[int]]


# --------------------------------------------------------------------------- POP3


def pop3_cell(port: int, pids: Pids, seconds: float, placement: str) -> Cell:
    return mail.pop3_retr(port, mail.POP_USER, 100, seconds, pids, placement)


def pop3_cells(tmp: Path, args: argparse.Namespace) -> dict[str, list[Cell]]:
    ours = mail.Ours(tmp)
    dovecot = None
    try:
        mail.fill_ours(ours, 100)
        targets: dict[str, tuple[int, Pids]] = {
            "clustermail": (ours.pop3_port, lambda: [ours.proc.pid])}
        if "maildir" in args.formats:
            port = mail.free_port()
            dovecot = peers.dovecot_pop3(tmp, port, mail.POP_USER, mail.PASSWORD)
            mail.fill_maildir(dovecot.folder / "mail" / mail.POP_USER, 100)
            dovecot.start(port)
            targets["dovecot-maildir"] = (
                port, functools.partial(children, master_pid(dovecot.folder / "run"), "pop3"))
        cells: dict[str, list[Cell]] = {name: [] for name in targets}
        for r in range(args.rounds):
            for name, (port, pids) in targets.items():
                cells[name].append(pop3_cell(port, pids, args.seconds, args.pop3_placement))
                report(f"round {r + 1} POP3 RETR", name, cells[name][-1])
        return cells
    finally:
        if dovecot is not None:
            dovecot.stop()
        ours.stop()


# --------------------------------------------------------------------------- IMAP


async def imap_cell(
    clients: list[imap.Client], pids: Pids, messages: int, ops: int, seed: int
) -> Cell:
    async def worker(c: imap.Client, rnd: random.Random, n: int) -> None:
        for _ in range(n):
            await c.cmd(b"FETCH %d BODY.PEEK[]" % rnd.randint(1, messages))

    rnds = [random.Random(seed + i) for i in range(SESSIONS)]
    await asyncio.gather(*(worker(c, r, 20) for c, r in zip(clients, rnds, strict=True)))
    servers = pids()
    cpu0, started = cpu_seconds(servers), time.perf_counter()
    await asyncio.gather(*(worker(c, r, ops) for c, r in zip(clients, rnds, strict=True)))
    elapsed, used = time.perf_counter() - started, cpu_seconds(servers) - cpu0
    return SESSIONS * ops / elapsed, used / (SESSIONS * ops) * 1e6


async def imap_cells(tmp: Path, args: argparse.Namespace) -> dict[str, list[Cell]]:
    ours = imap.Ours(tmp, args.messages, 0)
    boxes: list[imap.DovecotBox] = []
    try:
        targets: dict[str, tuple[int, Pids]] = {
            "clustermail": (ours.port, lambda: [ours.proc.pid])}
        for fmt in args.formats:
            box = imap.DovecotBox(fmt)
            boxes.append(box)
            await box.fill(args.messages, SESSIONS)
            master = master_pid(box.server.root / "run")
            targets[f"dovecot-{fmt}"] = (box.port, functools.partial(children, master, "imap"))
        # One set of sessions per server for all rounds (Dovecot limits the connections
        # of one user from one address to ten, and a closed one may still count a while).
        sessions: dict[str, list[imap.Client]] = {}
        for name, (port, _) in targets.items():
            sessions[name] = [await imap.Client.connect(port) for _ in range(SESSIONS)]
            for c in sessions[name]:
                await c.cmd(b"SELECT INBOX")
        cells: dict[str, list[Cell]] = {name: [] for name in targets}
        for r in range(args.rounds):
            for name, (_, pids) in targets.items():
                cells[name].append(await imap_cell(sessions[name], pids, args.messages,
                                                   args.ops, 1000 * r))
                report(f"round {r + 1} IMAP FETCH BODY.PEEK[]", name, cells[name][-1])
        for clients in sessions.values():
            for c in clients:
                await c.close()
        return cells
    finally:
        for box in boxes:
            box.stop()
        ours.stop()


# --------------------------------------------------------------------------- run


def report(what: str, name: str, cell: Cell) -> None:
    print(f"{what} {name:16} {cell[0]:8.0f} ops/s {cell[1]:7.1f} µs CPU/op "
          f"(load {os.getloadavg()[0]:.1f})", flush=True)


def summary(cells: dict[str, list[Cell]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, rounds in cells.items():
        out[name] = {
            "ops_per_s": round(statistics.median(c[0] for c in rounds)),
            "cpu_us_per_op": round(statistics.median(c[1] for c in rounds), 1),
            "rounds": [[round(c[0]), round(c[1], 1)] for c in rounds],
        }
    ours = out.get("clustermail")
    for name, cell in out.items():
        if ours is not None and name != "clustermail":
            # None where a side measured nothing: CPU time counts in clock ticks (10 ms),
            # which a short run may not reach.
            cell["ours_rate_ratio"] = _ratio(ours["ops_per_s"], cell["ops_per_s"])
            cell["ours_cpu_ratio"] = _ratio(cell["cpu_us_per_op"], ours["cpu_us_per_op"])
    return out


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def formats(text: str) -> list[str]:
    chosen = [f for f in text.split(",") if f]
    unknown = [f for f in chosen if f not in imap.FORMATS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown format {unknown[0]!r}; choose from {', '.join(imap.FORMATS)}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=imap.positive, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per POP3 round")
    parser.add_argument("--messages", type=imap.positive, default=10_000, help="IMAP INBOX")
    parser.add_argument("--ops", type=imap.positive, default=500, help="per IMAP session")
    parser.add_argument("--formats", type=formats, default=["maildir", "sdbox"],
                        help="Dovecot's (POP3 runs against maildir when listed)")
    parser.add_argument("--pop3-placement", choices=mail.PLACEMENTS, default="shared",
                        help="POP3 client and server on one CPU (default), two, or any")
    parser.add_argument("--only", choices=("pop3", "imap"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-body-reads-"))
    for folder in (tmp, tmp / "pop3", tmp / "imap"):
        folder.mkdir(exist_ok=True)
        os.chmod(folder, 0o755)  # Dovecot's processes reach their mail under here
    results: dict[str, Any] = {}
    if args.only != "imap":
        results["pop3_retr"] = summary(pop3_cells(tmp / "pop3", args))
    if args.only != "pop3":
        results["imap_fetch_body_peek"] = summary(asyncio.run(imap_cells(tmp / "imap", args)))
    results["meta"] = {
        "rounds": args.rounds, "seconds": args.seconds, "messages": args.messages,
        "ops": args.ops,
        "pop3_placement": args.pop3_placement, "sessions": SESSIONS, "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True, cwd=Path(__file__).parent).stdout.strip(),
        "python": sys.version.split()[0],
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "meta"}, indent=1))


if __name__ == "__main__":
    main()
