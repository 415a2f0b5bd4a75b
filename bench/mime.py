"""MIME analysis cost per delivery: µs of CPU per ``analyze_with_json`` on the messages
the delivery benchmarks send.

    python -m bench.mime [--seconds 1] [--rounds 3] [--deliveries]

Messages: what ``smtp-source`` sends at 2 KB and 20 KB as our SMTP server stores it (a
Received field first), ``bench.store``'s 2 KB and 20 KB text, ``bench.imap``'s
multipart/alternative, and a mail with a PDF attachment. CPU time (process_time) per
analysis, next to the general implementation the analysis had before its fast paths
(``tests/mail/store/mime_reference.py``, kept for the differential tests); the median
round is printed.

``--deliveries`` runs ``bench.store``'s delivery cells (2 KB and 20 KB, 1 and 10
deliverers) with the store's analysis swapped between the two, interleaved round by
round in one process: deliveries/s and CPU µs per delivery (all threads: the event
loop, the writer, SQLite).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import imap, store
from clustermail.mail.smtp import policy
from clustermail.mail.store import MailboxDatabase, mime
from tests.mail.store import mime_reference

Analyze = Callable[[bytes], object]
VARIANTS: dict[str, Analyze] = {
    "before": mime_reference.analyze_with_json,
    "after": mime.analyze_with_json,
}


def smtp_source(size: int) -> bytes:
    """What ``smtp-source -l size`` sends, behind the Received field our server adds."""
    received = policy.received_header(
        helo="localhost", client_address="127.0.0.1", hostname="mail.bench.test",
        protocol="ESMTP", queue_id="4f2c8a1b9e", recipient="user@bench.test", now=1.7e9,
    )  # fmt: skip
    head = (
        b"From: <sender@bench.test>\r\nTo: <user@bench.test>\r\n"
        b"Date: Sun,  6 Dec 2026 07:03:22 +0000 (UTC)\r\n"
        b"Message-Id: <1c21.0003.0000@vm>\r\n\r\n"
    )
    lines, n, total = [], 1, len(received) + len(head)
    while total < size:
        line = (str(n).encode() + b"X" * 78)[:78] + b"\r\n"
        lines.append(line)
        total += len(line)
        n += 1
    return received + head + b"".join(lines)


def attachment() -> bytes:
    pdf = base64.encodebytes(bytes(range(256)) * 40).replace(b"\n", b"\r\n")
    return (
        b"From: Alice Example <alice@example.test>\r\n"
        b"To: Bob <bob@example.test>, carol@example.test\r\n"
        b"Subject: the report\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
        b"Message-ID: <report-1@example.test>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="=-=-=_part_1"\r\n\r\n'
        b"--=-=-=_part_1\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n\r\nThe report is attached.\r\n\r\n"
        b'--=-=-=_part_1\r\nContent-Type: application/pdf; name="report.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="report.pdf"\r\n\r\n'
        + pdf
        + b"--=-=-=_part_1--\r\n"
    )


def corpus() -> dict[str, bytes]:
    return {
        "smtp-source 2KB": smtp_source(2_000),
        "smtp-source 20KB": smtp_source(20_000),
        "store 2KB": store.unique(store.template(2_000), 0, 0),
        "store 20KB": store.unique(store.template(20_000), 0, 0),
        "alternative": imap.message(7),
        "attachment": attachment(),
    }


def per_call(analyze: Analyze, raw: bytes, seconds: float) -> float:
    """CPU µs per analysis of ``raw``."""
    n, start = 0, time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(50):
            analyze(raw)
        n += 50
        if (now := time.process_time()) >= deadline:
            return (now - start) / n * 1e6


def analyses(args: argparse.Namespace) -> None:
    print(f"{'µs per analysis':>26}  {'before':>7}  {'after':>7}  ratio")
    for name, raw in corpus().items():
        med = {}
        for variant, analyze in VARIANTS.items():
            med[variant] = statistics.median(
                per_call(analyze, raw, args.seconds) for _ in range(args.rounds)
            )
        print(
            f"{name:>18} {len(raw):7d}  {med['before']:7.1f}  {med['after']:7.1f}  "
            f"{med['before'] / med['after']:5.2f}x",
            flush=True,
        )


def delivery_cell(root: Path, size: int, lanes: int, seconds: float) -> tuple[float, float]:
    """Deliveries/s and CPU µs per delivery of one ``bench.store`` delivery cell."""
    path = root / f"store-{size}-{lanes}.sqlite"
    db = MailboxDatabase(path)
    db.mount(1)
    for user in store.USERS:
        db.create_mailbox_sync(user)
    tpl = store.template(size)
    asyncio.run(store.delivery_cell(db, tpl, lanes, 0.2))  # warm-up
    cpu, wall = time.process_time(), time.perf_counter()
    done = asyncio.run(store.delivery_cell(db, tpl, lanes, seconds))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    db.dismount()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return done / wall, cpu / done * 1e6


def deliveries(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-mime-"))
    original = mime.analyze_with_json
    try:
        print(f"{'':>10}  {'before /s':>9} {'µs CPU':>7}  {'after /s':>9} {'µs CPU':>7}  "
              "rate ratio  CPU ratio")  # fmt: skip
        for label, size in (("2KB", 2_000), ("20KB", 20_000)):
            for lanes in (1, 10):
                got: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
                for _ in range(args.rounds):
                    for variant, analyze in VARIANTS.items():
                        mime.analyze_with_json = analyze  # type: ignore[assignment]
                        got[variant].append(delivery_cell(root, size, lanes, args.seconds))
                rate = {v: statistics.median(r for r, _ in got[v]) for v in got}
                cpu = {v: statistics.median(c for _, c in got[v]) for v in got}
                print(
                    f"{label:>5} x{lanes:<3}  {rate['before']:9.0f} {cpu['before']:7.0f}  "
                    f"{rate['after']:9.0f} {cpu['after']:7.0f}  "
                    f"{rate['after'] / rate['before']:9.2f}x  "
                    f"{cpu['before'] / cpu['after']:8.2f}x",
                    flush=True,
                )
    finally:
        mime.analyze_with_json = original
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per cell")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median printed)")
    parser.add_argument("--deliveries", action="store_true", help="bench.store's cells, A/B")
    args = parser.parse_args()
    deliveries(args) if args.deliveries else analyses(args)


if __name__ == "__main__":
    main()
