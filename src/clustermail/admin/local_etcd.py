"""`clustermail up --etcd`: a private 3-member etcd cluster on loopback.

The members listen on 127.0.0.1 only, on ports chosen once (the first free
ones from :data:`FIRST_PORT`) and kept in ``DATA/etcd/members.json``: their data
under ``DATA/etcd/mN`` (0700) names their peers' addresses, so a later
`up --etcd` on the same directory starts the same cluster on the same ports,
with the store's content (configuration, users, fencing epochs) as it was. The
preflight refuses when one of those ports is taken.

Each member runs under a keeper process (:mod:`clustermail.admin.local_etcd_keeper`)
that follows `up` like the node agents do: the members stop with the cluster
on Ctrl-C, SIGTERM and SIGHUP, and within seconds when `up` is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clustermail.admin import preflight
from clustermail.admin.errors import AdminError
from clustermail.cluster.proctree import ProcRef, descendants
from clustermail.private_files import append_private, make_private_dir, write_private_text

MEMBERS = 3
HOST = "127.0.0.1"
#: Ports are looked for from here (clear of etcd's usual 2379/2380 and of the
#: kernel's ephemeral range).
FIRST_PORT = 23800
LAST_PORT = 24799
#: Seconds the members get to become healthy.
READY_TIMEOUT = 60.0
#: Seconds a keeper gets to stop its member (it kills it after 5 s itself).
STOP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    client_port: int
    peer_port: int

    @property
    def client_url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"


@dataclass(frozen=True, slots=True)
class Plan:
    """The private cluster's members and token, as kept in ``DATA/etcd/members.json``."""

    token: str
    members: tuple[Member, ...]

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(f"{HOST}:{m.client_port}" for m in self.members)

    def endpoints(self) -> list[preflight.Endpoint]:
        return [preflight.Endpoint(HOST, port) for m in self.members
                for port in (m.client_port, m.peer_port)]

    def to_json(self) -> str:
        return json.dumps({"token": self.token, "members": [
            {"name": m.name, "client_port": m.client_port, "peer_port": m.peer_port}
            for m in self.members]}, indent=2) + "\n"


def folder(data_dir: Path) -> Path:
    return data_dir / "etcd"


def plan_path(data_dir: Path) -> Path:
    return folder(data_dir) / "members.json"


