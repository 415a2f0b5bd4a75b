"""A local cluster of real `clustermail node run` processes, for end-to-end tests.

Each test gets its own loopback addresses (127.X.Y.11-13, X and Y random)
and a free port, its own store and data directory, and every process it
starts is stopped by PID when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from clustermail.admin.status import build_status
from clustermail.cluster.view import read_view
from clustermail.coord import Store, open_store

ROOT = Path(__file__).resolve().parents[2]


def free_addresses() -> tuple[str, int]:
    """A /24 of loopback addresses nobody else uses, and a port free on .11 of it."""
    for _ in range(50):
        base = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
        port = random.randint(20000, 40000)
        try:
            for host in (11, 12, 13):
                with socket.socket() as s:
                    s.bind((f"{base}.{host}", port))
        except OSError:
            continue
        return base, port
    raise RuntimeError("no free loopback address/port found")


def cluster_toml(
    base: str,
    port: int,
    *,
    nodes: int = 4,
    servers: int = 3,
    timing: str = "default",
    failback: str = "never",
    extra_resource: str = "",
    banner_policy: str = "",
    vs_extra: str = "",
    mail: bool = False,
    banner_after: tuple[str, ...] = (),
) -> str:
    """The layout of the end-to-end tests: ``nodes`` nodes and ``servers`` virtual servers
    with an address, a network name, a disk and the banner (with ``mail``, also a mail
    store, SMTP, IMAP4 and POP3). ``banner_after``: resources the banner also depends on
    (a group comes online in dependency order, the banner otherwise before the mail)."""
    lines = ["[cluster]", 'placement = "active-passive"', f'timing = "{timing}"', ""]
    for n in range(1, nodes + 1):
        lines.append(f"[nodes.node{n}]")
    for v in range(1, servers + 1):
        addr = f"{base}.{10 + v}"
        lines += [
            "",
            f"[virtual_servers.mail{v}]",
            f'preferred_owners = ["node{v}", "node{nodes}"]',
            f'failback = "{failback}"',
            vs_extra,
            f"[virtual_servers.mail{v}.resources.ip]",
            'type = "ip_address"',
            f"properties = {{ address = \"{addr}\" }}",
            f"[virtual_servers.mail{v}.resources.name]",
            'type = "network_name"',
            'depends_on = ["ip"]',
            f'properties = {{ name = "mail{v}-{base}" }}',
            f"[virtual_servers.mail{v}.resources.disk]",
            'type = "disk"',
            f'properties = {{ path = "{{data}}/disks/mail{v}" }}',
            f"[virtual_servers.mail{v}.resources.banner]",
            'type = "process"',
            "depends_on = " + json.dumps(["ip", "disk", *banner_after]),
            "quick_check_interval = 0.5",
            banner_policy,
            f"[virtual_servers.mail{v}.resources.banner.properties]",
            'command = ["{python}", "-m", "clustermail.cluster.banner", "--address", '
            f'"{addr}", "--port", "{port}", "--name", "mail{v}"]',
            f'tcp_check = "{addr}:{port}"',
            extra_resource.format(v=v, addr=addr, port=port),
        ]
        if mail:
            lines += mail_resources(v, port)
    return "\n".join(lines) + "\n"


#: Offsets from the test's base port of the mail listeners (same on every VS address).
MAIL_PORTS = {"smtp": 1, "submission": 2, "submissions": 3, "imap": 4, "imaps": 5,
              "pop3": 6, "pop3s": 7}


def mail_port(base_port: int, name: str) -> int:
    return base_port + MAIL_PORTS[name]


def mail_resources(v: int, port: int) -> list[str]:
    p = {name: mail_port(port, name) for name in MAIL_PORTS}
    return [
        f"[virtual_servers.mail{v}.resources.store]",
        'type = "mail_store"',
        'depends_on = ["disk"]',
        f"[virtual_servers.mail{v}.resources.smtp]",
        'type = "smtp"',
        'depends_on = ["store", "ip", "name"]',
        f"properties = {{ port = {p['smtp']}, submission_port = {p['submission']}, "
        f"submissions_port = {p['submissions']}, allow_plaintext_on_loopback = true }}",
        f"[virtual_servers.mail{v}.resources.imap4]",
        'type = "imap4"',
        'depends_on = ["store", "ip"]',
        f"properties = {{ port = {p['imap']}, tls_port = {p['imaps']}, "
        "allow_plaintext_on_loopback = true }",
        f"[virtual_servers.mail{v}.resources.pop3]",
        'type = "pop3"',
        'depends_on = ["store", "ip"]',
        f"properties = {{ port = {p['pop3']}, tls_port = {p['pop3s']}, "
        "allow_plaintext_on_loopback = true }",
    ]


def banner(address: str, port: int, timeout: float = 1.0) -> str | None:
    """The first line the service at address:port sends, or None if nothing answers."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s.makefile("rb").readline().decode(errors="replace").strip() or None
    except OSError:
        return None


