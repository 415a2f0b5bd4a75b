"""Mail benchmark: durable SMTP ingest and POP3 RETR on one virtual server's services,
next to aiosmtpd's Sink (no disk: the ceiling) and two peers as private instances
(Postfix -> LMTP -> Dovecot, Postfix virtual(8) -> Maildir) and Dovecot's POP3.

    python -m bench.mail [--messages 1000] [--rounds 3] [--seconds 3] [--no-peers]
                         [--only smtp|pop3] [--pop3-placement shared|split|any]

SMTP load comes from Postfix's smtp-source (1 and 10 sessions, 2 KB and 20 KB); each cell
is timed until every message is in the mailbox (ours answers 250 only after the commit,
so that is when smtp-source ends; the peers are polled). Rounds are interleaved and the
median round is reported. Writes bench/results/mail.json (``--only pop3``: mail-pop3.json,
our POP3 RETR and Dovecot's, rounds interleaved, nothing else started). The POP3 client
and each server share one CPU while timed unless told otherwise (see PLACEMENTS).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import mail_peers as peers
from bench import proc_cpu

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results") / "mail.json"
POP3_RESULTS = RESULTS.with_name("mail-pop3.json")
DOC = ROOT / "docs" / "performance-mail.md"
LOADS = [(1, 2_000), (1, 20_000), (10, 2_000), (10, 20_000)]
SENDER, RCPT, POP_USER, PASSWORD = "sender@bench.test", "u1@bench.test", "u2@bench.test", "bench"
# The peers' rates measured on a quiet machine of this kind (msg/s), for reference.
FIELD_NOTES = {
    "postfix-lmtp-dovecot": {"1x2KB": 416, "1x20KB": 364, "10x2KB": 423, "10x20KB": 408},
    "postfix-virtual": {"1x2KB": 562, "1x20KB": 481, "10x2KB": 808, "10x20KB": 685},
    "aiosmtpd-sink": {"1x2KB": 1430, "1x20KB": 898, "10x2KB": 2550, "10x20KB": 1329},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ensure_tools() -> None:
    """smtp-source comes with Postfix; install the peers the way make test installs its
    tools (Debian packages; postfix's install question answered first)."""
    needed = {"smtp-source": "postfix", "dovecot": "dovecot-core", "script": "bsdutils",
              "/usr/lib/dovecot/lmtp": "dovecot-lmtpd", "/usr/lib/dovecot/pop3": "dovecot-pop3d"}
    missing = sorted({p for cmd, p in needed.items()
                      if shutil.which(cmd) is None and not Path(cmd).exists()})
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"bench.mail needs: apt-get install -y {' '.join(missing)} (as root)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["debconf-set-selections"], input=b"postfix postfix/main_mailer_type "
                   b"select Local only\n", check=False)
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    pkgs = " ".join(missing).split()
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *pkgs],
                   check=True, env=env)


# --------------------------------------------------------------------------- targets


class Target:
    name = ""
    port = 0

    def count(self) -> int | None:
        """Messages in the mailbox now (None: no mailbox, e.g. the sink)."""
        return None

    def stop(self) -> None: ...


