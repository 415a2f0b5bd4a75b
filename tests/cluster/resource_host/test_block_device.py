"""The ``disk`` resource's block-device mode with a real loop device and ext4.

Needs root (losetup, mount); CI is root. Every mount and loop device the tests make
is removed again, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from clustermail.cluster import keys, undo
from clustermail.cluster.resources.base import ResourceError
from clustermail.cluster.resources.block_device import Reservation, reservation_key
from clustermail.cluster.resources.disk import DiskResource, read_epoch
from tests.support.resource_env import Env

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in ("losetup", "mkfs.ext4", "mount")),
    reason="needs root, losetup, mkfs.ext4 and mount (a real loop device and ext4)",
)


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(32 * 1024 * 1024)
    sh("mkfs.ext4", "-q", "-F", str(path))
    return path


@pytest.fixture
def device(image: Path, tmp_path: Path) -> Iterator[str]:
    loop = sh("losetup", "-f", "--show", str(image)).strip()
    try:
        yield loop
    finally:
        for mount_point in (tmp_path / "mnt", tmp_path / "mnt2"):
            if os.path.ismount(mount_point):
                subprocess.run(["umount", str(mount_point)], timeout=30)
        subprocess.run(["losetup", "-d", loop], timeout=30)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path)
    yield e
    await e.store.close()


def props(device: str, path: Path) -> dict[str, object]:
    return {"path": str(path), "device": device, "mount_options": "noatime"}


async def test_mounts_reserves_and_unmounts(env: Env, device: str, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    disk = env.make(DiskResource, "disk", props(device, mnt))
    await disk.online()
    assert os.path.ismount(mnt)
    line = next(x for x in Path("/proc/self/mountinfo").read_text().splitlines()
                if f" {mnt} " in x)
    assert "noatime" in line
    assert read_epoch(mnt) == 7  # the epoch is on the device itself
    assert await disk.quick_check() and await disk.thorough_check()
    store = await env.store.get()
    kv = await store.get(reservation_key(device))
    assert kv is not None and Reservation.from_store(kv.value) == Reservation("mail1", "node1", 7)
    assert list((env.tmp / "data" / undo.UNDO_DIR / "node1").rglob("*.json"))

    await disk.offline()
    assert not os.path.ismount(mnt)
    assert not await disk.quick_check()
    assert await store.get(reservation_key(device)) is None
    assert not list((env.tmp / "data" / undo.UNDO_DIR / "node1").rglob("*.json"))


async def test_refuses_a_device_another_live_owner_holds(
    env: Env, device: str, tmp_path: Path
) -> None:
    other = Env(tmp_path, epoch=3, vs="mail2")
    try:
        held = other.make(DiskResource, "disk", props(device, tmp_path / "mnt2"))
        await held.online()
        store = await env.store.get()
        await store.put(keys.OWNER + "mail2", "node2")  # mail2's owner is alive
        disk = env.make(DiskResource, "disk", props(device, tmp_path / "mnt"))
        with pytest.raises(ResourceError, match="reserved by virtual server mail2") as err:
            await disk.online()
        assert err.value.permanent
        assert not os.path.ismount(tmp_path / "mnt")
        await held.offline()
    finally:
        await other.store.close()


async def test_refuses_when_a_newer_owner_reserved_it(
    env: Env, device: str, tmp_path: Path
) -> None:
    store = await env.store.get()
    await store.put(reservation_key(device), Reservation("mail1", "node2", 9).to_store())
    disk = env.make(DiskResource, "disk", props(device, tmp_path / "mnt"))
    with pytest.raises(ResourceError, match="newer than ours") as err:
        await disk.online()
    assert err.value.permanent
    assert not os.path.ismount(tmp_path / "mnt")


async def test_an_older_owners_reservation_is_taken_over(
    env: Env, device: str, tmp_path: Path
) -> None:
    store = await env.store.get()
    await store.put(reservation_key(device), Reservation("mail1", "node2", 5).to_store())
    disk = env.make(DiskResource, "disk", props(device, tmp_path / "mnt"))
    await disk.online()
    kv = await store.get(reservation_key(device))
    assert kv is not None and Reservation.from_store(kv.value) == Reservation("mail1", "node1", 7)
    await disk.offline()


async def test_the_undo_record_unmounts_what_a_dead_host_left(
    env: Env, device: str, tmp_path: Path
) -> None:
    mnt = tmp_path / "mnt"
    disk = env.make(DiskResource, "disk", props(device, mnt))
    await disk.online()
    # The host dies here (no offline) and a process of it still holds a file open on
    # the disk: the agent, or the fencing host, runs the record all the same.
    with open(mnt / "held-open", "w") as held:
        done = undo.run_pending(env.tmp / "data", "node1")
        assert [d.error for d in done] == [None]
        assert not os.path.ismount(mnt)
        held.write("the filesystem stays usable for this file until it is closed")


async def test_an_image_file_is_mounted_through_a_loop_device(
    env: Env, image: Path, tmp_path: Path
) -> None:
    mnt = tmp_path / "mnt"
    disk = env.make(DiskResource, "disk", {"path": str(mnt), "device": str(image)})
    try:
        await disk.online()
        assert os.path.ismount(mnt)
        assert sh("losetup", "-j", str(image)).strip()
        await disk.offline()
        assert not os.path.ismount(mnt)
        assert not sh("losetup", "-j", str(image)).strip()  # detached with the unmount
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["umount", str(mnt)], timeout=30)


async def test_not_a_device(env: Env, tmp_path: Path) -> None:
    disk = env.make(DiskResource, "disk", {"path": str(tmp_path / "mnt"),
                                           "device": str(tmp_path)})
    with pytest.raises(ResourceError, match="neither a block device") as err:
        await disk.online()
    assert err.value.permanent
    with contextlib.suppress(FileNotFoundError):
        assert not os.path.ismount(tmp_path / "mnt")
