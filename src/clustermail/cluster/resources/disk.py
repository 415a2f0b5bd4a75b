"""The ``disk`` resource: a directory standing for the virtual server's shared storage.

Mounting records the owner's fencing epoch in ``<disk>/.clustermail/epoch``;
a mount with an older epoch than the recorded one is refused, because a newer
owner exists (safety rule 1). Every mount and unmount is also appended to
``<disk>/.clustermail/audit.log`` (epoch, PID, monotonic time), the trail a
fault campaign checks for two owners at once. The mail layer calls :func:`check_epoch` before
it writes, so a deposed owner stops writing as soon as the new one has
mounted.

Properties: ``path`` (required, absolute); ``create`` (default true: create the
directory if missing — right for the local demo, where the "shared disk" is
a folder; set false for real shared storage, where a missing mount point is
an error, not something to paper over).

Block-device mode (:mod:`clustermail.cluster.resources.block_device`): with
``device`` (a block device such as ``/dev/sdb1`` or ``/dev/loop3``, or an image
file, mounted through a loop device), online reserves the device in the
coordination store, mounts it on ``path`` (``fstype``, default ext4;
``mount_options``, e.g. ``"noatime"``) in the resource host's mount namespace and
leaves an undo record that unmounts it; offline unmounts it and drops the
reservation.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from prometheus_client import Gauge

from clustermail.cluster import undo
from clustermail.cluster.resource_schema import (
    PropertyKind,
    PropertySpec,
    ResourceType,
    non_empty,
)
from clustermail.cluster.resources import block_device
from clustermail.cluster.resources.base import (
    Properties,
    PropertyError,
    Resource,
    ResourceContext,
    ResourceError,
)
from clustermail.coord import CoordError
from clustermail.fsutil import fsync_dir
from clustermail.metrics import REGISTRY
from clustermail.private_files import (
    UnsafePathError,
    append_private,
    check_private_dir,
    make_private_dir,
    open_private,
)

META_DIR = ".clustermail"
EPOCH_FILE = f"{META_DIR}/epoch"
LOCK_FILE = f"{META_DIR}/lock"
AUDIT_FILE = f"{META_DIR}/audit.log"


class FencedError(ResourceError):
    """The disk belongs to a newer owner (a higher epoch)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


def read_epoch(disk: Path) -> int | None:
    """The epoch recorded on a disk, or None if none was ever recorded."""
    path = Path(disk) / EPOCH_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    if not text.isdigit():
        # Never guess with fencing: an unreadable epoch could hide a newer owner.
        raise FencedError(f"{path} holds {text[:40]!r}, not an epoch; refusing to use the disk")
    return int(text)


def check_epoch(disk: Path | str, epoch: int) -> None:
    """Raises :class:`FencedError` if an owner with a higher epoch than
    ``epoch`` has mounted ``disk``. Cheap (one small read): call it before
    writes that must not come from a deposed owner."""
    recorded = read_epoch(Path(disk))
    if recorded is not None and recorded > epoch:
        raise FencedError(
            f"disk {disk} was mounted with epoch {recorded}, newer than ours ({epoch}): "
            "a newer owner exists; refusing to use it"
        )