class Ours(Target):
    name = "clustermail"

    def __init__(self, tmp: Path) -> None:
        self.port, self.pop3_port = free_port(), free_port()
        self.disk = tmp / "disk"
        with open(tmp / "server.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.mail_server", str(self.disk), "127.0.0.1",
                 str(self.port), str(self.pop3_port)],
                stdout=subprocess.PIPE, stderr=log, cwd=ROOT,
            )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"bench server did not start; see {tmp / 'server.log'}")
        self.db = self.disk / "SG1" / "DB1.sqlite"

    def count(self) -> int:
        with sqlite3.connect(self.db, timeout=30) as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM message m JOIN folder f ON m.folder_id = f.id "
                "JOIN mailbox b ON f.mailbox_id = b.id WHERE b.name = ?", (RCPT,)
            ).fetchone()
            return int(row[0])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Sink(Target):
    name = "aiosmtpd-sink"

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink",
             "-l", f"127.0.0.1:{self.port}"], stderr=subprocess.DEVNULL,
        )
        peers._wait_port(self.port)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class PostfixLmtp(Target):
    name = "postfix-lmtp-dovecot"

    def __init__(self, tmp: Path) -> None:
        lmtp = free_port()
        self.dovecot = peers.dovecot_lmtp(tmp, lmtp)
        self.dovecot.start(lmtp)
        self.port = free_port()
        self.postfix = peers.Postfix(tmp, "postfix-lmtp", self.port,
                                     peers.POSTFIX_LMTP.replace("{lmtp}", str(lmtp)))
        self.postfix.start()
        self.maildir = self.dovecot.folder / "mail" / "bench.test" / "u1" / "Maildir" / "new"

    def count(self) -> int:
        return peers.count_files(self.maildir)

    def stop(self) -> None:
        self.postfix.stop()
        self.dovecot.stop()


class PostfixVirtual(Target):
    name = "postfix-virtual"

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.postfix = peers.Postfix(tmp, "postfix-virtual", self.port, peers.POSTFIX_VIRTUAL)
        self.postfix.start()

    def count(self) -> int:
        return peers.count_files(self.postfix.virtual_maildir())

    def stop(self) -> None:
        self.postfix.stop()


# --------------------------------------------------------------------------- cells


def smtp_cell(target: Target, sessions: int, size: int, messages: int) -> float:
    before = target.count()
    started = time.perf_counter()
    out = subprocess.run(
        ["smtp-source", "-d", "-s", str(sessions), "-m", str(messages), "-l", str(size),
         "-f", SENDER, "-t", RCPT, f"127.0.0.1:{target.port}"],
        capture_output=True, text=True, timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"smtp-source against {target.name}: {out.stderr[-500:]}")
    if before is not None:
        deadline = time.monotonic() + 300
        while (now := target.count()) is not None and now < before + messages:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target.name}: only {now - before}/{messages} arrived")
            time.sleep(0.002)
    return messages / (time.perf_counter() - started)


#: Where the POP3 client and the server run: ``shared``, both on one CPU; ``split``, on
#: two; ``any``, where the scheduler puts them. On a virtual machine, one session's round
#: trips between two CPUs cost a wake-up of an idle CPU each way (tens of microseconds,
#: partly charged to the processes), and the scheduler chooses differently from run to
#: run and between two servers in the same minute: the rates of ``any`` swing by 3-4x
#: (docs/performance-mail.md). ``shared`` measures the servers' own work.
PLACEMENTS = ("shared", "split", "any")


def placement_cpus(placement: str) -> tuple[set[int], set[int]] | None:
    """(client's CPUs, server's CPUs) for a placement; None for ``any``."""
    cpus = sorted(os.sched_getaffinity(0))
    if placement == "any":
        return None
    if placement == "split":
        if len(cpus) < 2:
            raise ValueError("placement 'split' needs two CPUs")
        return {cpus[0]}, {cpus[-1]}
    return {cpus[-1]}, {cpus[-1]}


def pop3_retr(
    port: int,
    user: str,
    count: int,
    seconds: float,
    servers: Callable[[], list[int]] | None = None,
    placement: str = "any",
) -> tuple[float, float]:
    """RETR of messages 1..count in turn over one session for ``seconds``: ops/s, and
    the CPU time per RETR (µs, user + system) of the processes ``servers`` lists once
    the session is logged in (0 without). Those processes and this thread run as
    ``placement`` says (:data:`PLACEMENTS`) for the timed part."""
    chosen = placement_cpus(placement)
    if chosen is not None and servers is None:
        raise ValueError(f"placement {placement!r} needs the server's processes")
    mine = os.sched_getaffinity(0)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        f.readline()
        s.sendall(f"USER {user}\r\nPASS {PASSWORD}\r\n".encode())
        assert f.readline().startswith(b"+OK")
        reply = f.readline()
        assert reply.startswith(b"+OK"), reply
        pids = servers() if servers is not None else []  # Dovecot's exists once logged in
        try:
            if chosen is not None:
                proc_cpu.pin([0], chosen[0])
                proc_cpu.pin(pids, chosen[1])
            used, ops, started = proc_cpu.cpu_seconds(pids), 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < seconds:
                s.sendall(b"RETR %d\r\n" % (ops % count + 1))
                assert f.readline().startswith(b"+OK")
                while f.readline() != b".\r\n":
                    pass
                ops += 1
            used = proc_cpu.cpu_seconds(pids) - used
        finally:
            if chosen is not None:
                proc_cpu.pin([0, *pids], mine)
        s.sendall(b"QUIT\r\n")
        return ops / elapsed, used / ops * 1e6