def load_or_plan(data_dir: Path) -> Plan:
    """The plan kept in the data directory, or a new one on free ports (not yet kept)."""
    path = plan_path(data_dir)
    if path.exists():
        try:
            data = json.loads(path.read_text())
            return Plan(str(data["token"]), tuple(
                Member(str(m["name"]), int(m["client_port"]), int(m["peer_port"]))
                for m in data["members"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AdminError(f"{path} is unreadable ({exc}); it names the private etcd "
                             f"cluster's ports: remove {folder(data_dir)} to start a new "
                             "(empty) one") from None
    ports = _free_ports(2 * MEMBERS)
    return Plan(f"clustermail-{secrets.token_hex(4)}", tuple(
        Member(f"m{i + 1}", ports[2 * i], ports[2 * i + 1]) for i in range(MEMBERS)))


def _free_ports(count: int) -> list[int]:
    found: list[int] = []
    for port in range(FIRST_PORT, LAST_PORT + 1):
        if not preflight.in_use(preflight.Endpoint(HOST, port)):
            found.append(port)
            if len(found) == count:
                return found
    raise AdminError(f"no {count} free ports on {HOST} between {FIRST_PORT} and {LAST_PORT} "
                     "for the private etcd cluster")


def etcd_binary() -> str:
    path = os.environ.get("CLUSTERMAIL_ETCD") or shutil.which("etcd")
    if path is None:
        raise AdminError("`up --etcd` needs the etcd server program, and there is none on "
                         "PATH: install it (Debian: apt-get install etcd-server) or set "
                         "CLUSTERMAIL_ETCD=/path/to/etcd")
    return path


def check(data_dir: Path, plan: Plan) -> str:
    """The preflight of `up --etcd`: the etcd program and the members' ports.
    Returns the etcd program's path."""
    binary = etcd_binary()
    preflight.check_endpoints(plan.endpoints(), f"use another --data directory (this one's "
                              f"private etcd cluster keeps its ports in {plan_path(data_dir)})")
    return binary


def member_argv(binary: str, data_dir: Path, plan: Plan, m: Member) -> list[str]:
    return [
        binary, "--name", m.name, "--data-dir", str(folder(data_dir).resolve() / m.name),
        "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
        "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
        "--initial-cluster", ",".join(f"{x.name}={x.peer_url}" for x in plan.members),
        "--initial-cluster-token", plan.token, "--initial-cluster-state", "new",
        "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
    ]


def _healthy(m: Member) -> bool:
    try:
        with urllib.request.urlopen(f"{m.client_url}/health", timeout=1) as resp:
            return b'"true"' in resp.read()
    except OSError:
        return False


class PrivateEtcd:
    """The running members (through their keepers), owned by one `up`."""

    def __init__(self, data_dir: Path, plan: Plan) -> None:
        self.data_dir = data_dir
        self.plan = plan
        self.keepers: list[subprocess.Popen[bytes]] = []

    def log_path(self, m: Member) -> Path:
        return self.data_dir / "logs" / f"etcd-{m.name}.log"

    def start(self, binary: str, owner: int) -> None:
        make_private_dir(folder(self.data_dir))
        write_private_text(plan_path(self.data_dir), self.plan.to_json())
        make_private_dir(self.data_dir / "logs")
        for m in self.plan.members:
            make_private_dir(folder(self.data_dir) / m.name)
            with os.fdopen(append_private(self.log_path(m)), "ab") as log:
                self.keepers.append(subprocess.Popen(
                    [sys.executable, "-m", "clustermail.admin.local_etcd_keeper",
                     "--stop-with", str(owner), "--data", str(self.data_dir.resolve()),
                     "--log", str(self.log_path(m).resolve()), "--",
                     *member_argv(binary, self.data_dir, self.plan, m)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    start_new_session=True,  # Ctrl-C reaches `up`, which stops them in order
                ))

    async def wait_healthy(self, say: Callable[[str], None]) -> None:
        started = time.monotonic()
        deadline = started + READY_TIMEOUT
        shown = -1
        while True:
            healthy = sum(await asyncio.gather(
                *(asyncio.to_thread(_healthy, m) for m in self.plan.members)))
            if healthy != shown:
                say(f"etcd members healthy: {healthy}/{len(self.plan.members)}")
                shown = healthy
            if healthy == len(self.plan.members):
                say(f"private etcd cluster ready in {time.monotonic() - started:.1f} s: "
                    f"--store {self.plan.url}")
                return
            for m, keeper in zip(self.plan.members, self.keepers, strict=True):
                if keeper.poll() is not None:
                    raise AdminError(f"etcd member {m.name} exited during start-up; see "
                                     f"{self.log_path(m)}")
            if time.monotonic() > deadline:
                raise AdminError(f"the private etcd cluster was not healthy within "
                                 f"{READY_TIMEOUT:g} s; see {self.data_dir / 'logs'}/etcd-*.log")
            await asyncio.sleep(0.2)

    def processes(self) -> list[ProcRef]:
        """The keepers and their etcd members."""
        pids = [p.pid for p in self.keepers if p.poll() is None]
        pids += [c for p in list(pids) for c in descendants(p)]
        return [r for p in pids if (r := ProcRef.of(p)) is not None]

    async def stop(self, say: Callable[[str], None]) -> None:
        """SIGTERM to every keeper (each stops its member); past :data:`STOP_TIMEOUT`,
        SIGKILL to whatever is left, by PID."""
        refs = self.processes()
        if not refs:
            return
        for keeper in self.keepers:
            if keeper.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    keeper.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and any(r.alive() for r in refs):
            for keeper in self.keepers:
                keeper.poll()
            await asyncio.sleep(0.05)
        left = [r for r in refs if r.alive()]
        for ref in left:
            say(f"etcd process {ref.pid} did not stop within {STOP_TIMEOUT:g} s: killing it")
            ref.kill(signal.SIGKILL, group=False)
        for keeper in self.keepers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                keeper.wait(1)
        say("private etcd cluster stopped.")
