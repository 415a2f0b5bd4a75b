"""Mail store benchmark: durable deliveries/s against a Maildir+fsync baseline, mount time
and folder listing time for 100 000 messages.

    python -m bench.store [--seconds 2] [--rounds 3] [--big 100000]

Writes bench/results/store.json and prints a table. Store and baseline cells run
interleaved in the same process, round by round; the median round is reported. Each
cell also gives each side's CPU per delivery and cores busy, and how much of the cell
the store's writer thread and its event loop spent on a CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.proc_cpu import thread_on_cpu
from clustermail.mail.store import MailboxDatabase

USERS = [f"user{i}@bench.test" for i in range(10)]
SIZES = {"2KB": 2_000, "20KB": 20_000, "200KB": 200_000}
CONCURRENCY = (1, 10)
RESULTS = Path(__file__).with_name("results") / "store.json"


def template(size: int) -> bytes:
    head = (
        b"From: Sender <sender@bench.test>\r\nTo: user@bench.test\r\nSubject: benchmark\r\n"
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def unique(tpl: bytes, lane: int, n: int) -> bytes:
    # Distinct bytes per delivery, so single-instance storage cannot dedupe the benchmark away.
    return b"Message-ID: <%d.%d.%d@bench.test>\r\n" % (lane, n, time.monotonic_ns()) + tpl


# --------------------------------------------------------------------------- the store


async def delivery_cell(db: MailboxDatabase, tpl: bytes, lanes: int, seconds: float) -> int:
    deadline = time.perf_counter() + seconds
    done = 0

    async def lane(i: int) -> None:
        nonlocal done
        n = 0
        while time.perf_counter() < deadline:
            await db.deliver(unique(tpl, i, n), [USERS[(i + n) % len(USERS)]])
            n += 1
            done += 1

    await asyncio.gather(*(lane(i) for i in range(lanes)))
    return done


def store_rate(root: Path, size: int, lanes: int, seconds: float) -> dict[str, float]:
    path = root / f"store-{size}-{lanes}.sqlite"
    db = MailboxDatabase(path)
    db.mount(1)
    for user in USERS:
        db.create_mailbox_sync(user)
    tpl = template(size)
    asyncio.run(delivery_cell(db, tpl, lanes, 0.2))  # warm-up
    # The two threads a delivery passes through: the event loop (this thread, which
    # asyncio.run uses) and the database's one writer (its own name).
    threads = [threading.main_thread().native_id, next(
        (t.native_id for t in threading.enumerate() if t.name == f"writer:{path.name}"), None)]
    before = db.stats.commits, db.stats.jobs
    on_cpu = [thread_on_cpu(tid) for tid in threads]  # a writer not found: 0 throughout
    start, cpu = time.perf_counter(), time.process_time()
    done = asyncio.run(delivery_cell(db, tpl, lanes, seconds))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    loop_busy, writer_busy = (
        (thread_on_cpu(tid) - was) / elapsed
        for tid, was in zip(threads, on_cpu, strict=True))
    commits, jobs = db.stats.commits - before[0], db.stats.jobs - before[1]
    db.dismount()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return {"rate": done / elapsed, "per_commit": jobs / max(1, commits),
            "loop_busy": loop_busy, "writer_busy": writer_busy} | spent(cpu, elapsed, done)


def spent(cpu: float, elapsed: float, done: int) -> dict[str, float]:
    """The process's CPU (every thread, user + system) per delivery, and how many cores
    it kept busy: what bounds a cell that is not waiting on the disk."""
    return {"cpu_us": cpu / max(1, done) * 1e6, "cores": cpu / elapsed}


# --------------------------------------------------------------------------- the baseline


def maildir_deliver(root: Path, user: str, msg: bytes, name: str) -> None:
    """What Dovecot's LDA does: write to tmp/, fsync, rename into new/, fsync new/."""
    tmp = root / user / "tmp" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(msg)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    new_dir = root / user / "new"
    os.rename(tmp, new_dir / name)
    dfd = os.open(new_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def maildir_rate(root: Path, size: int, lanes: int, seconds: float) -> dict[str, float]:
    base = root / f"maildir-{size}-{lanes}"
    for user in USERS:
        for sub in ("tmp", "new", "cur"):
            (base / user / sub).mkdir(parents=True)
    tpl = template(size)
    counts = [0] * lanes
    deadline = time.perf_counter() + seconds

    def lane(i: int) -> None:
        n = 0
        while time.perf_counter() < deadline:
            user = USERS[(i + n) % len(USERS)]
            maildir_deliver(base, user, unique(tpl, i, n), f"{time.time_ns()}.{i}_{n}.bench")
            n += 1
        counts[i] = n

    start, cpu = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=lane, args=(i,)) for i in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    shutil.rmtree(base)
    return {"rate": sum(counts) / elapsed} | spent(cpu, elapsed, sum(counts))


# --------------------------------------------------------------------------- 100 000 messages


async def _fill(db: MailboxDatabase, count: int) -> None:
    tpl = template(2_000)
    next_n = 0

    async def lane(i: int) -> None:
        nonlocal next_n
        while next_n < count:
            n = next_n
            next_n += 1
            await db.deliver(unique(tpl, i, n), [USERS[0]])

    await asyncio.gather(*(lane(i) for i in range(64)))


