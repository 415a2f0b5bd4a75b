"""Backup and transaction-log benchmark.

    python -m bench.backup [--size-mb 50] [--seconds 2] [--rounds 3]

Side by side, in one run on this machine:
- durable deliveries/s with transaction logs on vs off (same store code, interleaved rounds,
  median round; target: on >= 0.8 x off);
- a full online backup of a store of ``--size-mb`` vs ``cp`` (plus fsync) of the same file
  vs SQLite's own ``.backup`` (the sqlite3 shell);
- delivery latency p99 while backups run vs without (target: <= 2 x): in a thread of the
  delivering process, in a bare process beside it, and as the product runs an owner's
  backup (a child process at nice +10 reporting JSON lines to the delivering process's
  event loop, :class:`clustermail.mail.backup.process.ChildBackup`); unpaced and at
  50 MB/s, the default ``backup_max_rate``, whose child window is the product's default;
- restore + roll-forward: seconds per GB of backup image, and per 10,000 logged changes.

Writes bench/results/backup.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.store import USERS, template, unique
from bench.store import delivery_cell as _cell
from clustermail.mail.backup import create_backup, restore_database
from clustermail.mail.backup.process import DEFAULT_MAX_RATE, ChildBackup
from clustermail.mail.store import MailboxDatabase, MailStore
from clustermail.mail.store.translog.manifest import StorageGroupLogs

RESULTS = Path(__file__).with_name("results") / "backup.json"
SIZES = {"2KB": 2_000, "20KB": 20_000}
LANES = (1, 10)


# --------------------------------------------------------------------------- logs on/off


def delivery_rate(root: Path, logs: bool, size: int, lanes: int, seconds: float) -> float:
    work = Path(tempfile.mkdtemp(dir=root))
    group = StorageGroupLogs(work / "_logs" / "SG1", "SG1") if logs else None
    db = MailboxDatabase(work / "DB1.sqlite", name="DB1", logs=group)
    db.mount(1)
    for user in USERS:
        db.create_mailbox_sync(user)
    tpl = template(size)
    asyncio.run(_cell(db, tpl, lanes, 0.2))
    start = time.perf_counter()
    done = asyncio.run(_cell(db, tpl, lanes, seconds))
    rate = done / (time.perf_counter() - start)
    db.dismount()
    shutil.rmtree(work)
    return rate


def logs_on_off(root: Path, seconds: float, rounds: int) -> dict[str, Any]:
    cells: dict[str, dict[str, list[float]]] = {}
    for _ in range(rounds):
        for label, size in SIZES.items():
            for lanes in LANES:
                key = f"{label} x{lanes}"
                for logs in (False, True):
                    rate = delivery_rate(root, logs, size, lanes, seconds)
                    cells.setdefault(key, {}).setdefault("on" if logs else "off", []).append(rate)
    out = {}
    for key, runs in cells.items():
        on, off = statistics.median(runs["on"]), statistics.median(runs["off"])
        out[key] = {"logs_off": round(off, 1), "logs_on": round(on, 1),
                    "ratio": round(on / off, 3)}
    return out


# --------------------------------------------------------------------------- a big store


_WORDS = [f"{a}{b}{c}" for a in "bcdfghklmnprstvz" for b in "aeiouy"
          for c in ("", "n", "r", "st", "ll", "ck", "m", "th")]


async def _fill(db: MailboxDatabase, target_bytes: int) -> int:
    """Messages of ~20 KB of text made of random words, so that bodies differ and compress
    about as real mail does (a few times), not 100x as a repeated line would."""
    rng = random.Random(1)
    head = template(0)

    def body(n: int) -> bytes:
        words = rng.choices(_WORDS, k=3300)
        text = "\r\n".join(" ".join(words[i : i + 12]) for i in range(0, len(words), 12))
        return head + text.encode() + b"\r\n"

    # As many messages as make the file ``target_bytes`` (a body is ~17 KB, not 20).
    count = max(1, int(target_bytes / (len(body(0)) * 1.03)))
    rng.seed(1)

    async def lane(i: int) -> None:
        for n in range(i, count, 10):
            await db.deliver(unique(body(n), i, n), [USERS[n % len(USERS)]])

    await asyncio.gather(*(lane(i) for i in range(10)))
    return count


def build_store(root: Path, size_mb: int) -> MailStore:
    store = MailStore(root)
    store.mount(1)
    db = store.database("SG1", "DB1")
    for user in USERS:
        db.create_mailbox_sync(user)
    asyncio.run(_fill(db, size_mb * 1_000_000))
    return store


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def copy_rates(store: MailStore, work: Path) -> dict[str, Any]:
    db = store.database("SG1", "DB1")
    size = db.path.stat().st_size

    def cp() -> None:
        target = work / "cp.sqlite"
        subprocess.run(["cp", str(db.path), str(target)], check=True)
        fd = os.open(target, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        target.unlink()

    def sqlite_backup() -> None:
        target = work / "dot-backup.sqlite"
        subprocess.run(["sqlite3", str(db.path), f".backup '{target}'"], check=True)
        target.unlink()

    def ours(level: int) -> None:
        backups = work / "sets"
        create_backup(store.disk, backups, virtual_server="bench", truncate_logs=False,
                      level=level)
        shutil.rmtree(backups)

    out: dict[str, Any] = {"database_mb": round(size / 1e6, 1)}
    for name, fn in (("cp+fsync", cp), ("sqlite3 .backup", sqlite_backup),
                     ("clustermail backup (zstd 3, default)", lambda: ours(3)),
                     ("clustermail backup (zstd 1)", lambda: ours(1))):
        seconds = min(timed(fn) for _ in range(2))
        out[name] = {"seconds": round(seconds, 3), "mb_per_s": round(size / 1e6 / seconds, 1)}
    backups = work / "sets"
    full = create_backup(store.disk, backups, virtual_server="bench", truncate_logs=False)
    stored = sum(f["size"] for f in full.files.values())
    out["compressed_ratio"] = round(size / stored, 2)
    shutil.rmtree(backups)
    return out


# --------------------------------------------------------------------------- p99


async def _deliver_for(db: MailboxDatabase, seconds: float) -> list[float]:
    tpl = template(2_000)
    lat: list[float] = []
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        await db.deliver(unique(tpl, 99, n), [USERS[n % len(USERS)]])
        lat.append(time.perf_counter() - t)
        n += 1
    return lat


def _latencies(db: MailboxDatabase, seconds: float) -> list[float]:
    return asyncio.run(_deliver_for(db, seconds))


def p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99)] * 1000


_LOOP = """
import shutil, sys
from pathlib import Path
from clustermail.mail.backup import create_backup
disk, target, rate = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]) or None
while True:
    create_backup(disk, target, virtual_server="bench", truncate_logs=False, max_rate=rate)
    shutil.rmtree(target)
