"""Hostile clients against a real resource host: does a legitimate client still get
answers, and does the host's memory stay bounded?

    python -m bench.hostile [--connections 50] [--seconds 15] [--kinds slowloris,...]
                            [--out bench/results/hostile.json]

One virtual server (mail_store, smtp, pop3, imap4 with their default limits) runs in a
real resource host process over a SQLite coordination store and the real directory
(argon2id at its production cost). For each attack kind a fresh host is started, then
``--connections`` hostile connections (each from its own loopback address, as a botnet
would) run for the whole phase, rotating over SMTP, POP3 and IMAP4 where the kind applies
to all three, reconnecting whenever the server closes them. Meanwhile a legitimate client
from 127.0.0.2, in a process of its own (so the attackers' work in this one is not in
its timings), measures:

* IMAP NOOP and SMTP NOOP latency, one each every 50 ms on open sessions (the SMTP
  session is renewed every 50 NOOPs: past 100 they count as errors, as in Postfix); a
  NOOP unanswered within 2 s counts as 2 s and as a failure, and so does a session that
  cannot be opened (logged in) again — then without a latency sample;
* an IMAP LOGIN on a new connection every 2 s (its address logged in before the attack);

and the host's resident memory (VmRSS) is sampled every 0.25 s. Attack kinds:

* ``slowloris`` — a byte every second, never a line end;
* ``non-reading`` — pipelined commands whose answers are never read (SMTP EHLOs; POP3
  RETR and IMAP FETCH of a 2 MB message, logged in as the attacker's own account);
* ``pre-login`` — connections that never log in, sending a harmless command every 5 s;
* ``guessing`` — password guesses against one account, as fast as answered;
* ``oversized-lines`` — 1 MB command lines;
* ``imap-literal`` — ``APPEND INBOX {67108864}`` before login (half of them
  non-synchronizing, ``{67108864+}``), the literal sent as fast as accepted;
* ``imap-list`` — logged in, ``LIST "" "*a*a…*a"`` (20 wildcards, no match) against a
  60-character folder name.

A phase whose host passes 2 GiB of memory is stopped there (reported as such). Results:
bench/results/hostile.json; the table in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from bench.mail_server import base_resources
from clustermail.coord import open_store
from clustermail.mail.directory import Directory
from tests.support.hostproc import FAST_POLICY, Host
from tests.support.ports import free_port

RESULTS = Path(__file__).parent / "results"
KINDS = ["baseline", "slowloris", "non-reading", "pre-login", "guessing", "oversized-lines",
         "imap-literal", "imap-list"]
ADDRESS = "127.0.0.41"
LEGIT = "127.0.0.2"
DOMAIN = "bench.test"
VICTIM, USER, ATTACKER = f"u1@{DOMAIN}", f"u2@{DOMAIN}", f"u3@{DOMAIN}"
PASSWORD = "correct horse battery"
OP_TIMEOUT = 2.0
MEMORY_CAP = 2 * 1024**3
TARGET_P99_MS = 100.0
LOGIN_PROBE = True


# --------------------------------------------------------------------------- the host


@dataclass
class Ports:
    smtp: int
    submission: int
    pop3: int
    imap: int


def prepare(root: Path) -> tuple[dict[str, Any], Ports]:
    """The directory (three users) and the resource host's spec."""

    async def users() -> None:
        store = await open_store(f"sqlite://{root}/cluster.db")
        try:
            d = Directory(store)
            await d.add_domain(DOMAIN)
            for user in (VICTIM, USER, ATTACKER):
                await d.add_mailbox(user, password=PASSWORD, server="mail1")
        finally:
            await store.close()

    asyncio.run(users())
    ports = Ports(free_port(ADDRESS), free_port(ADDRESS), free_port(ADDRESS),
                  free_port(ADDRESS))
    data = root / "data"
    plain = {"allow_plaintext_on_loopback": True}
    resources: list[dict[str, Any]] = [
        *base_resources(ADDRESS, data),
        {"name": "smtp", "type": "smtp", "depends_on": ["store", "ip"], "properties": {
            "port": ports.smtp, "submission_port": ports.submission, "submissions_port": 0,
            **plain}},
        {"name": "pop3", "type": "pop3", "depends_on": ["store", "ip"],
         "properties": {"port": ports.pop3, "tls_port": 0, **plain}},
        {"name": "imap4", "type": "imap4", "depends_on": ["store", "ip"],
         "properties": {"port": ports.imap, "tls_port": 0, **plain}},
    ]
    for r in resources:
        r.setdefault("depends_on", [])
        r["policy"] = {**FAST_POLICY, "pending_timeout": 60.0}
    spec = {"vs": "mail1", "node": "node1", "epoch": 1, "store": f"sqlite://{root}/cluster.db",
            "data_dir": str(data), "resources": resources, "offline_resources": []}
    return spec, ports


def rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------- clients


class Line:
    """A line-oriented client connection from a chosen source address."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str, timeout: float = OP_TIMEOUT) -> Line:
        async with asyncio.timeout(timeout):
            r, w = await asyncio.open_connection(ADDRESS, port, local_addr=(source, 0),
                                                 limit=4 * 1024 * 1024)
        return cls(r, w)

    async def line(self, timeout: float = OP_TIMEOUT) -> bytes:
        async with asyncio.timeout(timeout):
            data = await self.reader.readline()
        if not data:
            raise ConnectionResetError("closed by the server")
        return data

    async def until(self, prefix: bytes, timeout: float = OP_TIMEOUT) -> bytes:
        """Lines until one starts with ``prefix`` (an IMAP tag, an SMTP final reply)."""
        async with asyncio.timeout(timeout):
            while True:
                line = await self.reader.readline()
                if not line:
                    raise ConnectionResetError("closed by the server")
                if line.startswith(prefix):
                    return line

    async def smtp_reply(self, timeout: float = OP_TIMEOUT) -> bytes:
        async with asyncio.timeout(timeout):
            while True:
                line = await self.reader.readline()
                if not line:
                    raise ConnectionResetError("closed by the server")
                if line[3:4] != b"-":
                    return line

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()


async def imap_login(port: int, source: str, user: str) -> Line:
    c = await Line.open(port, source)
    try:
        await c.line()
        await c.send(f'L LOGIN "{user}" "{PASSWORD}"\r\n'.encode())
        reply = await c.until(b"L ", timeout=10)
        if not reply.startswith(b"L OK"):
            raise ConnectionError(f"login refused: {reply!r}")
    except BaseException:
        c.close()
        raise
    return c


# --------------------------------------------------------------------------- measuring


@dataclass
class Probe:
    smtp: list[float] = field(default_factory=list)
    imap: list[float] = field(default_factory=list)
    login: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)


async def timed(op: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await op()
    return (time.perf_counter() - started) * 1000


async def probe_imap(ports: Ports, stop: asyncio.Event, out: Probe) -> None:
    conn: Line | None = None
    n = 0
    while not stop.is_set():
        if conn is None:
            try:
                conn = await imap_login(ports.imap, LEGIT, USER)
            except (OSError, TimeoutError, ConnectionError) as exc:
                out.failures[f"imap session login: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.05)
                continue
        try:
            n += 1
            out.imap.append(await timed(functools.partial(_imap_noop, conn, f"N{n}".encode())))
        except (OSError, TimeoutError, ConnectionError) as exc:
            out.imap.append(OP_TIMEOUT * 1000)
            out.failures[f"imap noop: {type(exc).__name__}"] += 1
            if conn is not None:
                conn.close()
            conn = None
        await asyncio.sleep(0.05)
    if conn is not None:
        conn.close()


async def _imap_noop(c: Line, tag: bytes) -> None:
    await c.send(tag + b" NOOP\r\n")
    reply = await c.until(tag + b" ")
    if not reply.startswith(tag + b" OK"):
        raise ConnectionError(reply.decode(errors="replace"))


async def probe_smtp(ports: Ports, stop: asyncio.Event, out: Probe) -> None:
    conn: Line | None = None
    used = 0
    while not stop.is_set():
        if conn is None or used >= 50:
            if conn is not None:
                conn.close()
            try:
                conn = await Line.open(ports.smtp, LEGIT)
                await conn.smtp_reply()
                await conn.send(b"EHLO legit.test\r\n")
                await conn.smtp_reply()
                used = 0
            except (OSError, TimeoutError, ConnectionError) as exc:
                out.failures[f"smtp session: {type(exc).__name__}"] += 1
                conn = None
                await asyncio.sleep(0.05)
                continue
        try:
            out.smtp.append(await timed(functools.partial(_smtp_noop, conn)))
            used += 1
        except (OSError, TimeoutError, ConnectionError) as exc:
            out.smtp.append(OP_TIMEOUT * 1000)
            out.failures[f"smtp noop: {type(exc).__name__}"] += 1
            if conn is not None:
                conn.close()
            conn = None
        await asyncio.sleep(0.05)
    if conn is not None:
        conn.close()


async def _smtp_noop(c: Line) -> None:
    await c.send(b"NOOP\r\n")
    reply = await c.smtp_reply()
    if not reply.startswith(b"250"):
        raise ConnectionError(reply.decode(errors="replace"))


async def probe_login(ports: Ports, stop: asyncio.Event, out: Probe) -> None:
    while not stop.is_set():
        try:
            started = time.perf_counter()
            c = await imap_login(ports.imap, LEGIT, USER)
            out.login.append((time.perf_counter() - started) * 1000)
            c.close()
        except (OSError, TimeoutError, ConnectionError) as exc:
            out.failures[f"imap login: {type(exc).__name__}: {str(exc)[:60]}"] += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await stop.wait()


def run_probes(ports: Ports, seconds: float, login_probe: bool) -> Probe:
    """The legitimate client for ``seconds`` (in its own process)."""

    async def probing() -> Probe:
        stop, probe = asyncio.Event(), Probe()
        kinds = (probe_imap, probe_smtp, *([probe_login] if login_probe else []))
        tasks = [asyncio.create_task(p(ports, stop, probe)) for p in kinds]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.wait(tasks, timeout=10)
        return probe

    return asyncio.run(probing())


# --------------------------------------------------------------------------- attacks

Attack = Callable[[int, str, Ports, Counter[str]], Awaitable[None]]
PROTOCOLS = ["smtp", "pop3", "imap"]  # hostile connection i goes to PROTOCOLS[i % 3]


def port_of(ports: Ports, proto: str) -> int:
    return {"smtp": ports.smtp, "pop3": ports.pop3, "imap": ports.imap}[proto]


async def slowloris(i: int, source: str, ports: Ports, stats: Counter[str]) -> None:
    proto = PROTOCOLS[i % len(PROTOCOLS)]
    c = await Line.open(port_of(ports, proto), source)
    try:
        await c.line()
        stats["connected"] += 1
        for byte in (b"a NOOP" if proto == "imap" else b"NOOP") * 1000:
            await c.send(bytes([byte]))
            try:
                await c.line(timeout=1.0)  # the server's goodbye, if it has had enough
                stats[f"{proto} closed"] += 1
                return
            except TimeoutError:
                continue
    finally:
        c.close()


BIG = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 2000


async def non_reading(i: int, source: str, ports: Ports, stats: Counter[str]) -> None:
    proto = PROTOCOLS[i % len(PROTOCOLS)]
    if proto == "imap":
        c = await imap_login(ports.imap, source, ATTACKER)
        await c.send(b"S SELECT INBOX\r\n")
        await c.until(b"S ")
        flood = b"F FETCH 1 BODY.PEEK[]\r\n" * 20
    elif proto == "pop3":
        c = await Line.open(ports.pop3, source)
        await c.line()
        await c.send(f"USER {ATTACKER}\r\nPASS {PASSWORD}\r\n".encode())
        await c.line()
        if not (await c.line(timeout=10)).startswith(b"+OK"):
            c.close()
            stats["pop3 login refused"] += 1
            return
        flood = b"RETR 1\r\n" * 20
    else:
        c = await Line.open(ports.smtp, source)
        await c.smtp_reply()
        flood = b"EHLO hostile.test\r\n" * 2000
    stats["connected"] += 1
    transport = cast(asyncio.Transport, c.writer.transport)
    transport.pause_reading()  # and never read again
    try:
        started = time.monotonic()
        while not transport.is_closing():
            transport.write(flood if transport.get_write_buffer_size() < 1 << 20 else b"")
            await asyncio.sleep(0.5)
            if time.monotonic() - started > 600:
                return
        stats[f"{proto} closed after {round(time.monotonic() - started)} s"] += 1
    finally:
        c.close()


async def pre_login(i: int, source: str, ports: Ports, stats: Counter[str]) -> None:
    proto = PROTOCOLS[i % len(PROTOCOLS)]
    c = await Line.open(port_of(ports, proto), source)
    command = {"smtp": b"EHLO idle.test\r\n", "pop3": b"CAPA\r\n", "imap": b"a CAPABILITY\r\n"}
    try:
        await c.line()
        stats["connected"] += 1
        started = time.monotonic()
        while True:
            await c.send(command[proto])
            try:
                async with asyncio.timeout(5.0):
                    while True:  # read whatever comes, until 5 s pass
                        if not await c.reader.readline():
                            stats[f"{proto} closed after {round(time.monotonic() - started)} s"] \
                                += 1
                            return
            except TimeoutError:
                pass
    finally:
        c.close()


async def guessing(i: int, source: str, ports: Ports, stats: Counter[str]) -> None:
    proto = PROTOCOLS[i % len(PROTOCOLS)]
    c = await Line.open(ports.submission if proto == "smtp" else port_of(ports, proto), source)
    try:
        if proto == "smtp":
            await c.smtp_reply()
            await c.send(b"EHLO guesser.test\r\n")
            await c.smtp_reply()
        else:
            await c.line()
        stats["connected"] += 1
        for n in range(10_000):
            guess = f"guess-{i}-{n}"
            if proto == "smtp":
                token = base64.b64encode(f"\0{VICTIM}\0{guess}".encode())
                await c.send(b"AUTH PLAIN " + token + b"\r\n")
                reply = await c.smtp_reply(timeout=30)
                kind = reply[:9]
            elif proto == "pop3":
                await c.send(f"USER {VICTIM}\r\nPASS {guess}\r\n".encode())
                await c.line(timeout=30)
                reply = await c.line(timeout=30)
                kind = reply.split(b"]")[0][:20]
            else:
                await c.send(f'G{n} LOGIN "{VICTIM}" "{guess}"\r\n'.encode())
                reply = await c.until(f"G{n} ".encode(), timeout=30)
                kind = reply.split(b"]")[0][len(f"G{n} "):][:24]
            stats[f"{proto} {kind.decode(errors='replace').strip()}"] += 1
    finally:
        c.close()


async def oversized(i: int, source: str, ports: Ports, stats: Counter[str]) -> None:
    proto = PROTOCOLS[i % len(PROTOCOLS)]
    c = await Line.open(port_of(ports, proto), source)
    prefix = {"smtp": b"NOOP ", "pop3": b"NOOP ", "imap": b"a NOOP "}[proto]
    try:
        await c.line()
        stats["connected"] += 1
        while True:
            await c.send(prefix + b"x" * 1_000_000 + b"\r\n")
            reply = await c.line(timeout=10)
            stats[f"{proto} {reply[:12].decode(errors='replace').strip()}"] += 1
    finally:
        c.close()


async def imap_literal(i: int, source: str, ports: Ports, stats: Counter[str]) -> None:
    c = await Line.open(ports.imap, source)
    size = 64 * 1024 * 1024
    chunk = b"z" * (1024 * 1024)
    try:
        await c.line()
        stats["connected"] += 1
        while True:
            if i % 2:
                await c.send(f"a APPEND INBOX {{{size}+}}\r\n".encode())
            else:
                await c.send(f"a APPEND INBOX {{{size}}}\r\n".encode())
                reply = await c.line(timeout=10)
                stats[f"answer {reply[:24].decode(errors='replace').strip()}"] += 1
                if not reply.startswith(b"+"):
                    continue
            for _ in range(size // len(chunk)):
                await c.send(chunk)
            stats["literal sent"] += 1
            await c.send(b"\r\n")
            reply = await c.until(b"a ", timeout=30)
            stats[f"result {reply[:24].decode(errors='replace').strip()}"] += 1
    finally:
        c.close()


LIST_PATTERN = "*a" * 20 + "b"


async def imap_list(i: int, source: str, ports: Ports, stats: Counter[str]) -> None:
    c = await imap_login(ports.imap, source, ATTACKER)
    try:
        stats["connected"] += 1
        for n in range(1_000_000):
            tag = f"P{n}".encode()
            await c.send(tag + f' LIST "" "{LIST_PATTERN}"\r\n'.encode())
            reply = await c.until(tag + b" ", timeout=60)
            stats[f"list {reply[len(tag) + 1:][:12].decode(errors='replace').strip()}"] += 1
    finally:
        c.close()


ATTACKS: dict[str, Attack] = {
    "slowloris": slowloris, "non-reading": non_reading, "pre-login": pre_login,
    "guessing": guessing, "oversized-lines": oversized, "imap-literal": imap_literal,
    "imap-list": imap_list,
}


async def keep_attacking(attack: Attack, i: int, kind_no: int, ports: Ports,
                         stop: asyncio.Event, stats: Counter[str]) -> None:
    """One hostile connection, renewed whenever the server ends it, until ``stop``."""
    source = f"127.0.{10 + kind_no}.{i + 1}"
    while not stop.is_set():
        try:
            await attack(i, source, ports, stats)
        except (OSError, TimeoutError, ConnectionError) as exc:
            stats[f"error {type(exc).__name__}"] += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):  # reconnect, but not in a tight loop
                await stop.wait()


# --------------------------------------------------------------------------- a phase


async def setup_attacker(ports: Ports, kind: str) -> None:
    """What the attacker's own account needs: a big message, a long folder name."""
    if kind == "non-reading":
        c = await Line.open(ports.smtp, LEGIT)
        await c.smtp_reply()
        for cmd in (b"EHLO setup.test", b"MAIL FROM:<x@elsewhere.test>",
                    f"RCPT TO:<{ATTACKER}>".encode(), b"DATA"):
            await c.send(cmd + b"\r\n")
            await c.smtp_reply()
        await c.send(BIG + b".\r\n")
        reply = await c.smtp_reply(timeout=30)
        assert reply.startswith(b"250"), reply
        c.close()
    if kind == "imap-list":
        c = await imap_login(ports.imap, LEGIT, ATTACKER)
        await c.send(b'C CREATE "' + b"a" * 60 + b'"\r\n')
        await c.until(b"C ")
        c.close()
    # the legitimate user has logged in from its address before (a familiar client)
    (await imap_login(ports.imap, LEGIT, USER)).close()