def write_epoch(disk: Path, epoch: int) -> None:
    """Records ``epoch`` durably: temp file, fsync, rename, fsync of the folder."""
    meta = make_private_dir(disk / META_DIR)
    tmp = meta / f"epoch.{os.getpid()}.tmp"
    with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as f:
        f.write(f"{epoch}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, disk / EPOCH_FILE)
    fsync_dir(meta)


def mount(disk: Path, epoch: int) -> None:
    """Checks and records the epoch under a lock, so two local mounts cannot
    both pass the check."""
    make_private_dir(disk / META_DIR)
    with os.fdopen(append_private(disk / LOCK_FILE), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        check_epoch(disk, epoch)
        write_epoch(disk, epoch)
        audit(disk, "mount", epoch)


def audit(disk: Path, event: str, epoch: int) -> None:
    """Appends one line to the disk's audit trail: ``{"event", "epoch", "pid",
    "mono", "time"}``; ``mono`` is CLOCK_MONOTONIC, comparable between the
    processes of one machine. Best effort: the trail never fails a mount."""
    line = json.dumps({"event": event, "epoch": epoch, "pid": os.getpid(),
                       "mono": time.monotonic(), "time": time.time()})
    with contextlib.suppress(OSError):
        fd = os.open(disk / AUDIT_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def probe(disk: Path) -> None:
    """Proves the disk takes writes: write, fsync, unlink a small file."""
    path = disk / f".probe.{os.getpid()}"
    try:
        with os.fdopen(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as f:
            f.write(b"clustermail probe\n")
            f.flush()
            os.fsync(f.fileno())
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()




class DiskResource(Resource):
    def __init__(self, ctx: ResourceContext, properties: Properties) -> None:
        super().__init__(ctx, properties)
        self.path = Path(properties.string("path"))
        if not self.path.is_absolute():
            raise PropertyError(f"{ctx.resource}: property 'path': {self.path} is not absolute")
        self.create = properties.boolean("create", True)
        self.device = properties.optional_string("device")
        self.fstype = properties.string("fstype", "ext4")
        self.mount_options = properties.optional_string("mount_options") or ""
        self._mounted = False

    def _reservation(self) -> block_device.Reservation:
        return block_device.Reservation(self.ctx.vs, self.ctx.node, self.ctx.epoch)

    async def online(self) -> None:
        if self.device is not None:
            await self._mount_device(self.device)
        tightened = await asyncio.to_thread(self._mount)
        self._mounted = True
        if tightened:
            self.ctx.log.info(f"disk {self.path}: took group and others' access away")
        self.ctx.log.info(f"disk {self.path} mounted with epoch {self.ctx.epoch}")

    def _mount(self) -> bool:
        """Mounts; True if the disk's folder was readable by others (it is not now)."""
        name = self.ctx.resource
        if not self.path.is_dir():
            if not self.create:
                raise ResourceError(
                    f"{name}: disk {self.path} does not exist (create = false)", permanent=True
                )
            try:
                make_private_dir(self.path)
            except OSError as exc:
                raise ResourceError(f"{name}: cannot create disk {self.path}: {exc}") from exc
        try:
            # It holds all the virtual server's mail: nobody else may write (or read) it.
            tightened = check_private_dir(self.path, "disk")
        except UnsafePathError as exc:
            raise ResourceError(f"{name}: {exc}", permanent=True) from exc
        except OSError as exc:
            raise ResourceError(f"{name}: cannot check disk {self.path}: {exc}") from exc
        try:
            probe(self.path)
        except OSError as exc:
            raise ResourceError(f"{name}: disk {self.path} is not writable: {exc}") from exc
        try:
            mount(self.path, self.ctx.epoch)
        except OSError as exc:
            raise ResourceError(f"{name}: cannot record the epoch on {self.path}: {exc}") from exc
        return tightened

    async def _mount_device(self, device: str) -> None:
        name = self.ctx.resource
        try:
            argv = block_device.mount_argv(device, self.path, self.fstype, self.mount_options)
            # Checked before every mount: never a device another live owner holds.
            await block_device.reserve(await self.ctx.store(), device, self._reservation())
        except block_device.DeviceError as exc:
            raise ResourceError(f"{name}: {exc}", permanent=exc.permanent) from None
        except CoordError as exc:
            raise ResourceError(f"{name}: cannot reserve {device}: {exc}") from None
        if not self.path.is_dir():
            if not self.create:
                raise ResourceError(f"{name}: mount point {self.path} does not exist "
                                    "(create = false)", permanent=True)
            await asyncio.to_thread(make_private_dir, self.path)
        if os.path.ismount(self.path):
            # What an earlier host of ours left here (its undo record not run yet).
            await asyncio.to_thread(block_device.run, block_device.undo_argv(self.path))
        # Written before the mount: whoever outlives this host unmounts it.
        await asyncio.to_thread(
            undo.record, self.ctx.data_dir, self.ctx.node, self.ctx.vs, self.ctx.resource,
            block_device.undo_argv(self.path), f"mount of {device} on {self.path}",
            block_device.NOT_MOUNTED,
        )
        out = await asyncio.to_thread(block_device.run, argv)
        if out is not None:
            await asyncio.to_thread(undo.clear, self.ctx.data_dir, self.ctx.node, self.ctx.vs,
                                    self.ctx.resource)
            raise ResourceError(f"{name}: cannot mount {device} on {self.path}: {out}")
        self.ctx.log.info(f"disk: mounted {device} ({self.fstype}) on {self.path}")

    async def offline(self) -> None:
        # The epoch stays on the disk so an older owner stays fenced.
        if self._mounted:
            await asyncio.to_thread(audit, self.path, "unmount", self.ctx.epoch)
        self._mounted = False
        if self.device is None:
            return
        out = await asyncio.to_thread(block_device.run, block_device.umount_argv(self.path))
        if out is not None and not any(s in out for s in block_device.NOT_MOUNTED):
            raise ResourceError(f"{self.ctx.resource}: cannot unmount {self.path}: {out}")
        await asyncio.to_thread(undo.clear, self.ctx.data_dir, self.ctx.node, self.ctx.vs,
                                self.ctx.resource)
        try:
            await block_device.release(await self.ctx.store(), self.device, self._reservation())
        except CoordError as exc:
            # Harmless: the next owner's epoch is higher and takes it over.
            self.ctx.log.warning(f"disk: could not drop the reservation of {self.device}: {exc}")

    async def quick_check(self) -> bool:
        if self.device is not None and not os.path.ismount(self.path):
            return False
        ok = self._mounted and self.path.is_dir()
        if ok:
            _export_usage(self.ctx.resource, self.path)
        return ok

    async def thorough_check(self) -> bool:
        if not self._mounted:
            return False

        def check() -> None:
            probe(self.path)
            check_epoch(self.path, self.ctx.epoch)

        try:
            await asyncio.to_thread(check)
        except (OSError, ResourceError) as exc:
            self.ctx.log.error(f"disk check failed: {exc}")
            return False
        return True


DISK_TYPE = ResourceType(
    "disk",
    DiskResource,
    {
        "path": PropertySpec(PropertyKind.STR, required=True, check=non_empty),
        "create": PropertySpec(PropertyKind.BOOL),
        "device": PropertySpec(PropertyKind.STR, check=non_empty),
        "fstype": PropertySpec(PropertyKind.STR, check=non_empty),
        "mount_options": PropertySpec(PropertyKind.STR),
    },
)


_DISK_BYTES: Gauge | None = None
_DISK_FREE: Gauge | None = None


def _export_usage(resource: str, path: Path) -> None:
    """The disk's size and free space for the metrics (cheap: one statvfs)."""
    global _DISK_BYTES, _DISK_FREE
    if _DISK_BYTES is None or _DISK_FREE is None:
        _DISK_BYTES = Gauge("clustermail_disk_bytes", "Size of a virtual server's disk",
                            ["resource"], registry=REGISTRY)
        _DISK_FREE = Gauge("clustermail_disk_free_bytes", "Free space on a virtual server's "
                           "disk", ["resource"], registry=REGISTRY)
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return
    _DISK_BYTES.labels(resource).set(usage.total)
    _DISK_FREE.labels(resource).set(usage.free)
