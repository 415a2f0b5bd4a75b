"""Many IDLE sessions on one virtual server: the resource host's memory, delivery
wake-ups, and logins alongside — then the same sessions against Dovecot.

    python -m bench.idle [--sessions 10000] [--users 1000] [--login-rate 200]
                         [--seconds 20] [--deliveries 100] [--dovecot-sessions N | --no-dovecot]
                         [--out bench/results/idle.json]

One virtual server (mail_store, smtp, imap4; ``max_connections`` raised to fit the
sessions, every other limit at its default) runs in a real resource host process over a
SQLite coordination store and the real directory. The client runs in a process of its
own (asyncio protocols, no task per session) and opens ``--sessions`` sessions, each
LOGIN, SELECT INBOX, IDLE, spread over ``--users`` accounts and over loopback source
addresses: at most 40 sessions per address and one of each user's sessions per address,
so the per-client (50) and per-user-and-address (10) limits hold at their defaults.

Once all are idling, the resident memory of the host and its children is read (VmRSS
and the proportional Pss of /proc/PID/smaps_rollup). Then ``--deliveries`` messages go
over SMTP, one at a time, each to another user: for each, the time from the SMTP 250 to
``* N EXISTS`` on every one of that user's IDLE sessions. That is done on a quiet
server, then again while another process logs returning users in at ``--login-rate``
per second (LOGIN then LOGOUT, from that user's own addresses), whose achieved rate and
latency are reported too.

Passwords are argon2id at the production cost (one hash, shared by every mailbox, so
setting up 1,000 users is quick): each user's first session pays one verification (at
most 8 first logins at a time, the login throttle's budget for unfamiliar clients), the
others, and the background logins, are returning users answered from the login cache,
as in production.

Dovecot 2.3 (a private instance: maildir, one imap process per session; login
processes in high-performance mode, ``process_limit`` and ``default_client_limit``
raised for the sessions) gets the same sessions and the same measurements, except that a
delivery is an APPEND from another session (timed from its tagged OK). Its memory is
summed over all its processes: VmRSS counts the shared pages once per process, so Pss is
the fair figure. Dovecot's session count stops early if the machine's available memory
falls under 3 GiB (reported).

Results: bench/results/idle.json (with the machine's 1-minute load average at the start,
before the deliveries and after them, and the logins refused: ``refused``, of which
``refused_busy`` for a full password-check queue); the summary in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.hostile import ADDRESS, Line, mb, summary
from bench.mail_server import base_resources
from clustermail.coord import open_store
from clustermail.mail.directory import Directory
from clustermail.mail.directory.passwords import Passwords
from tests.support.hostproc import FAST_POLICY, Host
from tests.support.ports import free_port

RESULTS = Path(__file__).parent / "results"
DOMAIN = "idle.test"
PASSWORD = "an idle user's password"
PER_ADDRESS = 40  # sessions per client address (the per-client limit is 50)
DELIVERER = "127.0.0.2"
MEMORY_FLOOR = 3 * 1024**3  # Dovecot stops opening sessions below this MemAvailable
WAKE_TIMEOUT = 5.0
TARGET_RSS = 1024**3
TARGET_P99_MS = 100.0


def user(n: int) -> str:
    return f"u{n}@{DOMAIN}"


# --------------------------------------------------------------------------- limits


def raise_nofile(need: int) -> tuple[int, str]:
    """Raises RLIMIT_NOFILE (inherited by the server and client processes) to ``need``
    if it can; returns the soft limit now in force and what was done."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return soft, f"RLIMIT_NOFILE {soft} already enough for {need}"
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(need, hard)))
        return need, f"RLIMIT_NOFILE raised from {soft} to {need}"
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard, (f"RLIMIT_NOFILE could not be raised to {need} (hard limit {hard}): "
                      "fewer sessions")


# --------------------------------------------------------------------------- memory


def descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _field(path: str, name: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory(root: int) -> dict[str, Any]:
    pids = descendants(root)
    return {"processes": len(pids),
            "rss_mb": mb(sum(_field(f"/proc/{p}/status", "VmRSS:") for p in pids)),
            "pss_mb": mb(sum(_field(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)),
            "root_rss_mb": mb(_field(f"/proc/{root}/status", "VmRSS:"))}


def available() -> int:
    return _field("/proc/meminfo", "MemAvailable:")


# --------------------------------------------------------------------------- the servers


class OneHash(Passwords):
    """Every new mailbox gets the same (production-cost) hash of the one password:
    1,000 mailboxes are created without 1,000 argon2id runs; each user's first login
    still verifies one, and nothing is rehashed."""

    def __init__(self, password_hash: str) -> None:
        super().__init__()
        self.password_hash = password_hash

    async def hash(self, password: str) -> str:
        return self.password_hash


def prepare_ours(root: Path, users: int, sessions: int) -> tuple[dict[str, Any], int, int]:
    """The directory (``users`` mailboxes) and the resource host's spec."""

    async def add() -> None:
        store = await open_store(f"sqlite://{root}/cluster.db")
        try:
            d = Directory(store, passwords=OneHash(await Passwords().hash(PASSWORD)))
            await d.add_domain(DOMAIN)
            for start in range(0, users, 50):
                await asyncio.gather(*(d.add_mailbox(user(n), password=PASSWORD,
                                                     server="mail1")
                                       for n in range(start, min(users, start + 50))))
        finally:
            await store.close()

    asyncio.run(add())
    smtp, imap = free_port(ADDRESS), free_port(ADDRESS)
    data = root / "data"
    plain = {"allow_plaintext_on_loopback": True}
    resources: list[dict[str, Any]] = [
        *base_resources(ADDRESS, data),
        {"name": "smtp", "type": "smtp", "depends_on": ["store", "ip"], "properties": {
            "port": smtp, "submission_port": 0, "submissions_port": 0, **plain}},
        {"name": "imap4", "type": "imap4", "depends_on": ["store", "ip"],
         "properties": {"port": imap, "tls_port": 0, "max_connections": sessions + 2000,
                        **plain}},
    ]
    for r in resources:
        r.setdefault("depends_on", [])
        r["policy"] = {**FAST_POLICY, "pending_timeout": 120.0}
    spec = {"vs": "mail1", "node": "node1", "epoch": 1, "store": f"sqlite://{root}/cluster.db",
            "data_dir": str(data), "resources": resources, "offline_resources": []}
    return spec, smtp, imap


def dovecot_config(conf: str, sessions: int) -> str:
    """The reference configuration, its limits raised for ``sessions`` sessions."""
    conf = conf.replace("service imap {\n  process_limit = 64",
                        f"service imap {{\n  process_limit = {sessions + 1000}")
    conf = conf.replace("service imap-login {\n",
                        "service imap-login {\n  service_count = 0\n  process_min_avail = 2\n"
                        "  vsz_limit = 1G\n")
    return conf + f"default_client_limit = {sessions + 2000}\n"


# --------------------------------------------------------------------------- the client


@dataclass
class Target:
    kind: str  # "clustermail" or "dovecot"
    host: str
    imap: int
    smtp: int  # 0: deliveries by APPEND
    server_pid: int  # the process tree whose memory is measured
    sessions: int
    users: int
    login_rate: float
    seconds: float
    deliveries: int
    memory_floor: int = 0


@dataclass
class Wakes:
    from_250_ms: list[float] = field(default_factory=list)
    from_data_ms: list[float] = field(default_factory=list)
    missed: int = 0
    delivery_errors: int = 0


class Session(asyncio.Protocol):
    """One IMAP connection, line by line, without a task of its own: a 10,000-session
    client must cost the server's side, not its own."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.waiting: tuple[bytes, asyncio.Future[bytes]] | None = None
        self.idling = False
        self.woke: float | None = None
        self.on_wake: asyncio.Event | None = None
        self.user = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\n")) >= 0:
            line, self.buffer = self.buffer[:end + 1], self.buffer[end + 1:]
            self.line(line)

    def line(self, line: bytes) -> None:
        if self.idling and line.startswith(b"* ") and line.endswith(b" EXISTS\r\n"):
            if self.woke is None:
                self.woke = time.perf_counter()
                if self.on_wake is not None:
                    self.on_wake.set()
            return
        if self.waiting is not None and line.startswith(self.waiting[0]):
            future = self.waiting[1]
            self.waiting = None
            if not future.done():
                future.set_result(line)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiting is not None and not self.waiting[1].done():
            self.waiting[1].set_exception(ConnectionResetError("closed by the server"))

    async def expect(self, prefix: bytes, send: bytes = b"", timeout: float = 30) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting = (prefix, future)
        if send:
            if self.transport is None:
                raise ConnectionResetError("closed by the server")
            self.transport.write(send)
        async with asyncio.timeout(timeout):
            return await future

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def address(i: int, sessions: int) -> str:
    """Session ``i``'s client address (127.1.0.1, …): PER_ADDRESS sessions each."""
    a = i % max(1, math.ceil(sessions / PER_ADDRESS))
    return f"127.1.{a // 250}.{a % 250 + 1}"


class LoginRefused(ConnectionError):
    """The server answered LOGIN with NO (``busy``: NO [UNAVAILABLE], a full queue)."""

    def __init__(self, reply: bytes) -> None:
        super().__init__(f"login refused: {reply[:80]!r}")
        self.busy = b"[UNAVAILABLE]" in reply


async def login(t: Target, source: str, name: str, session: Session | None = None) -> Session:
    loop = asyncio.get_running_loop()
    _, s = await loop.create_connection(lambda: session or Session(), t.host, t.imap,
                                        local_addr=(source, 0))
    try:
        await s.expect(b"* OK")
        reply = await s.expect(b"L ", f'L LOGIN "{name}" "{PASSWORD}"\r\n'.encode())
        if not reply.startswith(b"L OK"):
            raise LoginRefused(reply)
    except BaseException:
        s.close()
        raise
    return s


async def open_idle(t: Target, i: int, per_user: int) -> Session:
    """Session ``i``: LOGIN, SELECT INBOX, IDLE (retried: a busy login is answered NO)."""
    for attempt in range(10):
        try:
            s = await login(t, address(i, t.sessions), user(i // per_user))
            try:
                reply = await s.expect(b"S ", b"S SELECT INBOX\r\n")
                if not reply.startswith(b"S OK"):
                    raise ConnectionError(f"SELECT: {reply[:80]!r}")
                await s.expect(b"+", b"I IDLE\r\n")
                s.idling, s.user = True, i // per_user
                return s
            except BaseException:
                s.close()
                raise
        except (OSError, TimeoutError, ConnectionError):
            if attempt == 9:
                raise
            await asyncio.sleep(0.5 * (attempt + 1))  # "busy" is answered after 1 s
    raise AssertionError("unreachable")


MESSAGE = (b"From: sender@elsewhere.test\r\nSubject: wake up\r\n"
           b"Message-ID: <%d@idle.test>\r\n\r\nA message for the idle sessions.\r\n")


async def deliver_smtp(t: Target, smtp: Line, to: str, n: int) -> tuple[float, float]:
    """One message over an open SMTP session: (time DATA ended, time of the 250)."""
    for cmd in (b"MAIL FROM:<sender@elsewhere.test>", f"RCPT TO:<{to}>".encode(), b"DATA"):
        await smtp.send(cmd + b"\r\n")
        reply = await smtp.smtp_reply(timeout=10)
        if reply[:1] not in (b"2", b"3"):
            raise ConnectionError(f"{cmd!r}: {reply!r}")
    await smtp.send(MESSAGE % n + b".\r\n")
    sent = time.perf_counter()
    reply = await smtp.smtp_reply(timeout=30)
    if not reply.startswith(b"250"):
        raise ConnectionError(f"end of DATA: {reply!r}")
    return sent, time.perf_counter()


async def deliver_append(t: Target, to: str, n: int) -> tuple[float, float]:
    """Dovecot: an APPEND from another session of the user (opened first, untimed)."""
    s = await login(t, DELIVERER, to)
    try:
        body = MESSAGE % n
        s.transport.write(b"A APPEND INBOX {%d+}\r\n" % len(body) + body)  # type: ignore[union-attr]
        sent = time.perf_counter()
        reply = await s.expect(b"A ", b"\r\n")
        if not reply.startswith(b"A OK"):
            raise ConnectionError(f"APPEND: {reply!r}")
        return sent, time.perf_counter()
    finally:
        s.close()


async def deliveries(t: Target, by_user: dict[int, list[Session]], count: int,
                     offset: int) -> Wakes:
    wakes = Wakes()
    smtp: Line | None = None
    if t.smtp:
        smtp = await Line.open(t.smtp, DELIVERER, timeout=10)
        smtp.reader._limit = 1 << 16  # type: ignore[attr-defined]  # (Line's host is ours)
        await smtp.smtp_reply()
        await smtp.send(b"EHLO deliverer.test\r\n")
        await smtp.smtp_reply()
    users = sorted(by_user)
    try:
        for d in range(count):
            u = users[(offset + d * 7) % len(users)]
            sessions = by_user[u]
            event = asyncio.Event()
            for s in sessions:
                s.woke, s.on_wake = None, event
            try:
                if smtp is not None:
                    sent, ok = await deliver_smtp(t, smtp, user(u), offset + d)
                else:
                    sent, ok = await deliver_append(t, user(u), offset + d)
            except (OSError, TimeoutError, ConnectionError) as exc:
                print(f"delivery failed: {exc}", file=sys.stderr)
                wakes.delivery_errors += 1
                continue
            deadline = time.perf_counter() + WAKE_TIMEOUT
            while any(s.woke is None for s in sessions) and time.perf_counter() < deadline:
                event.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(deadline - time.perf_counter()):
                        await event.wait()
            for s in sessions:
                if s.woke is None:
                    wakes.missed += 1
                else:
                    wakes.from_250_ms.append(max(0.0, s.woke - ok) * 1000)
                    wakes.from_data_ms.append((s.woke - sent) * 1000)
                s.on_wake = None
            await asyncio.sleep(0.02)
    finally:
        if smtp is not None:
            smtp.close()
    return wakes


# --------------------------------------------------------------------------- logins


def login_load(t: Target, per_user: int, stop: str) -> dict[str, Any]:
    """In a process of its own: returning users log in (and out) at ``t.login_rate``/s,
    open loop, for ``t.seconds`` and until the file ``stop`` exists (the deliveries
    measured under this load are done)."""

    async def run() -> dict[str, Any]:
        latencies: list[float] = []
        failures: dict[str, int] = {}
        refused = {"refused": 0, "refused_busy": 0}

        async def once(n: int) -> None:
            u = n % t.users
            started = time.perf_counter()
            try:
                s = await login(t, address(u * per_user + n % per_user, t.sessions), user(u))
                latencies.append((time.perf_counter() - started) * 1000)
                s.close()
            except (OSError, TimeoutError, ConnectionError) as exc:
                if isinstance(exc, LoginRefused):
                    refused["refused"] += 1
                    refused["refused_busy"] += exc.busy
                key = f"{type(exc).__name__}: {str(exc)[:60]}"
                failures[key] = failures.get(key, 0) + 1

        started = time.perf_counter()
        tasks = []
        n = 0
        while n < t.seconds * t.login_rate or not Path(stop).exists():
            delay = started + n / t.login_rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(once(n)))
            n += 1
        total = n
        issued = time.perf_counter() - started
        await asyncio.wait(tasks, timeout=60)
        elapsed = time.perf_counter() - started
        return {"attempted": total, "succeeded": len(latencies),
                "offered_per_s": round(total / issued, 1) if issued else 0.0,
                "achieved_per_s": round(len(latencies) / elapsed, 1),
                "latency_ms": summary(latencies), **refused, "failures": failures}

    return asyncio.run(run())


# --------------------------------------------------------------------------- one server


def client(t: Target) -> dict[str, Any]:
    """Everything a client does against one server (in a process of its own)."""
    return asyncio.run(client_async(t))


async def client_async(t: Target) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": t.kind, "sessions_wanted": t.sessions,
                           "load_average_1min_start": round(os.getloadavg()[0], 1)}
    per_user = max(1, t.sessions // t.users)
    out["memory_before"] = memory(t.server_pid)
    sessions: list[Session] = []
    stopped = ""
    started = time.perf_counter()

    async def one(i: int, gate: asyncio.Semaphore) -> None:
        async with gate:
            sessions.append(await open_idle(t, i, per_user))

    # Each user's first session first, 8 at a time (argon2id each; the throttle
    # refuses more unfamiliar logins at once), then the others (login cache hits).
    firsts = list(range(0, t.sessions, per_user))
    order = firsts + [i for i in range(t.sessions) if i % per_user]
    # In steps, so a server that cannot hold them (or a machine out of memory) stops it.
    step = 500
    for first in range(0, t.sessions, step):
        if t.memory_floor and available() < t.memory_floor:
            stopped = f"MemAvailable under {mb(t.memory_floor)} MB"
            break
        gate = asyncio.Semaphore(8 if first < len(firsts) else 64)
        got = await asyncio.gather(*(one(i, gate) for i in order[first:first + step]),
                                   return_exceptions=True)
        errors = [g for g in got if isinstance(g, BaseException)]
        if errors:
            stopped = f"{len(errors)} sessions failed to open: {errors[0]!r}"[:300]
            break
        print(f"{t.kind}: {len(sessions)} sessions idling", file=sys.stderr, flush=True)
    out["open_s"] = round(time.perf_counter() - started, 1)
    out["sessions_idling"] = len(sessions)
    out["stopped_early"] = stopped
    await asyncio.sleep(3.0)  # let the server settle (freed login buffers, etc.)
    out["memory_idling"] = memory(t.server_pid)
    out["client_rss_mb"] = mb(_field("/proc/self/status", "VmRSS:"))
    out["load_average_1min"] = round(os.getloadavg()[0], 1)
    by_user: dict[int, list[Session]] = {}
    for s in sessions:
        by_user.setdefault(s.user, []).append(s)

    quiet = await deliveries(t, by_user, t.deliveries, 0)
    out["wake_quiet"] = wake_summary(quiet)
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="idle-") as tmp, \
            ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        stop = Path(tmp) / "stop"
        loading = loop.run_in_executor(pool, login_load, t, per_user, str(stop))
        await asyncio.sleep(min(2.0, t.seconds / 4))  # the logins under way first
        peak = memory(t.server_pid)
        try:
            busy = await deliveries(t, by_user, t.deliveries, t.deliveries)
        finally:
            stop.touch()  # else the login process runs on, and this one waits for it
        out["memory_under_logins"] = memory(t.server_pid)
        out["memory_under_logins_start"] = peak
        out["logins"] = await loading
    out["wake_under_logins"] = wake_summary(busy)
    out["load_average_1min_after"] = round(os.getloadavg()[0], 1)
    out["sessions_alive_at_end"] = sum(1 for s in sessions if s.transport is not None)
    for s in sessions:
        s.close()
    return out


def wake_summary(w: Wakes) -> dict[str, Any]:
    return {"from_250_ms": summary(w.from_250_ms), "from_end_of_data_ms": summary(w.from_data_ms),
            "missed": w.missed, "delivery_errors": w.delivery_errors}


def in_process(t: Target) -> dict[str, Any]:
    """The client in a process of its own, so its CPU is not mixed with the caller's."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(client, t).result()


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="idle-") as tmp:
        root = Path(tmp)
        spec, smtp, imap = prepare_ours(root, args.users, args.sessions)
        host = Host(spec, root / "host.stderr")
        try:
            for name in ("smtp", "imap4"):
                host.events.resource(name, "online", timeout=120)
            t = Target("clustermail", ADDRESS, imap, smtp, host.pid, args.sessions, args.users,
                       args.login_rate, args.seconds, args.deliveries)
            result = in_process(t)
            result["host_alive"] = host.proc.poll() is None
            return result
        finally:
            host.kill()


def run_dovecot(args: argparse.Namespace, sessions: int) -> dict[str, Any]:
    from tests.mail.imap.reference.dovecot import Dovecot

    server = Dovecot([user(n) for n in range(args.users)], PASSWORD)
    conf = server.root / "dovecot.conf"
    conf.write_text(dovecot_config(conf.read_text(), sessions))
    # Each idling imap process holds an inotify instance; past the per-user limit (128
    # by default) Dovecot falls back to polling every 30 s. Raised for the run.
    instances = Path("/proc/sys/fs/inotify/max_user_instances")
    before = instances.read_text().strip()
    note = f"fs.inotify.max_user_instances {before}"
    if int(before) < sessions + 1000:
        try:
            instances.write_text(str(sessions + 1000))
            note += f", raised to {sessions + 1000} for the run"
        except OSError as exc:
            note += f", could not be raised ({exc}): IDLE falls back to 30 s polling"
    try:
        server.start()
        master = int((server.root / "run" / "master.pid").read_text().strip())
        t = Target("dovecot", "127.0.0.1", server.port, 0, master, sessions, args.users,
                   args.login_rate, args.seconds, args.deliveries, MEMORY_FLOOR)
        result = in_process(t)
        result["inotify"] = note
        return result
    finally:
        server.cleanup()
        if instances.read_text().strip() != before:
            with contextlib.suppress(OSError):
                instances.write_text(before)


# --------------------------------------------------------------------------- report


def report(results: dict[str, Any]) -> str:
    rows = ["| | load (1 min) before → after | sessions idling | server RSS / Pss MB "
            "(processes) | wake-up p50 / p99 / max ms (quiet) | wake-up p50 / p99 / max ms "
            "(logins) | logins offered → done /s, refused (busy), p99 ms |",
            "|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        m = r["memory_idling"]

        def w(key: str, r: dict[str, Any] = r) -> str:
            s = r[key]["from_250_ms"]
            missed = f", {r[key]['missed']} missed" if r[key]["missed"] else ""
            return f"{s['p50']} / {s['p99']} / {s['max']}{missed}" if s.get("n") else "—"

        lg = r["logins"]
        load = (f"{r.get('load_average_1min_start', r.get('load_average_1min', '—'))} → "
                f"{r.get('load_average_1min_after', '—')}")
        rows.append(f"| {r['kind']} | {load} | {r['sessions_idling']:,} | "
                    f"{m['rss_mb']:,} / {m['pss_mb']:,} ({m['processes']:,}) | "
                    f"{w('wake_quiet')} | {w('wake_under_logins')} | "
                    f"{lg['offered_per_s']} → {lg['achieved_per_s']}, "
                    f"{lg.get('refused', '—')} ({lg.get('refused_busy', '—')}), "
                    f"{lg['latency_ms'].get('p99', '—')} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--login-rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="how long the background logins run at least (and until the "
                             "deliveries under them are done)")
    parser.add_argument("--deliveries", type=int, default=100,
                        help="deliveries measured on the quiet server, and again under logins")
    parser.add_argument("--dovecot-sessions", type=int, default=None,
                        help="sessions against Dovecot (default: --sessions)")
    parser.add_argument("--no-dovecot", action="store_true")
    parser.add_argument("--no-ours", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "idle.json")
    args = parser.parse_args()
    if args.sessions < 1 or args.users < 1 or args.sessions % args.users:
        parser.error("--sessions must be a positive multiple of --users")
    if args.login_rate <= 0 or args.seconds <= 0 or args.deliveries < 1:
        parser.error("--login-rate and --seconds must be positive, --deliveries at least 1")
    wanted = max(args.sessions, args.dovecot_sessions or 0)
    nofile, note = raise_nofile(wanted + 1000)
    print(note, file=sys.stderr)
    if nofile < wanted + 1000:
        args.sessions = max(1, nofile - 1000)
        print(f"sessions cut to {args.sessions}", file=sys.stderr)
    results: dict[str, Any] = {"generated": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "params": {k: v for k, v in vars(args).items() if k != "out"},
                               "nofile": note, "cpus": os.cpu_count(), "runs": []}
    results["params"]["out"] = str(args.out)
    if not args.no_ours:
        print("clustermail …", file=sys.stderr, flush=True)
        results["runs"].append(run_ours(args))
        print(json.dumps(results["runs"][-1]), file=sys.stderr, flush=True)
    if not args.no_dovecot:
        print("dovecot …", file=sys.stderr, flush=True)
        results["runs"].append(run_dovecot(args, args.dovecot_sessions or args.sessions))
        print(json.dumps(results["runs"][-1]), file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))


if __name__ == "__main__":
    main()