async def phase(kind: str, kind_no: int, ports: Ports, pid: int, connections: int,
                seconds: float) -> dict[str, Any]:
    await setup_attacker(ports, kind)
    stop_attack = asyncio.Event()
    stats: Counter[str] = Counter()
    before = rss(pid)
    samples: list[int] = []
    attackers = []
    if kind != "baseline":
        attackers = [asyncio.create_task(keep_attacking(ATTACKS[kind], i, kind_no, ports,
                                                        stop_attack, stats))
                     for i in range(connections)]
    await asyncio.sleep(2.0)  # let the attack build up
    # The legitimate client runs in a process of its own, as it would on its own
    # machine: in this one its timings would include the attackers' work (50
    # connections writing 1 MB lines keep this event loop busy).
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        probing = loop.run_in_executor(pool, run_probes, ports, seconds, LOGIN_PROBE)
        stopped_for_memory = False
        while not probing.done():
            samples.append(rss(pid))
            if samples[-1] > MEMORY_CAP:
                stopped_for_memory = True  # the probe ends on its own (bounded waits)
                break
            await asyncio.sleep(0.25)
        probe = await probing
    stop_attack.set()
    for task in attackers:
        task.cancel()
    if attackers:
        await asyncio.wait(attackers, timeout=10)
    after = rss(pid)
    return {
        "kind": kind,
        "load_average_1min": round(os.getloadavg()[0], 1),  # the machine is shared
        "connections": 0 if kind == "baseline" else connections,
        "seconds": seconds,
        "smtp_noop_ms": summary(probe.smtp),
        "imap_noop_ms": summary(probe.imap),
        "imap_login_ms": summary(probe.login),
        "probe_failures": dict(probe.failures),
        "rss_mb": {"before": mb(before), "max": mb(max(samples, default=0)),
                   "after": mb(after)},
        "stopped_at_memory_cap": stopped_for_memory,
        "hostile": dict(stats.most_common(12)),
        "p99_under_100ms": (summary(probe.smtp).get("p99", 1e9) < TARGET_P99_MS
                            and summary(probe.imap).get("p99", 1e9) < TARGET_P99_MS),
    }


