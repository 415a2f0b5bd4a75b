"""The cold first FETCH 1:* (FLAGS ENVELOPE), by the servers' CPU time as well as the clock.

    python -m bench.imap_fetch_cold [--messages 10000] [--runs 3] [--formats mdbox]

bench/imap.py's cold row is one wall-clock sample on a shared machine. This measures
the same request ``--runs`` times, each time on a freshly started server: ours
(bench/imap.Ours on a newly prepared database) and Dovecot with each of ``--formats``
(filled by APPEND and restarted for each run, as bench/imap.DovecotBox does). A run is
one session: LOGIN, SELECT INBOX, then the measured FETCH 1:* (FLAGS ENVELOPE) and a
second, warm one. For each it records the wall time, the CPU time (user + system, from
/proc) the server's processes spent on it (ours: its one process; Dovecot: every
process under its master), and for ours the growth of its resident memory. Dovecot is
measured once more after a restart: its cache file then holds the ENVELOPEs that the
first FETCH asked for (ours keeps nothing rendered across a restart). Results go to
bench/results/imap_fetch_cold.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.imap import FORMATS, RESULTS, Client, DovecotBox, Ours, formats, positive
from bench.machine import loadavg
from bench.proc_cpu import tree_cpu

COMMAND = b"FETCH 1:* (FLAGS ENVELOPE)"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def one_run(port: int, pid: int, memory: bool) -> dict[str, float]:
    client = await Client.connect(port)
    await client.cmd(b"SELECT INBOX")
    out: dict[str, float] = {}
    rss = rss_mb(pid) if memory else 0.0
    for name in ("cold", "warm"):
        cpu, started = tree_cpu(pid), time.perf_counter()
        await client.cmd(COMMAND)
        out[f"{name}_s"] = time.perf_counter() - started
        out[f"{name}_cpu_s"] = tree_cpu(pid) - cpu
    if memory:
        out["rss_growth_mb"] = rss_mb(pid) - rss
    await client.close()
    return out


def master_pid(box: DovecotBox) -> int:
    return int((box.server.root / "run" / "master.pid").read_text().strip())


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"params": {"messages": args.messages, "runs": args.runs}}
    runs: list[dict[str, float]] = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            ours = Ours(Path(tmp), args.messages, 0)
            try:
                runs.append(await one_run(ours.port, ours.proc.pid, memory=True) | {
                    "load": loadavg()[0]
                })  # fmt: skip
            finally:
                ours.stop()
    results["clustermail"] = {"runs": runs, "median": summary(runs)}
    for fmt in args.formats:
        cold: list[dict[str, float]] = []
        again: list[dict[str, float]] = []
        for _ in range(args.runs):
            # A new box each run: Dovecot starts caching ENVELOPE in its cache file once a
            # client asked for it, so only its first FETCH after the fill is cold.
            box = DovecotBox(fmt)
            try:
                await box.fill(args.messages, 10)
                cold.append(await one_run(box.port, master_pid(box), memory=False))
                cold[-1]["load"] = loadavg()[0]
                await asyncio.to_thread(box.server.stop)
                await asyncio.to_thread(box.server.start)
                again.append(await one_run(box.port, master_pid(box), memory=False))
                again[-1]["load"] = loadavg()[0]
            finally:
                box.stop()
        results[f"dovecot-{fmt}"] = {"runs": cold, "median": summary(cold)}
        results[f"dovecot-{fmt}, restarted after it"] = {"runs": again, "median": summary(again)}
    return results


def report(results: dict[str, Any]) -> str:
    lines = [
        "| server | cold FETCH (s) | its server CPU (s) | warm FETCH (s) | its server CPU (s) |",
        "|---|---|---|---|---|",
    ]
    for name, cell in results.items():
        if name == "params":
            continue
        m = cell["median"]
        lines.append(
            f"| {name} | {m['cold_s']:.3f} | {m['cold_cpu_s']:.3f} | {m['warm_s']:.3f} "
            f"| {m['warm_cpu_s']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=positive, default=10_000)
    parser.add_argument("--runs", type=positive, default=3)
    parser.add_argument(
        "--formats", type=formats, default=["mdbox"],
        help=f"Dovecot's formats to compare with, comma-separated, among {', '.join(FORMATS)}",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS / "imap_fetch_cold.json")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))


if __name__ == "__main__":
    main()