def _file_id(path: Path) -> str | None:
    """``path`` as /proc/locks names a file (``MAJOR:MINOR:INODE``), None if it is gone."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"


def sqlite_write_locks(pid: int, db: Path) -> list[str]:
    """The write locks ``pid`` holds on the SQLite file ``db`` or its ``-shm`` (a write
    transaction, a checkpoint, a WAL restart), from /proc/locks."""
    files = {_file_id(db), _file_id(Path(f"{db}-shm"))} - {None}
    held = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        # "N: POSIX ADVISORY WRITE PID MAJ:MIN:INODE START END"; "N: -> ..." waits for one.
        if (len(fields) >= 6 and fields[1] != "->" and fields[3] == "WRITE"
                and fields[4] == str(pid) and fields[5] in files):
            held.append(line)
    return held


def _wait_stopped(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} did not stop within {timeout} s of SIGSTOP")


def freeze_outside_writes(pid: int, db: Path, attempts: int = 500) -> None:
    """SIGSTOP of ``pid`` at a moment it holds no write lock on the SQLite store ``db``.
    A process frozen inside a write holds the file's lock, and that stalls every node
    (docs/architecture.md, "A stalled store fences everyone"): a frozen *node* is the
    subject of the tests that call this, so a freeze that caught a write is undone
    (SIGCONT) and tried again a few milliseconds later."""
    for _ in range(attempts):
        os.kill(pid, signal.SIGSTOP)
        _wait_stopped(pid)  # the signal is delivered when it is next scheduled
        if not sqlite_write_locks(pid, db):
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError(f"process {pid} held a write lock on {db} at every one of "
                         f"{attempts} tries")


class LocalCluster:
    def __init__(self, tmp: Path, store_url: str, config_toml: str,
                 env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        #: The environment of every process started (e.g. with test resource types).
        self.env = env
        self.data = tmp / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.store_url = store_url
        self.config_path = tmp / "cluster.toml"
        self.config_path.write_text(config_toml)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.store: Store | None = None
        self.host_pids: set[int] = set()
        self.expected_exits: set[str] = set()

    async def __aenter__(self) -> LocalCluster:
        self.store = await open_store(self.store_url)
        out = self.cli("config", "apply", str(self.config_path))
        assert out.returncode == 0, out.stderr
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clustermail", *args, "--store", self.store_url,
             "--data", str(self.data)],
            cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=self.env,
        )

    def start_node(self, name: str, wrap: list[str] | None = None) -> int:
        """Starts a node agent; ``wrap`` runs it under a command (``ip netns exec NS``)."""
        log = open(self.data / f"{name}.agent.log", "ab")  # noqa: SIM115 - child owns it
        proc = subprocess.Popen(
            [*(wrap or []), sys.executable, "-m", "clustermail", "node", "run",
             "--store", self.store_url,
             "--name", name, "--data", str(self.data)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env,
        )
        log.close()
        self.procs[name] = proc
        self.expected_exits.discard(name)
        return proc.pid

    def start_all(self, count: int = 4) -> None:
        for n in range(1, count + 1):
            self.start_node(f"node{n}")

    def signal_node(self, name: str, sig: int) -> None:
        """``sig`` to the node's agent; SIGSTOP lands outside a write to a SQLite store."""
        pid = self.procs[name].pid
        if sig == signal.SIGSTOP and self.store_url.startswith("sqlite://"):
            freeze_outside_writes(pid, Path(self.store_url.removeprefix("sqlite://")))
        else:
            os.kill(pid, sig)

    def kill_node(self, name: str) -> None:
        """kill -9 of the node's agent: its resource hosts die with it (parent death)."""
        self.expected_exits.add(name)
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_node(self, name: str, timeout: float = 60) -> int:
        self.expected_exits.add(name)
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    async def status(self) -> dict[str, Any]:
        assert self.store is not None
        status = build_status(await read_view(self.store))
        for vs in status["virtual_servers"]:
            if vs["pid"]:
                self.host_pids.add(int(vs["pid"]))
        return status

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0,
        what: str = "condition",
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = await self.status()
            if predicate(status):
                return status
            self.check_alive()
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; last status:\n"
                             + json.dumps(status, indent=1))

    def check_alive(self) -> None:
        """Fails at once, with its log, if a node process died that should not have."""
        for name, proc in self.procs.items():
            if name not in self.expected_exits and proc.poll() is not None:
                log = (self.data / f"{name}.agent.log").read_text(errors="replace")
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{log[-3000:]}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.status()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        for pid in self.host_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.store is not None:
            await self.store.close()