def message(i: int, size: int = 2000) -> bytes:
    head = f"From: {SENDER}\r\nTo: {POP_USER}\r\nSubject: pop {i}\r\n\r\n".encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def fill_ours(ours: Ours, n: int) -> None:
    import smtplib

    with smtplib.SMTP("127.0.0.1", ours.port) as c:
        for i in range(n):
            c.sendmail(SENDER, [POP_USER], message(i))


def fill_maildir(folder: Path, n: int) -> None:
    new = folder / "new"
    for sub in ("new", "cur", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (new / f"{1700000000 + i}.M{i}P1.bench").write_bytes(message(i))
    for path in [folder.parent, folder, *(folder / s for s in ("new", "cur", "tmp"))]:
        shutil.chown(path, "mail", "mail")
    for p in new.iterdir():
        shutil.chown(p, "mail", "mail")


# --------------------------------------------------------------------------- run


def pop3_cells(tmp: Path, ours: Ours, args: argparse.Namespace,
               errors: dict[str, str]) -> dict[str, Any]:
    """POP3 RETR ops/s, ours and Dovecot's, rounds interleaved (medians, and every round),
    with each server's CPU time per RETR, client and server placed as ``--pop3-placement``
    says."""
    fill_ours(ours, 100)
    targets: dict[str, tuple[int, Callable[[], list[int]]]] = {
        "clustermail": (ours.pop3_port, lambda: [ours.proc.pid])}
    dovecot = None
    if not args.no_peers:
        try:
            port = free_port()
            dovecot = peers.dovecot_pop3(tmp, port, POP_USER, PASSWORD)
            fill_maildir(dovecot.folder / "mail" / POP_USER, 100)
            dovecot.start(port)
            master = proc_cpu.master_pid(dovecot.folder / "run")
            targets["dovecot"] = (port, lambda: proc_cpu.children(master, "pop3"))
        except Exception as exc:
            errors["dovecot-pop3"] = str(exc)[:500]
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
    loads: dict[str, list[list[float]]] = {}
    try:
        for r in range(args.rounds):
            for name, (port, servers) in targets.items():
                before = round(os.getloadavg()[0], 2)
                rounds[name].append(pop3_retr(port, POP_USER, 100, args.seconds, servers,
                                              args.pop3_placement))
                after = round(os.getloadavg()[0], 2)
                loads.setdefault(name, []).append([before, after])
                rate, cpu = rounds[name][-1]
                print(f"round {r + 1} POP3 RETR {name:12} {rate:8.0f} ops/s {cpu:6.1f} µs "
                      f"server CPU/RETR ({args.pop3_placement}, load {before:.1f}→{after:.1f})",
                      flush=True)
    finally:
        if dovecot is not None:
            dovecot.stop()
    cells: dict[str, Any] = {name: round(statistics.median(c[0] for c in v))
                             for name, v in rounds.items()}
    cells["rounds"] = {name: [round(c[0]) for c in v] for name, v in rounds.items()}
    cells["server_cpu_us_per_retr"] = {name: round(statistics.median(c[1] for c in v), 1)
                                       for name, v in rounds.items()}
    cells["placement"] = args.pop3_placement
    cells["load"] = loads  # the 1-minute load average before and after each round
    return cells


def median_by_cell(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rounds if k in r), 1) for k in rounds[0]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    ensure_tools()
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-mail-"))
    os.chmod(tmp, 0o755)
    makers: list[Callable[[Path], Target]] = [Ours]
    if args.only != "pop3":
        makers.append(Sink)
        if not args.no_peers:
            makers += [PostfixLmtp, PostfixVirtual]
    targets: list[Target] = []
    results: dict[str, Any] = {"smtp": {}, "pop3": {}, "errors": {}}
    try:
        for make in makers:
            try:
                targets.append(make(tmp))
            except Exception as exc:  # a peer that will not start is reported, not fatal
                results["errors"][getattr(make, "name", str(make))] = str(exc)[:500]
        rounds: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
        #: the 1-minute load average before and after each cell, round by round
        loads: dict[str, dict[str, list[list[float]]]] = {t.name: {} for t in targets}
        for r in range(args.rounds if args.only != "pop3" else 0):
            for t in targets:
                cells: dict[str, float] = {}
                for sessions, size in LOADS:
                    key = f"{sessions}x{size // 1000}KB"
                    before = round(os.getloadavg()[0], 2)
                    cells[key] = smtp_cell(t, sessions, size, args.messages)
                    after = round(os.getloadavg()[0], 2)
                    loads[t.name].setdefault(key, []).append([before, after])
                    print(f"round {r + 1} {t.name:22} {key:8} {cells[key]:8.0f} msg/s "
                          f"(load {before:.1f}→{after:.1f})", flush=True)
                rounds[t.name].append(cells)
        results["smtp"] = {name: median_by_cell(rs) for name, rs in rounds.items() if rs}
        results["smtp_load"] = {name: cells for name, cells in loads.items() if cells}
        if args.only != "smtp":
            results["pop3"] = pop3_cells(tmp, next(t for t in targets if isinstance(t, Ours)),
                                         args, results["errors"])
    finally:
        for t in targets:
            t.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    results["settings"] = {"messages": args.messages, "rounds": args.rounds,
                           "pop3_seconds": args.seconds,
                           "pop3_placement": args.pop3_placement, "cpus": os.cpu_count(),
                           "python": platform.python_version(),
                           "load_before": [round(x, 2) for x in load_before],
                           "load_after": [round(x, 2) for x in os.getloadavg()]}
    results["field_notes"] = FIELD_NOTES
    return results


