"""The WAL under reads and writes at once: does it still restart?

    python -m bench.wal_readers [--seconds 8] [--deliverers 10] [--readers 2] [--runs 2]

Ten threads deliver ~40 KB messages into one mounted mailbox database while reader
threads call ``fetch_raw`` without pause; the WAL file's largest size and the number of
WAL restarts seen (its header's checkpoint sequence number, sampled every 10 ms) say
whether checkpoints still let the WAL start over. Readers keep their snapshot between
two commits (``mail/store/readers.py``): a reader holding one from before a checkpoint,
or from before the last commit, stops the WAL from restarting, so this is the case to
watch. Compare versions by running this with ``PYTHONPATH=<other tree>/src``. Writes
bench/results/wal-readers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.machine import loadavg
from clustermail.mail.store import MailboxDatabase

RESULTS = Path(__file__).parent / "results" / "wal-readers.json"
USER = "u1@bench.test"


def message(n: int) -> bytes:
    head = f"From: a@bench.test\r\nTo: {USER}\r\nSubject: wal {n}\r\n\r\n".encode()
    return head + b"The quick brown fox jumps over the lazy dog, again and again.\r\n" * 640


def one_run(seconds: float, deliverers: int, readers: int) -> dict[str, Any]:
    path = Path(tempfile.mkdtemp(prefix="bench-wal-")) / "db.sqlite"
    wal = Path(f"{path}-wal")
    db = MailboxDatabase(path)
    db.mount(1)
    try:
        db.create_mailbox_sync(USER)
        db.deliver_sync(message(0), [USER])
        stop = time.monotonic() + seconds
        delivered = [0] * deliverers
        read = [0] * readers

        def deliver(i: int) -> None:
            while time.monotonic() < stop:
                db.deliver_sync(message(delivered[i]), [USER])
                delivered[i] += 1

        def reader(i: int) -> None:
            while time.monotonic() < stop:
                db.fetch_raw(USER, "INBOX", 1)
                read[i] += 1

        threads = [threading.Thread(target=deliver, args=(i,)) for i in range(deliverers)]
        threads += [threading.Thread(target=reader, args=(i,)) for i in range(readers)]
        largest, sequences = 0, set()
        before = loadavg()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            largest = max(largest, wal.stat().st_size)
            with wal.open("rb") as f:
                header = f.read(16)
            if len(header) == 16:
                sequences.add(struct.unpack(">I", header[12:16])[0])
            time.sleep(0.01)
        for t in threads:
            t.join(seconds + 30)
        return {"deliveries_per_s": round(sum(delivered) / seconds),
                "reads_per_s": round(sum(read) / seconds),
                "largest_wal_mb": round(largest / 1e6, 1),
                "restarts_seen": len(sequences) - 1,
                "load": [before, loadavg()]}
    finally:
        db.dismount()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        os.rmdir(path.parent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--deliverers", type=int, default=10)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    runs = []
    for r in range(args.runs):
        result = one_run(args.seconds, args.deliverers, args.readers)
        print(f"run {r + 1}: {result}", flush=True)
        runs.append(result)
    RESULTS.write_text(json.dumps({"settings": vars(args), "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
