"""Real etcd members on loopback for tests.

Starts ``etcd`` (Debian's 3.4 server, see scripts/install-system-deps.sh) on free
ports with data directories under a caller-given directory, waits for
``/health``, and stops members by PID. Members may serve clients over TLS
(server certificate, trusted CA, client certificates required) with health and
metrics on a separate plain-HTTP port, and may have etcd's authentication
enabled (through ``etcdctl``). Knows nothing of clustermail.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_ports

HOST = "127.0.0.1"
#: Bounds for waiting on etcd; generous for a loaded 2-core CI machine.
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


class EtcdStartError(RuntimeError):
    """etcd did not become healthy (the message includes the tail of its log)."""


@dataclass(frozen=True)
class EtcdTLS:
    """TLS for the client port: the members' certificate and the CA they trust
    for client certificates, plus a client certificate for ``etcdctl``."""

    cert_file: Path
    key_file: Path
    trusted_ca_file: Path
    #: Refuse clients without a certificate signed by ``trusted_ca_file``.
    client_cert_auth: bool = True
    #: etcdctl's client certificate (its CN is etcdctl's user under auth).
    admin_cert_file: Path | None = None
    admin_key_file: Path | None = None


def etcdctl_binary() -> str:
    path = shutil.which("etcdctl")
    if path is None:
        raise EtcdStartError("no etcdctl binary on PATH: apt-get install -y etcd-client")
    return path


def etcd_binary() -> str:
    path = os.environ.get("CLUSTERMAIL_ETCD") or shutil.which("etcd")
    if path is None:
        raise EtcdStartError(
            "no etcd binary on PATH: run ./scripts/install-system-deps.sh "
            "(apt-get install -y etcd-server etcd-client)"
        )
    return path


@dataclass
class _Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    #: With TLS: /health and /metrics on their own plain port.
    metrics_port: int | None = None

    @property
    def client_url(self) -> str:
        scheme = "http" if self.metrics_port is None else "https"
        return f"{scheme}://{HOST}:{self.client_port}"

    @property
    def metrics_url(self) -> str:
        if self.metrics_port is None:
            return self.client_url
        return f"http://{HOST}:{self.metrics_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"


def _http_get(url: str, timeout: float = 1.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body: bytes = resp.read()
            return body
    except (OSError, urllib.error.URLError):
        return None


def _all_threads_stopped(pid: int) -> bool:
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            # /proc/PID/task/TID/stat: "TID (comm) STATE ..."; comm may hold spaces
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state not in ("T", "t"):
                return False
    except (OSError, IndexError):
        return False
    return True


class EtcdCluster:
    """One or more etcd members on loopback, owned by the test that started them."""

    def __init__(self, base_dir: Path, members: list[_Member], *, heartbeat: int,
                 election: int, token: str, tls: EtcdTLS | None = None) -> None:
        self._base_dir = base_dir
        self._members = members
        self._heartbeat = heartbeat
        self._election = election
        self._token = token
        self.tls = tls

    # ------------------------------------------------------------------ start

    @classmethod
    def start(cls, base_dir: Path, members: int = 1, *, fast: bool = True,
              tls: EtcdTLS | None = None) -> EtcdCluster:
        """Starts ``members`` etcd members and waits until the cluster is healthy.

        ``fast`` shortens heartbeat/election timeouts so that tests of leader
        loss and lease expiry run quickly (10/100 ms alone, 50/500 ms for a quorum).
        With ``tls``, clients connect over TLS (peers still talk plain HTTP).
        """
        if members < 1:
            raise ValueError("an etcd cluster needs at least one member")
        if fast:
            heartbeat, election = (10, 100) if members == 1 else (50, 500)
        else:
            heartbeat, election = 100, 1000
        last_error: Exception | None = None
        # A port found free may be taken before etcd binds it: retry on fresh ports.
        for attempt in range(3):
            per = 2 if tls is None else 3
            ports = free_ports(per * members)
            root = base_dir / f"etcd-{os.getpid()}-{time.monotonic_ns()}-{attempt}"
            root.mkdir(parents=True)
            ms = [
                _Member(
                    name=f"m{i}",
                    client_port=ports[per * i],
                    peer_port=ports[per * i + 1],
                    data_dir=root / f"m{i}.etcd",
                    log_path=root / f"m{i}.log",
                    metrics_port=None if tls is None else ports[per * i + 2],
                )
                for i in range(members)
            ]
            cluster = cls(base_dir, ms, heartbeat=heartbeat, election=election,
                          token=root.name, tls=tls)
            try:
                for i in range(members):
                    cluster._spawn(i, new=True)
                cluster.wait_healthy()
                return cluster
            except EtcdStartError as exc:
                last_error = exc
                cluster.stop()
        raise EtcdStartError(f"etcd did not start after 3 attempts: {last_error}")

    def _spawn(self, index: int, *, new: bool) -> None:
        m = self._members[index]
        initial_cluster = ",".join(f"{x.name}={x.peer_url}" for x in self._members)
        args = [
            etcd_binary(),
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url,
            "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial_cluster,
            "--initial-cluster-token", self._token,
            "--initial-cluster-state", "new" if new else "existing",
            "--heartbeat-interval", str(self._heartbeat),
            "--election-timeout", str(self._election),
            "--logger", "zap",
            "--log-outputs", "stderr",
            "--log-level", "warn",
        ]
        if self.tls is not None:
            args += [
                "--cert-file", str(self.tls.cert_file),
                "--key-file", str(self.tls.key_file),
                "--trusted-ca-file", str(self.tls.trusted_ca_file),
                "--listen-metrics-urls", m.metrics_url,
            ]
            if self.tls.client_cert_auth:
                args.append("--client-cert-auth")
        log = m.log_path.open("ab")
        try:
            m.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a ^C in pytest must not reach etcd first
            )
        finally:
            log.close()

    # ------------------------------------------------------------------ info

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [(HOST, m.client_port) for m in self._members]

    @property
    def url(self) -> str:
        """The store URL of every member (for a TLS cluster: without options)."""
        scheme = "etcd" if self.tls is None else "etcds"
        return f"{scheme}://" + ",".join(f"{h}:{p}" for h, p in self.endpoints)

    @property
    def pids(self) -> list[int]:
        return [m.proc.pid if m.proc is not None else -1 for m in self._members]

    def member_url(self, index: int) -> str:
        """A store URL naming only member ``index``."""
        return f"etcd://{HOST}:{self._members[index].client_port}"

    def is_running(self, index: int) -> bool:
        proc = self._members[index].proc
        return proc is not None and proc.poll() is None

    def log_tail(self, index: int, lines: int = 20) -> str:
        try:
            text = self._members[index].log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def healthy(self, index: int) -> bool:
        body = _http_get(self._members[index].metrics_url + "/health")
        if body is None:
            return False
        with contextlib.suppress(ValueError):
            return bool(json.loads(body).get("health") == "true")
        return False

    def wait_healthy(self, indexes: list[int] | None = None,
                     timeout: float = READY_TIMEOUT) -> None:
        """Waits until every running member (or ``indexes``) reports healthy."""
        todo = [i for i in (indexes if indexes is not None else range(len(self._members)))
                if self._members[i].proc is not None]
        deadline = time.monotonic() + timeout
        while todo:
            for i in list(todo):
                if not self.is_running(i):
                    raise EtcdStartError(f"etcd member {i} exited:\n{self.log_tail(i)}")
                if self.healthy(i):
                    todo.remove(i)
            if not todo:
                return
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- member {i}:\n{self.log_tail(i)}" for i in todo)
                raise EtcdStartError(f"etcd members {todo} not healthy after {timeout}s\n{tails}")
            time.sleep(0.02)

    def is_leader(self, index: int) -> bool:
        # The metrics endpoint shares the client port: no etcdctl needed.
        body = _http_get(self._members[index].metrics_url + "/metrics")
        if body is None:
            return False
        for line in body.decode(errors="replace").splitlines():
            if line.startswith("etcd_server_is_leader "):
                return line.split()[1] in ("1", "1.0")
        return False

    def leader_index(self, timeout: float = READY_TIMEOUT) -> int:
        """The index of the member that is leader now (waits for an election)."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(len(self._members)):
                if self.is_running(i) and self.is_leader(i):
                    return i
            if time.monotonic() > deadline:
                raise EtcdStartError(f"no etcd leader after {timeout}s")
            time.sleep(0.02)

    # ------------------------------------------------------------------ etcdctl

    def etcdctl(self, *args: str, stdin: str = "", user: str | None = None) -> str:
        """Runs ``etcdctl`` against every member (with the admin client
        certificate on a TLS cluster); returns its output, raises on failure."""
        cmd = [etcdctl_binary(), "--endpoints",
               ",".join(m.client_url for m in self._members), "--command-timeout", "10s"]
        if self.tls is not None:
            cmd += ["--cacert", str(self.tls.trusted_ca_file)]
            if self.tls.admin_cert_file is not None and self.tls.admin_key_file is not None:
                cmd += ["--cert", str(self.tls.admin_cert_file),
                        "--key", str(self.tls.admin_key_file)]
        if user is not None:
            cmd += ["--user", user]
        done = subprocess.run([*cmd, *args], input=stdin.encode(), capture_output=True,
                              timeout=READY_TIMEOUT, env={**os.environ, "ETCDCTL_API": "3"},
                              check=False)
        if done.returncode != 0:
            raise EtcdStartError(f"etcdctl {' '.join(args)} failed: "
                                 f"{done.stderr.decode(errors='replace').strip()}")
        return done.stdout.decode(errors="replace")

    def enable_auth(self, root_password: str) -> None:
        """Creates the root user (with the root role) and turns etcd's
        authentication on. After this, etcdctl needs ``user=`` (or, on a TLS
        cluster with client-cert-auth, an admin certificate with CN root)."""
        self.etcdctl("user", "add", "root", "--interactive=false", stdin=root_password + "\n")
        self.etcdctl("user", "grant-role", "root", "root")
        self.etcdctl("auth", "enable")

    # ------------------------------------------------------------------ stop

    def kill_member(self, index: int) -> None:
        """SIGKILL, as a crash: no clean shutdown."""
        self._signal_and_wait(index, signal.SIGKILL)

    def stop_member(self, index: int) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        self._signal_and_wait(index, signal.SIGTERM)

    def pause_member(self, index: int) -> None:
        """SIGSTOP: the member hangs with its sockets open, like a frozen machine."""
        proc = self._members[index].proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGSTOP)
        # kill() returns before every thread has stopped: wait until they have.
        deadline = time.monotonic() + STOP_TIMEOUT
        while not _all_threads_stopped(proc.pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd member {index} did not stop on SIGSTOP")
            time.sleep(0.005)

    def resume_member(self, index: int) -> None:
        proc = self._members[index].proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)

    def restart_member(self, index: int, *, wait: bool = True) -> None:
        """Starts a stopped member again on the same ports and data directory."""
        if self.is_running(index):
            raise RuntimeError(f"etcd member {index} is still running")
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            self._spawn(index, new=False)
            if not wait:
                return
            try:
                self.wait_healthy([index], timeout=max(0.1, deadline - time.monotonic()))
                return
            except EtcdStartError:
                # "address already in use" right after a stop: try again, bounded.
                if self.is_running(index) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _signal_and_wait(self, index: int, sig: signal.Signals) -> None:
        proc = self._members[index].proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
            os.kill(proc.pid, signal.SIGCONT)  # a paused member must see the signal
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """Stops every member, by PID (SIGTERM, then SIGKILL). Safe to call twice.

        Followers go first: a leader stopped together with its followers spends
        seconds trying to hand its leadership to one of them."""
        running = [i for i in range(len(self._members)) if self.is_running(i)]
        leaders = [i for i in running if len(running) > 1 and self.is_leader(i)]
        for group in ([i for i in running if i not in leaders], leaders):
            for i in group:
                proc = self._members[i].proc
                assert proc is not None
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                    os.kill(proc.pid, signal.SIGCONT)
            for i in group:
                if self._wait(i):
                    self._signal_and_wait(i, signal.SIGKILL)

    def _wait(self, index: int) -> bool:
        """Waits for a signalled member; True if it is still running after the bound."""
        proc = self._members[index].proc
        assert proc is not None
        try:
            proc.wait(timeout=STOP_TIMEOUT)
            return False
        except subprocess.TimeoutExpired:
            return True

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