def mb(n: int) -> float:
    return round(n / 1024**2, 1)


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))], 2)

    return {"n": len(values), "p50": round(statistics.median(values), 2), "p99": pct(99),
            "max": round(ordered[-1], 2)}


def run_kind(kind: str, kind_no: int, connections: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        root = Path(tmp)
        spec, ports = prepare(root)
        host = Host(spec, root / "host.stderr")
        try:
            for name in ("smtp", "pop3", "imap4"):
                host.events.resource(name, "online", timeout=60)
            result = asyncio.run(phase(kind, kind_no, ports, host.pid, connections, seconds))
            alive = host.proc.poll() is None
            result["host_alive"] = alive
            return result
        finally:
            host.kill()


def report(results: list[dict[str, Any]]) -> str:
    head = ("| attack (50 connections) | SMTP NOOP p50 / p99 ms | IMAP NOOP p50 / p99 ms "
            "| IMAP LOGIN p50 / p99 ms | probe failures | host RSS before → max MB "
            "| machine load |")
    rows = [head, "|---|---|---|---|---|---|---|"]
    def cell(r: dict[str, Any], key: str) -> str:
        s = r[key]
        return f"{s['p50']} / {s['p99']}" if s.get("n") else "—"

    for r in results:
        failures = sum(r["probe_failures"].values())
        memory = f"{r['rss_mb']['before']} → {r['rss_mb']['max']}"
        if r["stopped_at_memory_cap"]:
            memory += " (stopped at 2 GiB)"
        rows.append(f"| {r['kind']} | {cell(r, 'smtp_noop_ms')} | {cell(r, 'imap_noop_ms')} | "
                    f"{cell(r, 'imap_login_ms')} | {failures} | {memory} | "
                    f"{r.get('load_average_1min', '—')} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--protocols", default="smtp,pop3,imap",
                        help="the protocols attacked (where a kind applies to several)")
    parser.add_argument("--no-login-probe", action="store_true",
                        help="no IMAP LOGIN every 2 s (each costs an argon2id check)")
    parser.add_argument("--out", type=Path, default=RESULTS / "hostile.json")
    args = parser.parse_args()
    global LOGIN_PROBE
    LOGIN_PROBE = not args.no_login_probe
    PROTOCOLS[:] = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if not PROTOCOLS or set(PROTOCOLS) - {"smtp", "pop3", "imap"}:
        parser.error("--protocols: a list of smtp, pop3, imap")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown attack kinds {unknown}; choose from {', '.join(KINDS)}")
    results = []
    for kind in kinds:
        print(f"{kind} …", file=sys.stderr, flush=True)
        results.append(run_kind(kind, KINDS.index(kind), args.connections, args.seconds))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"generated": time.strftime("%Y-%m-%d %H:%M:%S"),
                                    "connections": args.connections,
                                    "protocols": PROTOCOLS,
                                    "seconds": args.seconds, "results": results},
                                   indent=2) + "\n")
    print(report(results))


if __name__ == "__main__":
    main()