"""


def latency_during_backup(store: MailStore, work: Path, seconds: float,
                          max_rate: float | None = None, rounds: int = 1) -> dict[str, Any]:
    """Backups back to back, in a thread of the delivering process (as the resource host
    ran them before), in a bare process of their own (as a command beside it) and in the
    owner's child process (as the resource host runs them now); the four windows
    interleaved ``rounds`` times, so that a change of the machine's load falls on all."""
    db = store.database("SG1", "DB1")
    quiet: list[float] = []
    in_thread: list[float] = []
    in_process: list[float] = []
    in_child: list[float] = []
    runs = [0, 0, 0]  # backups finished in thread and child windows; bytes children copied
    for _ in range(rounds):
        quiet += _latencies(db, seconds)
        in_thread += _thread_window(store, db, work, seconds, max_rate, runs)
        in_process += _process_window(store, db, work, seconds, max_rate)
        in_child += _child_window(store, db, work, seconds, max_rate, runs)
    base = p99(quiet)
    return {"max_rate_mb_s": max_rate and max_rate / 1e6, "p99_ms_without": round(base, 2),
            "p99_ms_backup_in_thread": round(p99(in_thread), 2),
            "ratio_thread": round(p99(in_thread) / base, 2),
            "p99_ms_backup_in_process": round(p99(in_process), 2),
            "ratio_process": round(p99(in_process) / base, 2),
            "p99_ms_backup_in_child": round(p99(in_child), 2),
            "ratio_child": round(p99(in_child) / base, 2),
            "child_is_product_default": max_rate == DEFAULT_MAX_RATE,
            "backups_in_thread": runs[0], "backups_in_child": runs[1],
            "mb_copied_in_child": round(runs[2] / 1e6, 1), "rounds": rounds,
            "deliveries": [len(quiet), len(in_thread), len(in_process), len(in_child)]}


def _thread_window(store: MailStore, db: MailboxDatabase, work: Path, seconds: float,
                   max_rate: float | None, runs: list[int]) -> list[float]:
    stop = threading.Event()

    def backups() -> None:
        while not stop.is_set():
            target = work / "p99-sets"
            create_backup(store.disk, target, virtual_server="bench", truncate_logs=False,
                          max_rate=max_rate)
            shutil.rmtree(target)
            runs[0] += 1

    thread = threading.Thread(target=backups)
    thread.start()
    try:
        return _latencies(db, seconds)
    finally:
        stop.set()
        thread.join()