def big_folder(root: Path, count: int) -> dict[str, float]:
    path = root / "big.sqlite"
    db = MailboxDatabase(path)
    db.mount(1)
    db.create_mailbox_sync(USERS[0])
    started = time.perf_counter()
    asyncio.run(_fill(db, count))
    fill_seconds = time.perf_counter() - started
    # A copy taken while mounted is what a crashed owner leaves: the next mount recovers the WAL.
    crashed = root / "crashed.sqlite"
    shutil.copyfile(path, crashed)
    wal = Path(str(path) + "-wal")
    if wal.exists():
        shutil.copyfile(wal, Path(str(crashed) + "-wal"))
    db.dismount()

    def timed(fn: Callable[[], Any]) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    clean = MailboxDatabase(path)
    mount_clean = timed(lambda: clean.mount(2))
    list_cold = timed(lambda: clean.list_messages(USERS[0], "INBOX"))
    listing = clean.list_messages(USERS[0], "INBOX")
    assert len(listing) == count, len(listing)
    list_warm = statistics.median(
        timed(lambda: clean.list_messages(USERS[0], "INBOX")) for _ in range(10)
    )
    status = statistics.median(timed(lambda: clean.status(USERS[0], "INBOX")) for _ in range(5))
    clean.dismount()
    recovering = MailboxDatabase(crashed)
    info = recovering.mount(3)
    recovering.dismount()
    return {
        "messages": count,
        "fill_deliveries_per_s": count / fill_seconds,
        "mount_clean_ms": mount_clean * 1000,
        "mount_after_crash_ms": info.seconds * 1000,
        "mount_after_crash_unclean": float(info.unclean),
        "list_first_ms": list_cold * 1000,
        "list_ms": list_warm * 1000,
        "status_ms": status * 1000,
        "db_bytes": float(path.stat().st_size),
    }


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of one cell")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds (median reported)"
    )
    parser.add_argument("--big", type=int, default=100_000, help="messages in the big folder")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results (default {RESULTS})")
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    load_before = os.getloadavg()
    try:
        cells: list[dict[str, Any]] = []
        for label, size in SIZES.items():
            for lanes in CONCURRENCY:
                store, maildir, batch = [], [], []
                # "<side>_<what>": what each round's store or Maildir cell measured
                used: dict[str, list[float]] = {key: [] for key in (
                    "store_cpu_us", "store_cores", "store_loop_busy", "store_writer_busy",
                    "maildir_cpu_us", "maildir_cores")}
                load: list[list[float]] = []  # 1-minute load average before/after each round
                for _ in range(args.rounds):
                    before = round(os.getloadavg()[0], 2)
                    s = store_rate(root, size, lanes, args.seconds)
                    store.append(s["rate"])
                    batch.append(s["per_commit"])
                    m = maildir_rate(root, size, lanes, args.seconds)
                    maildir.append(m["rate"])
                    load.append([before, round(os.getloadavg()[0], 2)])
                    for key, values in used.items():
                        side, _, what = key.partition("_")
                        values.append((s if side == "store" else m)[what])
                cell: dict[str, Any] = {
                    "size": label,
                    "deliverers": lanes,
                    "store_per_s": statistics.median(store),
                    "maildir_per_s": statistics.median(maildir),
                    "deliveries_per_commit": statistics.median(batch),
                    "store_rounds": store,
                    "maildir_rounds": maildir,
                    "load": load,
                } | {key: statistics.median(values) for key, values in used.items()}
                cell["ratio"] = cell["store_per_s"] / cell["maildir_per_s"]
                cells.append(cell)
                print(
                    f"{label:>6} x{lanes:<3} store {cell['store_per_s']:8.0f}/s  "
                    f"maildir {cell['maildir_per_s']:8.0f}/s  ratio {cell['ratio']:.2f}  "
                    f"({cell['deliveries_per_commit']:.1f} per commit)  CPU per delivery "
                    f"{cell['store_cpu_us']:.0f} / {cell['maildir_cpu_us']:.0f} µs, cores "
                    f"{cell['store_cores']:.2f} / {cell['maildir_cores']:.2f}; store's "
                    f"writer thread on CPU {cell['store_writer_busy']:.0%}, event loop "
                    f"{cell['store_loop_busy']:.0%}",
                    flush=True,
                )
        big = big_folder(root, args.big)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "benchmark": "store",
        "machine": {"cpus": os.cpu_count(), "load_before": load_before,
                    "load_after": os.getloadavg()},
        "seconds_per_cell": args.seconds,
        "rounds": args.rounds,
        "deliveries": cells,
        "big_folder": big,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(
        "| size | deliverers | store/s | Maildir+fsync/s | ratio | per commit "
        "| CPU µs per delivery (store / Maildir) | cores busy (store / Maildir) "
        "| store's writer thread / event loop on CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for c in cells:
        print(
            f"| {c['size']} | {c['deliverers']} | {c['store_per_s']:.0f} "
            f"| {c['maildir_per_s']:.0f} | {c['ratio']:.2f}x | {c['deliveries_per_commit']:.1f} "
            f"| {c['store_cpu_us']:.0f} / {c['maildir_cpu_us']:.0f} "
            f"| {c['store_cores']:.2f} / {c['maildir_cores']:.2f} "
            f"| {c['store_writer_busy']:.0%} / {c['store_loop_busy']:.0%} |"
        )
    print()
    for key, value in big.items():
        print(f"{key}: {value:.1f}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