def vs_of(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in status["virtual_servers"] if v["name"] == name)


def owners(status: dict[str, Any]) -> dict[str, str | None]:
    return {v["name"]: (v["owner"] if v["state"] == "online" else None)
            for v in status["virtual_servers"]}


#: Where the default layout puts the virtual servers, and one mailbox on each.
SEED = {"mail1": "node1", "mail2": "node2", "mail3": "node3"}
MAIL_USERS = {"mail1": "alice", "mail2": "bob", "mail3": "carol"}
MAIL_PASSWORD = "correct horse battery"


@contextlib.asynccontextmanager
async def mail_cluster(tmp: Path) -> AsyncIterator[tuple[LocalCluster, str, int]]:
    """Four nodes, mail1-3 with every mail protocol, in their seed layout, with
    alice@/bob@/carol@example.test on mail1/2/3: (cluster, address base, base port)."""
    base, port = free_addresses()
    async with LocalCluster(tmp, f"sqlite://{tmp}/cluster.db",
                            cluster_toml(base, port, mail=True)) as c:
        c.start_all()
        await c.wait_for(lambda s: owners(s) == SEED, timeout=60, what="the initial layout")
        assert c.store is not None
        await add_mail_users(c.store, MAIL_USERS, MAIL_PASSWORD)
        yield c, base, port


async def add_mail_users(store: Store, users: dict[str, str], password: str) -> None:
    """Creates example.test and one mailbox per virtual server: {vs: local part}."""
    from clustermail.mail.directory import Directory

    directory = Directory(store)
    try:
        await directory.add_domain("example.test")
        for vs, user in users.items():
            await directory.add_mailbox(f"{user}@example.test", password=password, server=vs)
    finally:
        await directory.close()


async def wait_for_imap_login(address: str, port: int, user: str, password: str,
                              timeout: float = 30) -> None:
    """Until `user` can log in over IMAP: a new mailbox appears in its virtual server's
    database once that server's mail_store sees the directory entry."""
    import imaplib

    def attempt() -> bool:
        try:
            with imaplib.IMAP4(address, port, timeout=5) as imap:
                imap.login(user, password)
                return imap.select("INBOX")[0] == "OK"
        except (OSError, imaplib.IMAP4.error):
            return False

    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(attempt):
        if time.monotonic() > deadline:
            raise AssertionError(f"{user} cannot log in at {address}:{port}")
        await asyncio.sleep(0.1)
