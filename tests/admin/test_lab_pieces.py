"""The lab's pure pieces: its cluster file, its state file, and its refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clustermail.admin.errors import AdminError
from clustermail.admin.lab import cluster_file, commands, state

DEVICES = {"mail1": "/dev/loop7", "mail2": "/dev/loop8", "mail3": "/dev/loop9"}


@pytest.mark.parametrize("machines", [2, 3, 4, 6])
def test_the_lab_cluster_is_valid_for_any_size(machines: int) -> None:
    config = cluster_file.lab_config("198.18.7", machines, DEVICES)
    assert list(config.node_names) == [f"node{i}" for i in range(1, machines + 1)]
    for i, vs in enumerate(config.virtual_servers, 1):
        by_type = {r.type: r.properties for r in vs.resources}
        assert by_type["ip_address"]["address"] == f"198.18.7.{200 + i}"
        assert by_type["ip_address"]["mode"] == "interface"
        assert by_type["disk"]["device"] == DEVICES[vs.name]
        assert vs.preferred_owners[-1] == f"node{machines}"  # the standby


def test_the_lab_cluster_takes_a_timing_profile() -> None:
    assert cluster_file.lab_config("198.18.7", 4, DEVICES).timing.profile == "default"
    assert cluster_file.lab_config("198.18.7", 4, DEVICES, "fast").timing.profile == "fast"


def test_etcd_members_run_with_pre_vote() -> None:
    # Without it a member healed from a partition deposes the healthy leader.
    lab = state.LabState(tag="ab12", subnet="198.18.7", bridge="cmlab12br",
                         etcd_members=["node1"])
    lab.machines["node1"] = state.Machine("node1", "cmlab12-node1", "cmlab12v1",
                                          "198.18.7.11", ["etcd", "node"])
    assert "--pre-vote" in commands.etcd_argv(Path("lab"), lab, lab.machines["node1"])


def test_the_state_file_round_trips_and_is_private(tmp_path: Path) -> None:
    lab = state.LabState(tag="ab12", subnet="198.18.7", bridge="cmlab12br")
    lab.machines["node1"] = state.Machine("node1", "cmlab12-node1", "cmlab12v1",
                                          "198.18.7.11", ["etcd", "node"], init_pid=42)
    state.save(tmp_path, lab)
    assert state.state_path(tmp_path).stat().st_mode & 0o777 == 0o600
    assert state.load(tmp_path) == lab
    with pytest.raises(AdminError, match="no machine 'node9'"):
        lab.machine("node9")
    state.state_path(tmp_path).write_text("{")
    with pytest.raises(AdminError, match="unreadable"):
        state.load(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to drop to another user (setpriv)")
def test_not_root_is_a_clear_error(tmp_path: Path) -> None:
    out = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                          sys.executable, "-m", "clustermail", "lab", "up", "--data",
                          str(tmp_path / "lab")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip() == ("clustermail: the lab needs root (network namespaces, "
                                  "bridges, mounts): run it with sudo")
