"""The fault campaign: random faults against a real cluster under mail load, checked.

    python -m bench.campaign --runs N --seed S [--backend sqlite|etcd|both]

A real 4-node cluster (node agents, resource hosts, mail1-3 with SMTP, IMAP4 and
POP3 on loopback) on the embedded store or on a 3-member etcd cluster, with an
SMTP sender (``--rate`` messages per second) and an IMAP reader on each virtual
server. Each run injects one fault, or two at random moments (see
``bench/campaign/faults.py``), waits until every virtual server that can run
serves mail again, repairs the cluster (restarts the dead nodes, clears
failures), and checks:

* every message that got a 250 is in its mailbox, exactly once (read over IMAP);
  duplicates and refused-yet-delivered messages are counted apart;
* no two resource hosts had one virtual server's disk at the same time (the disk's
  audit trail of mounts, with fencing epochs and CLOCK_MONOTONIC, and the exits of
  the hosts seen through pidfds);
* the time to recover: from the fault until the last gap in a client's
  acknowledgements ended, against the bound TTL + host timeout + 5 s of start
  (+ the stall, when the whole store was frozen).

``--runs`` is per backend. Results go to ``--out`` (rewritten after every run) and
a table for docs/performance.md to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.campaign import report
from bench.campaign.faults import (
    FAILBACK_NODE,
    FAILBACK_VS,
    KINDS,
    SINGLE_ONLY,
    Injected,
    inject,
)
from bench.campaign.session import RepairFailed, Session

RESULTS = Path(__file__).resolve().parents[1] / "results"
#: Seconds allowed for a virtual server's start in the recovery bound.
START_ALLOWANCE = 5.0
BACKENDS = ("sqlite", "etcd")


def choose(rng: random.Random, kinds: list[str], two_share: float) -> list[str]:
    """One fault, or (with probability ``two_share``) two that can be combined."""
    simple = [k for k in kinds if k not in SINGLE_ONLY]
    if len(simple) >= 2 and rng.random() < two_share:
        first = rng.choice(simple)
        # Two stalls of the store at once are one long stall.
        second = rng.choice([k for k in simple if k != first and
                             not (k.startswith("stop_store") and first.startswith("stop_store"))])
        return [first, second]
    return [rng.choice(kinds)]


async def one_run(session: Session, rng: random.Random, chosen: list[str], index: int,
                  recovery_limit: float, evidence: Path) -> dict[str, Any]:
    world = session.world
    assert world is not None
    if "restart_racing_failback" in chosen and not await session.failback_home():
        log = session.log
        log(f"  could not put {FAILBACK_VS} on {FAILBACK_NODE} first")
    run_start = time.monotonic()
    await asyncio.sleep(rng.uniform(0.3, 1.5))
    tasks = [asyncio.create_task(inject(world, chosen[0]))]
    if len(chosen) > 1:
        await asyncio.sleep(rng.uniform(0.0, 2.0))
        tasks.append(asyncio.create_task(inject(world, chosen[1])))
    injected: list[Injected] = list(await asyncio.gather(*tasks))
    t0 = min(f.at for f in injected)
    effects_end = max(f.ended for f in injected)
    # While the whole store is frozen nobody can take anything over: the stall adds.
    stall = sum(f.duration for f in injected if f.kind in ("stop_store_short",
                                                           "stop_store_long"))
    bound = session.ttl + session.host_timeout + START_ALLOWANCE + stall
    settled = await session.wait_recovered(effects_end, effects_end + recovery_limit)
    recovery = None if settled is None else round(session.outage(t0, settled), 3)
    record: dict[str, Any] = {
        "run": index, "backend": session.backend,
        "faults": [f.to_dict(run_start) for f in injected],
        "recovery_s": recovery, "bound_s": round(bound, 3),
        "within_bound": recovery is not None and recovery <= bound,
        "left_failed": 0, "lost": 0, "duplicates": 0, "phantoms": 0, "acked": 0,
    }
    if settled is not None:
        assert session.cluster is not None
        status = await session.cluster.status()
        record["left_failed"] = sum(1 for v in status["virtual_servers"]
                                    if v["state"] != "online")
    try:
        await session.repair()
    except RepairFailed as exc:
        record["repair_failed"] = str(exc)
    try:
        # Even after a failed repair: every acknowledged message is checked once.
        record |= await session.check_mail()
    except RepairFailed as exc:
        record["unchecked"] = str(exc)
    record["overlaps"] = [o.to_dict() for o in session.new_overlaps()]
    if record["overlaps"] or record["lost"] or "repair_failed" in record or \
            "unchecked" in record or not record["within_bound"]:
        folder = evidence / f"{session.backend}-run-{index}"
        await session.keep_evidence(folder)
        record["evidence"] = str(folder)
    return record


def describe(record: dict[str, Any]) -> str:
    faults = " + ".join(f"{f['kind']}({f['target']}" + (f", {f['duration']:g} s" if
                        f.get("duration") else "") + ")" for f in record["faults"])
    rec = record["recovery_s"]
    how = "NOT RECOVERED" if rec is None else f"recovered in {rec:.2f} s"
    return (f"{record['backend']} run {record['run']}: {faults}: {how} (bound "
            f"{record['bound_s']:g} s); lost {record['lost']}, duplicates "
            f"{record['duplicates']}, overlaps {len(record['overlaps'])}"
            + (f"; REPAIR FAILED: {record['repair_failed']}" if "repair_failed" in record
               else "")
            + (f"; MAIL NOT CHECKED: {record['unchecked']}" if "unchecked" in record else ""))


async def campaign(args: argparse.Namespace, log: Callable[[str], None],
                   save: Callable[[list[dict[str, Any]]], None],
                   runs: list[dict[str, Any]]) -> None:
    """Appends each run's record to ``runs`` and saves them all after each."""
    rng = random.Random(args.seed)
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    for backend in backends:
        kinds = [k for k in args.kinds if backend in KINDS[k]]
        done = 0
        starts_failed = 0
        while done < args.runs:
            with tempfile.TemporaryDirectory(prefix=f"campaign-{backend}-") as tmp:
                session = Session(backend, Path(tmp), args.rate, log, rng.randrange(2**31))
                try:
                    log(f"{backend}: starting a cluster (runs {done + 1}-"
                        f"{min(args.runs, done + args.runs_per_cluster)})…")
                    try:
                        await session.start()
                    except (RepairFailed, AssertionError, OSError, RuntimeError) as exc:
                        starts_failed += 1
                        log(f"{backend}: the cluster did not start: {exc}")
                        if starts_failed >= 3:
                            raise
                        continue
                    for _ in range(args.runs_per_cluster):
                        if done >= args.runs:
                            break
                        done += 1
                        record = await one_run(session, rng, choose(rng, kinds, args.two),
                                               done, args.recovery_limit, args.evidence)
                        runs.append(record)
                        log(describe(record))
                        save(runs)
                        if "repair_failed" in record:
                            break  # a fresh cluster for the next run
                finally:
                    await session.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.campaign", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs per backend (default 20)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backend", choices=["sqlite", "etcd", "both"], default="both")
    parser.add_argument("--rate", type=float, default=8.0,
                        help="messages per second sent to each virtual server (default 8)")
    parser.add_argument("--two", type=float, default=0.3,
                        help="share of runs with two faults (default 0.3)")
    parser.add_argument("--kinds", type=lambda s: s.split(","), default=sorted(KINDS),
                        help=f"fault kinds, comma-separated (default all: {','.join(KINDS)})")
    parser.add_argument("--runs-per-cluster", type=int, default=25,
                        help="runs before a fresh cluster is started (default 25)")
    parser.add_argument("--recovery-limit", type=float, default=60.0,
                        help="seconds after a fault before a run counts as not recovered")
    parser.add_argument("--out", type=Path, default=RESULTS / "campaign.json")
    parser.add_argument("--evidence", type=Path, default=Path("campaign-evidence"),
                        help="where the audit trails and logs of a run that found a problem "
                             "are kept (default ./campaign-evidence)")
    args = parser.parse_args(argv)
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown or args.runs < 1 or args.rate <= 0 or args.runs_per_cluster < 1:
        parser.error(f"unknown fault kinds: {', '.join(unknown)}" if unknown else
                     "--runs, --rate and --runs-per-cluster must be positive")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.time()
    meta = {
        "benchmark": "campaign",
        "command": "python -m bench.campaign " + " ".join(argv if argv is not None
                                                          else sys.argv[1:]),
        "seed": args.seed, "runs_per_backend": args.runs, "rate_per_vs": args.rate,
        "bound": "ttl + host_timeout + 5 s start (+ the stall of a frozen store)",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
    }

    def save(runs: list[dict[str, Any]]) -> None:
        doc = report.document({**meta, "elapsed_s": round(time.time() - started)}, runs)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1) + "\n")

    runs: list[dict[str, Any]] = []

    async def until_stopped() -> None:
        # Ctrl-C or SIGTERM: the runs so far are kept and every cluster is torn down.
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
        await campaign(args, log, save, runs)

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(until_stopped())
    save(runs)
    doc = report.document(meta, runs)
    print(report.markdown(doc))
    return 1 if doc["lost"] or doc["overlaps"] else 0


if __name__ == "__main__":
    sys.exit(main())
