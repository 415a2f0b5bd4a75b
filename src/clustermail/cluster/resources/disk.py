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
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from clustermail.cluster.resource_schema import (
    PropertyKind,
    PropertySpec,
    ResourceType,
    non_empty,
)
from clustermail.cluster.resources.base import (
    Properties,
    PropertyError,
    Resource,
    ResourceContext,
    ResourceError,
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
    meta = disk / META_DIR
    meta.mkdir(exist_ok=True)
    tmp = meta / f"epoch.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{epoch}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, disk / EPOCH_FILE)
    _fsync_dir(meta)


def mount(disk: Path, epoch: int) -> None:
    """Checks and records the epoch under a lock, so two local mounts cannot
    both pass the check."""
    (disk / META_DIR).mkdir(exist_ok=True)
    with open(disk / LOCK_FILE, "a") as lock:
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
        with open(path, "wb") as f:
            f.write(b"clustermail probe\n")
            f.flush()
            os.fsync(f.fileno())
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskResource(Resource):
    def __init__(self, ctx: ResourceContext, properties: Properties) -> None:
        super().__init__(ctx, properties)
        self.path = Path(properties.string("path"))
        if not self.path.is_absolute():
            raise PropertyError(f"{ctx.resource}: property 'path': {self.path} is not absolute")
        self.create = properties.boolean("create", True)
        self._mounted = False

    async def online(self) -> None:
        await asyncio.to_thread(self._mount)
        self._mounted = True
        self.ctx.log.info(f"disk {self.path} mounted with epoch {self.ctx.epoch}")

    def _mount(self) -> None:
        name = self.ctx.resource
        if not self.path.is_dir():
            if not self.create:
                raise ResourceError(
                    f"{name}: disk {self.path} does not exist (create = false)", permanent=True
                )
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ResourceError(f"{name}: cannot create disk {self.path}: {exc}") from exc
        try:
            probe(self.path)
        except OSError as exc:
            raise ResourceError(f"{name}: disk {self.path} is not writable: {exc}") from exc
        try:
            mount(self.path, self.ctx.epoch)
        except OSError as exc:
            raise ResourceError(f"{name}: cannot record the epoch on {self.path}: {exc}") from exc

    async def offline(self) -> None:
        # Nothing to release: the epoch stays so an older owner stays fenced.
        if self._mounted:
            await asyncio.to_thread(audit, self.path, "unmount", self.ctx.epoch)
        self._mounted = False

    async def quick_check(self) -> bool:
        return self._mounted and self.path.is_dir()

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
    },
)
