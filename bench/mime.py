"""MIME analysis cost per delivery: µs of CPU per ``analyze_with_json`` on the messages
the delivery benchmarks send.

    python -m bench.mime [--seconds 1] [--rounds 3]

Messages: what ``smtp-source`` sends at 2 KB and 20 KB as our SMTP server stores it (a
Received field first), ``bench.store``'s 2 KB and 20 KB text, ``bench.imap``'s
multipart/alternative, and a mail with a PDF attachment. CPU time (process_time) per
analysis; the median round is printed.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time

from bench import imap, store
from clustermail.mail.smtp import policy
from clustermail.mail.store import mime


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


def per_call(raw: bytes, seconds: float) -> float:
    """CPU µs per analyze_with_json of ``raw``."""
    n, start = 0, time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(50):
            mime.analyze_with_json(raw)
        n += 50
        if (now := time.process_time()) >= deadline:
            return (now - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per cell")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median printed)")
    args = parser.parse_args()
    for name, raw in corpus().items():
        rounds = [per_call(raw, args.seconds) for _ in range(args.rounds)]
        print(f"{name:>18} {len(raw):7d} B  {statistics.median(rounds):7.1f} µs", flush=True)


if __name__ == "__main__":
    main()
