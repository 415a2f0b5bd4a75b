"""SELECT latency against Dovecot on its own formats, side by side in one run.

    python -m bench.imap_select [--messages 10000] [--sessions 10] [--rounds 3]

The SELECT workload of bench/imap.py (``--sessions`` concurrent sessions, each selecting
INBOX ``--rounds`` times; median latency) on a ``--messages``-message INBOX, against our
server and Dovecot with sdbox, mdbox and maildir. Dovecot's dbox mailboxes are filled by
APPEND (as a client would) with Dovecot's default ``mail_fsync``; maildir is written
directly and indexed by a first SELECT, as in bench/imap.py. NOOP latency is
measured the same way, for scale. Results go to bench/results/imap_select.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.imap import PASSWORD, RESULTS, USER, Client, Ours, Reference, message, timed

FORMATS = ("sdbox", "mdbox", "maildir")


class DovecotBox:
    """The reference Dovecot with its mailboxes in ``fmt`` (sdbox or mdbox), default fsync."""

    def __init__(self, fmt: str) -> None:
        from tests.mail.imap.reference.dovecot import Dovecot

        self.server = Dovecot([USER], PASSWORD)
        conf = self.server.root / "dovecot.conf"
        text = conf.read_text()
        text = re.sub(
            r"mail_location = .*", f"mail_location = {fmt}:{self.server.root}/mail/%u", text
        )
        text = text.replace("mail_fsync = always\n", "")
        conf.write_text(text)
        subprocess.run(["chown", "-R", "mail:mail", str(self.server.root / "mail")], check=True)
        self.server.start()
        self.port = self.server.port

    async def fill(self, messages: int, sessions: int) -> None:
        clients = [await Client.connect(self.port) for _ in range(sessions)]

        async def worker(c: Client, first: int) -> None:
            for n in range(first, messages, sessions):
                flags = "" if n % 3 == 0 else "\\Seen"
                data = message(n)
                await c.cmd(
                    f'APPEND INBOX ({flags}) "01-Jan-2024 10:00:00 +0000" '.encode()
                    + b"{%d+}\r\n" % len(data)
                    + data
                )

        await asyncio.gather(*(worker(c, i) for i, c in enumerate(clients)))
        for c in clients:
            await c.close()

    def stop(self) -> None:
        self.server.cleanup()


async def latencies(port: int, sessions: int, rounds: int) -> dict[str, float]:
    """Median latency in ms of SELECT INBOX (the SELECT part of bench/imap.py's suite) and,
    for scale, of NOOP with INBOX selected: what any command costs on that server."""
    clients = [await Client.connect(port) for _ in range(sessions)]
    await clients[0].cmd(b"SELECT INBOX")  # warm caches (Dovecot builds its index)
    await clients[0].cmd(b"FETCH 1:* (FLAGS ENVELOPE)")
    out: dict[str, float] = {}
    for name, command in (("select_ms", b"SELECT INBOX"), ("noop_ms", b"NOOP")):
        lat: list[float] = []

        async def run(c: Client, command: bytes = command, lat: list[float] = lat) -> None:
            for _ in range(rounds):
                lat.append(await timed(lambda: c.cmd(command)))

        await asyncio.gather(*(run(c) for c in clients))
        out[name] = statistics.median(lat) * 1000
    for c in clients:
        await c.close()
    return out


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"params": vars(args) | {"out": str(args.out)}, "servers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ours = Ours(Path(tmp), args.messages, 0)
        try:
            before = load()
            out["servers"]["clustermail"] = await latencies(ours.port, args.sessions, args.rounds)
            out.setdefault("load", {})["clustermail"] = [before, load()]
        finally:
            ours.stop()
    for fmt in FORMATS:
        ref: DovecotBox | Reference
        if fmt == "maildir":
            ref = Reference(args.messages)
        else:
            ref = DovecotBox(fmt)
            await ref.fill(args.messages, args.sessions)
        try:
            before = load()
            out["servers"][f"dovecot-{fmt}"] = await latencies(ref.port, args.sessions, args.rounds)
            out["load"][f"dovecot-{fmt}"] = [before, load()]
        finally:
            ref.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "imap_select.json")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    ours = results["servers"]["clustermail"]["select_ms"]
    print("server               SELECT ms   NOOP ms   SELECT ratio (theirs / ours)")
    for name, got in results["servers"].items():
        select, noop = got["select_ms"], got["noop_ms"]
        print(f"{name:20} {select:9.3f} {noop:9.3f}   {select / ours:.2f}x")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
