"""`clustermail up`: the local cluster starts, shows progress, reuses its configuration,
and Ctrl-C stops every process it started."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from tests.e2e.harness import banner, cluster_toml, free_addresses
from tests.support.local_up import alive, cli, read_until, start_up

# A custom configuration in the data directory is what `up` reuses; it keeps this
# test off the default 127.0.0.11-13 addresses a developer's own cluster may use.


def test_up_runs_the_cluster_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    base, port = free_addresses()
    data = tmp_path / "data"
    data.mkdir()
    (data / "cluster.toml").write_text(cluster_toml(base, port))
    for round_ in range(2):
        up = start_up(data)
        try:
            out = read_until(up, "virtual servers online: 3/3")
            assert f"using the configuration in {data / 'cluster.toml'}" in out
            assert "started node4" in out
            status = json.loads(cli(data, "status", "--json").stdout)
            pids = [n["pid"] for n in status["nodes"]]
            pids += [v["pid"] for v in status["virtual_servers"]]
            pids += [p for v in status["virtual_servers"] for p in v["resource_pids"].values()]
            assert all(isinstance(p, int) and alive(p) for p in pids), status
            line = banner(f"{base}.12", port)
            assert line is not None and "mail2" in line
            # A second `up` on the same data directory refuses clearly.
            second = cli(data, "up")
            assert second.returncode == 1 and f"clustermail up (pid {up.pid})" in second.stderr
            up.send_signal(signal.SIGINT)  # Ctrl-C
            rest, _ = up.communicate(timeout=60)
            assert "stopped." in rest, rest
            assert up.returncode in (0, 130)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(alive(p) for p in pids):
                time.sleep(0.05)
            assert not [p for p in pids if alive(p)], f"round {round_}: stray processes"
            assert banner(f"{base}.12", port) is None
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
