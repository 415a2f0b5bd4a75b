"""The trial bring-ups of `validate --cluster` on this machine: real folders, sockets, an
ext4 image and a real SQLite store for the cluster's view; nothing is added or mounted."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from clustermail.admin.local import apply_config
from clustermail.admin.validate_report import FAIL, PASS, WARN, Check
from clustermail.admin.validate_trial import Site, filesystem_of, trial_checks
from clustermail.cluster import keys
from clustermail.cluster.config import parse_config
from clustermail.cluster.records import NodeRecord, OwnerRecord
from clustermail.cluster.resources.block_device import Reservation
from clustermail.cluster.view import read_view
from clustermail.coord import open_store
from tests.e2e.harness import free_addresses

ROOT = os.geteuid() == 0


def config_text(base: str, port: int, image: Path, fstype: str = "ext4") -> str:
    return f"""
[cluster]
placement = "active-passive"
[nodes.n1]
[nodes.n2]
[virtual_servers.vs1.resources.ip]
type = "ip_address"
properties = {{ address = "{base}.11" }}
[virtual_servers.vs1.resources.disk]
type = "disk"
properties = {{ path = "{{data}}/disks/{{vs}}" }}
[virtual_servers.vs1.resources.srv]
type = "process"
depends_on = ["ip"]
properties = {{ command = ["true"], tcp_check = "{base}.11:{port}" }}
[virtual_servers.vs2.resources.ip]
type = "ip_address"
properties = {{ address = "198.18.255.77", mode = "interface", interface = "lo" }}
[virtual_servers.vs2.resources.disk]
type = "disk"
properties = {{ path = "{{data}}/mnt/vs2", device = "{image}", fstype = "{fstype}" }}
"""


async def site(tmp_path: Path, *, owners: dict[str, str], fstype: str = "ext4",
               reservations: dict[str, Reservation | None] | None = None,
               owner_pid: int = 0) -> tuple[Site, str, int]:
    base, port = free_addresses()
    image = tmp_path / "disk.img"
    tmp_path.mkdir(exist_ok=True)
    async with await open_store(f"sqlite://{tmp_path}/c.db") as store:
        await apply_config(store, parse_config(config_text(base, port, image, fstype)))
        lease = await store.grant(60)
        for node in ("n1", "n2"):
            record = NodeRecord(pid=owner_pid if node == "n2" else 1,
                                host=socket.gethostname(), lease=lease.id)
            await store.put(keys.NODES + node, record.to_store(), lease=lease.id)
        for vs, node in owners.items():
            await store.put(keys.OWNER + vs, OwnerRecord(node, 5).to_store(), lease=lease.id)
        view = await read_view(store)
    assert view.cluster_config is not None
    data = tmp_path / "data"
    data.mkdir(mode=0o700, exist_ok=True)
    return Site("n1", data, view.cluster_config, view, reservations or {}), base, port


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


async def test_a_folder_disk_is_checked_for_owner_privacy_and_access(tmp_path: Path) -> None:
    s, _, _ = await site(tmp_path, owners={"vs2": "n1"})
    got = by_name(trial_checks(s))
    assert got["vs1 disk"].result == PASS and "can be created" in got["vs1 disk"].detail
    assert got["vs2"].detail.startswith("online here (epoch 5)")
    disk = s.data_dir / "disks" / "vs1"
    disk.mkdir(parents=True, mode=0o700)
    got = by_name(trial_checks(s))
    assert got["vs1 disk"].result == PASS and "private and writable" in got["vs1 disk"].detail
    disk.chmod(0o750)
    assert by_name(trial_checks(s))["vs1 disk"].result == WARN
    disk.chmod(0o770)
    got = by_name(trial_checks(s))
    assert got["vs1 disk"].result == FAIL and "writable by group" in got["vs1 disk"].detail


async def test_ports_a_stranger_holds_fail_and_the_owners_own_pass(tmp_path: Path) -> None:
    # Nobody owns vs1: a test bind, and a stranger's listener is a failure.
    s, base, port = await site(tmp_path, owners={"vs2": "n1"})
    got = by_name(trial_checks(s))
    assert got["vs1 address"].result == PASS
    assert got["vs1 ports"].result == PASS and "test bind" in got["vs1 ports"].detail
    assert got["vs1 ports"].detail.endswith("[not online anywhere]")
    with socket.socket() as listener:
        listener.bind((f"{base}.11", port))
        listener.listen()
        got = by_name(trial_checks(s))
        assert got["vs1 ports"].result == FAIL and f"pid {os.getpid()}" in got[
            "vs1 ports"].detail
        # The same listener, when it belongs to vs1's owner n2 on this machine: served.
        s2, _, _ = await site(tmp_path / "b", owners={"vs1": "n2", "vs2": "n1"},
                              owner_pid=os.getpid())
        s2 = Site(s2.node, s2.data_dir, s.config, s2.view, {})
        got = by_name(trial_checks(s2))
        assert got["vs1 ports"].result == PASS, got["vs1 ports"]
        assert "served by its owner n2" in got["vs1 ports"].detail
        assert got["vs1 ports"].detail.endswith("[online on n2]")


@pytest.mark.skipif(not ROOT, reason="interface addresses and devices need root")
async def test_an_interface_address_is_never_added_and_must_not_be_up(tmp_path: Path) -> None:
    s, _, _ = await site(tmp_path, owners={"vs1": "n1"})
    got = by_name(trial_checks(s))
    assert got["vs2 address"].result == PASS, got["vs2 address"]
    assert "can be added on lo (not added" in got["vs2 address"].detail
    bad = parse_config(config_text("127.9.9", 1, tmp_path / "x").replace(
        "198.18.255.77", "127.0.0.1"))
    got = by_name(trial_checks(Site("n1", s.data_dir, bad, s.view, {})))
    assert got["vs2 address"].result == FAIL and "already up" in got["vs2 address"].detail
    bad = parse_config(config_text("127.9.9", 1, tmp_path / "x").replace(
        '"lo"', '"nope0"'))
    got = by_name(trial_checks(Site("n1", s.data_dir, bad, s.view, {})))
    assert got["vs2 address"].result == FAIL and "no interface 'nope0'" in got[
        "vs2 address"].detail


@pytest.mark.skipif(not ROOT or shutil.which("mkfs.ext4") is None,
                    reason="needs root and mkfs.ext4")
async def test_a_device_is_read_never_mounted_and_its_reservation_respected(
        tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    s, _, _ = await site(tmp_path, owners={"vs1": "n1"})
    got = by_name(trial_checks(s))
    assert got["vs2 disk"].result == FAIL and "No such file" in got["vs2 disk"].detail
    with image.open("wb") as f:
        f.truncate(8 * 1024 * 1024)
    assert filesystem_of(str(image)) == (None, "")
    assert by_name(trial_checks(s))["vs2 disk"].result == FAIL
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    assert filesystem_of(str(image)) == ("ext4", "")
    got = by_name(trial_checks(s))
    assert got["vs2 disk"].result == PASS, got["vs2 disk"]
    assert "validate never mounts" in got["vs2 disk"].detail
    assert not os.path.ismount(s.data_dir / "mnt" / "vs2")
    # vs2 online on n2, which holds the device: reported, not touched.
    held, _, _ = await site(tmp_path / "h", owners={"vs1": "n1", "vs2": "n2"},
                            reservations={str(image): Reservation("vs2", "n2", 5)})
    held = Site("n1", held.data_dir, s.config, held.view, held.reservations)
    got = by_name(trial_checks(held))
    assert got["vs2 disk"].result == PASS
    assert "skipped the mount: held by owner n2 (epoch 5)" in got["vs2 disk"].detail
    # Reserved by vs1, which is online: two virtual servers on one device.
    shared = Site("n1", held.data_dir, s.config, held.view,
                  {str(image): Reservation("vs1", "n1", 5)})
    got = by_name(trial_checks(shared))
    assert got["vs2 disk"].result == FAIL and "share one device" in got["vs2 disk"].detail
    xfs = parse_config(config_text("127.9.9", 1, image, fstype="xfs"))
    got = by_name(trial_checks(Site("n1", s.data_dir, xfs, s.view, {})))
    assert got["vs2 disk"].result == FAIL and "holds ext4" in got["vs2 disk"].detail
