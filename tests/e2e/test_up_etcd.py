"""`clustermail up` on etcd: ``--store etcd://…`` runs every node on that etcd (a real
one), ``--etcd`` starts a private 3-member etcd cluster that lives and dies with `up`,
later commands find the cluster through the data directory, and a store that does not
answer is refused in one line before anything starts."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clustermail.cluster.proctree import ProcRef, descendants
from tests.e2e.harness import cluster_toml, free_addresses
from tests.support.etcd_server import EtcdCluster
from tests.support.local_up import (
    cli,
    cluster_processes,
    kill_all,
    node_agents_on,
    read_until,
    start_up,
    stop_up,
    wait_all_gone,
)
from tests.support.ports import free_ports

pytestmark = pytest.mark.e2e

ONLINE = "virtual servers online: 3/3"


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    base, port = free_addresses()
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "cluster.toml").write_text(cluster_toml(base, port))
    yield data


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _status(data: Path, *extra: str) -> dict[str, object]:
    done = cli(data, "status", "--json", *extra)
    assert done.returncode == 0, done.stderr
    status: dict[str, object] = json.loads(done.stdout)
    return status


def _online(status: dict[str, object]) -> set[str]:
    servers = status["virtual_servers"]
    assert isinstance(servers, list)
    return {v["name"] for v in servers if v["state"] == "online"}


def test_up_runs_every_node_on_the_given_etcd(data: Path, tmp_path: Path) -> None:
    with EtcdCluster.start(tmp_path / "etcd", members=1) as etcd:
        up = start_up(data, "--store", etcd.url)
        procs: list[ProcRef] = []
        try:
            read_until(up, ONLINE)
            procs = cluster_processes(up, data)
            agents = node_agents_on(data)
            assert len(agents) == 4
            for pid in agents:
                argv = _cmdline(pid)
                assert argv[argv.index("--store") + 1] == etcd.url, argv
            assert not (data / "cluster.db").exists()
            # The etcd itself and the data directory (which recorded it) show one cluster.
            assert _online(_status(data, "--store", etcd.url)) == {"mail1", "mail2", "mail3"}
            assert _online(_status(data)) == {"mail1", "mail2", "mail3"}
        except BaseException:
            kill_all(procs)
            up.kill()
            up.wait()
            raise
        stop_up(up, procs, signal.SIGTERM)


def test_up_etcd_lives_and_dies_with_up(data: Path) -> None:
    # First start: Ctrl-C stops the nodes, then the private etcd members.
    up = start_up(data, "--etcd", new_session=True)
    procs: list[ProcRef] = []
    try:
        out = read_until(up, ONLINE)
        assert "etcd members healthy: 3/3" in out, out
        procs = cluster_processes(up, data)
        etcds = [p for p in descendants(up.pid) if Path(_cmdline(p)[0]).name == "etcd"]
        assert len(etcds) == 3, [_cmdline(p) for p in descendants(up.pid)]
        for pid in etcds:
            argv = _cmdline(pid)
            assert argv[argv.index("--listen-client-urls") + 1].startswith("http://127.0.0.1:")
            member = Path(argv[argv.index("--data-dir") + 1])
            assert member.parent == (data / "etcd").resolve()
            assert member.stat().st_mode & 0o777 == 0o700
        recorded = json.loads((data / "store.json").read_text())
        assert recorded["private_etcd"] is True
        status = _status(data)  # found through the data directory, no --store
        assert _online(status) == {"mail1", "mail2", "mail3"}
    except BaseException:
        kill_all(procs)
        up.kill()
        up.wait()
        raise
    rest = stop_up(up, procs, signal.SIGINT)
    assert "private etcd cluster stopped." in rest
    # Stopped with `up`: a command says where the cluster went.
    line = _one_line_refusal(cli(data, "status"))
    assert "runs only while `clustermail up --data" in line, line

    # Second start, without --etcd: the data directory's private etcd again, with
    # the same ports and content. kill -9 of `up`: nodes and members stop on their own.
    up = start_up(data)
    procs = []
    try:
        read_until(up, ONLINE)
        procs = cluster_processes(up, data)
        assert json.loads((data / "store.json").read_text()) == recorded
        up.kill()
        up.wait()
        left = wait_all_gone(procs, 45)
        assert not left, f"still running after kill -9 of up: {left}"
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        kill_all(procs)


def _one_line_refusal(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, (done.stdout, done.stderr)
    line = done.stderr.strip()
    assert line.startswith("clustermail: ") and "\n" not in line, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    return line


def test_an_unreachable_store_is_refused_and_nothing_starts(data: Path) -> None:
    (port,) = free_ports(1)
    url = f"etcd://127.0.0.1:{port}"
    line = _one_line_refusal(cli(data, "up", "--store", url))
    assert f"cannot reach the store {url}" in line and "nothing was started" in line, line
    assert not node_agents_on(data)
    assert not (data / "store.json").exists() and not (data / "cluster.db").exists()
    # A URL that is no URL, and two stores at once: refused as well.
    line = _one_line_refusal(cli(data, "up", "--store", "etcd://nowhere"))
    assert "is not host:port" in line, line
    _one_line_refusal(cli(data, "up", "--etcd", "--store", url), code=2)


def test_a_data_directory_keeps_its_store(data: Path) -> None:
    """A directory that holds an embedded store's cluster is not switched to etcd."""
    (data / "cluster.db").touch()
    line = _one_line_refusal(cli(data, "up", "--store", "etcd://127.0.0.1:2379"))
    assert "holds the cluster of sqlite://" in line and "another --data directory" in line, line
    assert not node_agents_on(data)


def test_a_taken_etcd_port_is_named_and_nothing_starts(data: Path) -> None:
    ports = free_ports(6)
    (data / "etcd").mkdir(mode=0o700)
    (data / "etcd" / "members.json").write_text(json.dumps({"token": "t", "members": [
        {"name": f"m{i + 1}", "client_port": ports[2 * i], "peer_port": ports[2 * i + 1]}
        for i in range(3)]}))
    with socket.socket() as held:
        held.bind(("127.0.0.1", ports[2]))
        held.listen()
        line = _one_line_refusal(cli(data, "up", "--etcd"))
    assert f"127.0.0.1:{ports[2]} is in use by" in line and "members.json" in line, line
    assert not node_agents_on(data)
    assert not [p for p in (data / "etcd").iterdir() if p.is_dir()]  # no member started