def _process_window(store: MailStore, db: MailboxDatabase, work: Path, seconds: float,
                    max_rate: float | None) -> list[float]:
    target = work / "p99-process-sets"
    child = subprocess.Popen([sys.executable, "-c", _LOOP, str(store.disk), str(target),
                              str(max_rate or 0)])
    try:
        time.sleep(0.3)  # it has started copying
        return _latencies(db, seconds)
    finally:
        child.kill()
        child.wait()
        shutil.rmtree(target, ignore_errors=True)  # a set it was writing when killed


def _child_window(store: MailStore, db: MailboxDatabase, work: Path, seconds: float,
                  max_rate: float | None, runs: list[int]) -> list[float]:
    """The owner's path: :class:`ChildBackup` started from the delivering event loop, its
    progress lines read there, back to back; cancelled at the end (SIGTERM, reaped)."""
    target = work / "p99-child-sets"
    child = ChildBackup(max_rate=max_rate)

    copied = [0]

    def progress(what: str, done: int, total: int) -> None:
        copied[0] = done

    async def backups() -> None:
        while True:
            await child(store.disk, target, virtual_server="bench", incremental=False,
                        storage_groups=None, queue=None, epoch=None, progress=progress)
            shutil.rmtree(target)
            runs[1] += 1
            runs[2] += copied[0]
            copied[0] = 0

    async def window() -> list[float]:
        task = asyncio.create_task(backups())
        try:
            await asyncio.sleep(0.3)  # it has started copying
            return await _deliver_for(db, seconds)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    try:
        return asyncio.run(window())
    finally:
        runs[2] += copied[0]  # of the backup cut short at the window's end
        shutil.rmtree(target, ignore_errors=True)


# --------------------------------------------------------------------------- restore


def restore_costs(store: MailStore, work: Path, changes: int) -> dict[str, Any]:
    db = store.database("SG1", "DB1")
    backups = work / "restore-sets"
    full = create_backup(store.disk, backups, virtual_server="bench", truncate_logs=False)
    image = full.databases[0].size
    tpl = template(2_000)

    async def fill() -> None:
        async def lane(i: int) -> None:
            for n in range(i, changes, 10):
                await db.deliver(unique(tpl, 7, n), [USERS[n % len(USERS)]])

        await asyncio.gather(*(lane(i) for i in range(10)))

    asyncio.run(fill())
    store.dismount()
    plain = restore_database(store.disk, backups, "SG1", "DB1", from_id=full.id,
                             recovery=True, roll_forward=False)
    rolled = restore_database(store.disk, backups, "SG1", "DB1", from_id=full.id,
                              recovery=True)
    per_gb = plain.seconds / (image / 1e9)
    forward = rolled.roll_forward_seconds  # the replay alone (a difference is all noise)
    return {"image_mb": round(image / 1e6, 1), "restore_seconds": round(plain.seconds, 3),
            "restore_seconds_per_gb": round(per_gb, 2),
            "logged_changes": rolled.txn - plain.txn, "records": rolled.rolled_forward,
            "roll_forward_seconds": round(forward, 3),
            "deliveries_logged": changes,
            "roll_forward_seconds_per_10k_changes": round(
                forward / max(1, rolled.txn - plain.txn) * 10_000, 3),
            "roll_forward_seconds_per_10k_deliveries": round(forward / changes * 10_000, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=50, help="store size for the copy "
                        "tables (1000 for the real table)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per delivery cell")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--changes", type=int, default=10_000, help="logged changes to "
                        "roll forward")
    args = parser.parse_args()
    if args.size_mb < 1 or args.seconds <= 0 or args.rounds < 1 or args.changes < 1:
        parser.error("--size-mb, --seconds, --rounds and --changes must be positive")
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as tmp:
        root = Path(tmp)
        result: dict[str, Any] = {"command": "python -m bench.backup " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())}
        result["delivery_logs_on_vs_off"] = logs_on_off(root, args.seconds, args.rounds)
        store = build_store(root / "disk", args.size_mb)
        result["backup_vs_copy"] = copy_rates(store, root)
        result["delivery_p99_during_backup"] = [
            latency_during_backup(store, root, max(args.seconds, 2.0), rate, args.rounds)
            for rate in (None, 50e6)]
        result["restore"] = restore_costs(store, root, args.changes)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
