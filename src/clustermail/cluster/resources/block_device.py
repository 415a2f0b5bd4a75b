"""The ``disk`` resource's block-device mode: mount, unmount and the reservation.

Before it mounts a device the owner takes a reservation in the coordination store,
``DISK_RESERVATIONS/<device>`` = {vs, node, epoch}, by compare-and-swap. It refuses
the device when another virtual server with a live owner holds it, or when its own
virtual server's reservation has a newer epoch (a newer owner exists). The mount is
recorded in an undo record (``umount --lazy PATH``) before it is made, so a resource host
that dies or fences leaves no mount behind: the agent or the fencing host unmounts.

The reservation guards against configuration mistakes and deposed owners that
still run our code; it cannot stop a machine that ignores it. On real shared
storage, SCSI-3 persistent reservations (``sg_persist``) fence at the array
itself and are the stronger option (docs/deployment.md).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from clustermail.cluster import keys
from clustermail.coord import Store
from clustermail.coord.api import Compare, Delete, Put

COMMAND_TIMEOUT = 30.0
#: What umount says when there was nothing to unmount.
NOT_MOUNTED = ("not mounted", "no mount point specified", "mountpoint not found")


class DeviceError(Exception):
    """Mounting or reserving a device failed; ``permanent``: retrying will not help."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class Reservation:
    vs: str
    node: str
    epoch: int

    def to_store(self) -> str:
        return json.dumps({"vs": self.vs, "node": self.node, "epoch": self.epoch})

    @classmethod
    def from_store(cls, value: bytes) -> Reservation | None:
        try:
            data = json.loads(value)
            return cls(str(data["vs"]), str(data["node"]), int(data["epoch"]))
        except (ValueError, KeyError, TypeError):
            return None


def reservation_key(device: str) -> str:
    return keys.DISK_RESERVATIONS + os.path.realpath(device).strip("/").replace("/", "!")


def mount_argv(device: str, path: Path, fstype: str, options: str) -> list[str]:
    """``mount`` for a block device, or for an image file through a loop device
    (``-o loop``: util-linux detaches it again at unmount)."""
    try:
        mode = os.stat(device).st_mode
    except OSError as exc:
        raise DeviceError(f"device {device}: {exc.strerror or exc}") from None
    opts = [o for o in options.split(",") if o]
    if stat.S_ISREG(mode):
        opts.insert(0, "loop")
    elif not stat.S_ISBLK(mode):
        raise DeviceError(f"{device} is neither a block device nor an image file",
                          permanent=True)
    return ["mount", "-t", fstype, *(["-o", ",".join(opts)] if opts else []), device, str(path)]


def umount_argv(path: Path) -> list[str]:
    return ["umount", str(path)]


def undo_argv(path: Path) -> list[str]:
    """The undo record's unmount. Lazy: it runs while the killed host's process may
    still hold files open on the disk (a plain umount says "target is busy" then);
    the mount leaves the namespace at once and the filesystem is released when the
    last of those processes is gone."""
    return ["umount", "--lazy", str(path)]


def run(argv: list[str]) -> str | None:
    """None on success, else what the command said."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        return (done.stdout + done.stderr).strip() or f"exit code {done.returncode}"
    return None


async def reserve(store: Store, device: str, mine: Reservation) -> None:
    """Takes the device's reservation for ``mine`` (compare-and-swap), or raises."""
    key = reservation_key(device)
    for _ in range(5):
        kv = await store.get(key)
        if kv is not None:
            held = Reservation.from_store(kv.value)
            if held is not None and held.vs != mine.vs:
                owner = await store.get(keys.OWNER + held.vs)
                if owner is not None:
                    raise DeviceError(
                        f"device {device} is reserved by virtual server {held.vs} (node "
                        f"{held.node}, epoch {held.epoch}), which has a live owner; refusing "
                        "to mount it", permanent=True)
            elif held is not None and held.epoch > mine.epoch:
                raise DeviceError(
                    f"device {device} was reserved with epoch {held.epoch} by node {held.node}, "
                    f"newer than ours ({mine.epoch}): a newer owner exists", permanent=True)
        guard = Compare.absent(key) if kv is None else Compare.mod_is(key, kv.mod_revision)
        result = await store.txn([guard], [Put(key, mine.to_store())])
        if result.succeeded:
            return
    raise DeviceError(f"device {device}: its reservation kept changing under us")


async def release(store: Store, device: str, mine: Reservation) -> None:
    """Drops the reservation if it is still ours (a newer owner's stays)."""
    key = reservation_key(device)
    kv = await store.get(key)
    if kv is not None and Reservation.from_store(kv.value) == mine:
        await store.txn([Compare.mod_is(key, kv.mod_revision)], [Delete(key)])

