"""`up` shows the console's address only once the admin service answers there."""

from __future__ import annotations

import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.harness import cluster_toml, free_addresses
from tests.support.local_up import cluster_processes, kill_all, read_until, start_up, wait_all_gone

pytestmark = pytest.mark.e2e


def _with_slow_cluster_group(base: str, port: int) -> str:
    """The sample's layout, with a cluster group whose admin service waits for a
    resource that takes seconds to start: it answers well after the mail servers."""
    slow = f"sleep 5; exec {sys.executable} -m clustermail.cluster.banner --address " \
           f"{base}.10 --port {port + 3} --name slow"
    return cluster_toml(base, port, timing="fast") + f"""
[virtual_servers.cluster]
kind = "cluster"
preferred_owners = ["node4", "node3"]
failback = "never"
[virtual_servers.cluster.resources.ip]
type = "ip_address"
properties = {{ address = "{base}.10" }}
[virtual_servers.cluster.resources.slow]
type = "process"
depends_on = ["ip"]
properties = {{ command = ["sh", "-c", "{slow}"], tcp_check = "{base}.10:{port + 3}" }}
[virtual_servers.cluster.resources.admin]
type = "admin_service"
depends_on = ["ip", "slow"]
properties = {{ http_port = {port + 1}, https_port = {port + 2} }}
"""


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5).close()
    except urllib.error.HTTPError:
        return True  # a status is an answer
    except OSError:
        return False
    return True


def test_the_console_address_is_shown_once_it_answers(tmp_path: Path) -> None:
    base, port = free_addresses()
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "cluster.toml").write_text(_with_slow_cluster_group(base, port))
    up = start_up(data)
    procs = []
    try:
        out = read_until(up, "console: ", timeout=120)
        url = f"http://{base}.10:{port + 1}/console/"
        assert url in out.splitlines()[-1], out
        # No waiting here: it answers the moment its address is shown.
        assert _answers(url), f"{url} does not answer although up showed it"
        assert "waiting for the admin service" in out, out  # and it said it waited
        procs = cluster_processes(up, data)
        up.send_signal(signal.SIGTERM)
        up.communicate(timeout=90)
        assert not wait_all_gone(procs, 10)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        kill_all(procs)