def table(results: dict[str, Any]) -> str:
    smtp = results["smtp"]
    ours = smtp.get("clustermail", {})
    names = [n for n in ("clustermail", "aiosmtpd-sink", "postfix-lmtp-dovecot",
                         "postfix-virtual") if n in smtp]
    lines = ["| load (sessions x size) | " + " | ".join(names) + " | ours / Postfix→Dovecot |"
             " ours / Postfix virtual | ours / Sink |",
             "|---" * (len(names) + 4) + "|"]
    for key in ours:
        row = [f"{smtp[n].get(key, 0):,.0f}" for n in names]
        ratios = []
        for peer in ("postfix-lmtp-dovecot", "postfix-virtual", "aiosmtpd-sink"):
            v = smtp.get(peer, {}).get(key)
            ratios.append(f"{ours[key] / v:.2f}x" if v else "-")
        lines.append(f"| {key} | " + " | ".join(row) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--pop3-placement", choices=PLACEMENTS, default="shared",
                        help="POP3 client and server on one CPU (default), two, or any")
    parser.add_argument("--only", choices=("smtp", "pop3"),
                        help="run one part (pop3: ours and Dovecot's, nothing else)")
    args = parser.parse_args()
    results = run(args)
    out = POP3_RESULTS if args.only == "pop3" else RESULTS
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    if args.only != "pop3":
        print(table(results))
    print("POP3 RETR ops/s:", results["pop3"])
    if results["errors"]:
        print("errors:", json.dumps(results["errors"], indent=2))


if __name__ == "__main__":
    main()
