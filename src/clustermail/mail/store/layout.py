"""The layout of a virtual server's disk: which storage groups and mailbox databases it
holds. It is recorded on the disk itself (``storage.json``), because the disk moves with the
virtual server. The layout value is pure; load/save are the only I/O here.

    <disk>/storage.json
    <disk>/<storage group>/<database>.sqlite   (+ -wal, -shm while mounted)
    <disk>/_logs/<storage group>/               (its transaction logs, unless ``log_path``)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from clustermail.fsutil import fsync_dir
from clustermail.mail.store.errors import LayoutError, LimitExceededError

LAYOUT_FILE = "storage.json"
LAYOUT_VERSION = 1
#: Where storage groups keep their logs by default (a name no storage group can have).
LOGS_DIR = "_logs"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class Limits:
    """Exchange 2003 Enterprise allowed 4 storage groups of 5 databases per server."""

    storage_groups: int = 4
    databases_per_group: int = 5

    def __post_init__(self) -> None:
        for key in ("storage_groups", "databases_per_group"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LayoutError(f"limits.{key} must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class StorageGroupLayout:
    name: str
    databases: tuple[str, ...] = ()
    #: Its transaction logs' directory (absolute, or relative to the disk); None: the default.
    log_path: str | None = None


@dataclass(frozen=True, slots=True)
class Layout:
    limits: Limits = field(default_factory=Limits)
    storage_groups: tuple[StorageGroupLayout, ...] = ()

    def group(self, name: str) -> StorageGroupLayout:
        for sg in self.storage_groups:
            if sg.name == name:
                return sg
        raise LayoutError(f"no storage group {name!r} (have: {', '.join(self.names()) or 'none'})")

    def names(self) -> list[str]:
        return [sg.name for sg in self.storage_groups]

    def with_storage_group(self, name: str) -> Layout:
        _check_name("storage group", name)
        if name.lower() in (n.lower() for n in self.names()):
            raise LayoutError(f"storage group {name!r} already exists")
        if len(self.storage_groups) >= self.limits.storage_groups:
            raise LimitExceededError(
                f"cannot add storage group {name!r}: the limit is {self.limits.storage_groups} "
                "storage groups per virtual server"
            )
        return replace(self, storage_groups=(*self.storage_groups, StorageGroupLayout(name)))

    def with_database(self, group: str, name: str) -> Layout:
        _check_name("database", name)
        sg = self.group(group)
        if name.lower() in (n.lower() for n in sg.databases):
            raise LayoutError(f"storage group {group!r} already has a database {name!r}")
        if len(sg.databases) >= self.limits.databases_per_group:
            raise LimitExceededError(
                f"cannot add database {name!r} to {group!r}: the limit is "
                f"{self.limits.databases_per_group} databases per storage group"
            )
        groups = tuple(
            replace(g, databases=(*g.databases, name)) if g is sg else g
            for g in self.storage_groups
        )
        return replace(self, storage_groups=groups)

    def with_log_path(self, group: str, path: str | None) -> Layout:
        if path is not None and (not isinstance(path, str) or not path.strip()):
            raise LayoutError(f"log_path of {group!r} must be a non-empty path, got {path!r}")
        sg = self.group(group)
        groups = tuple(replace(g, log_path=path) if g is sg else g for g in self.storage_groups)
        return replace(self, storage_groups=groups)

    def with_limits(self, limits: Limits) -> Layout:
        if len(self.storage_groups) > limits.storage_groups or any(
            len(g.databases) > limits.databases_per_group for g in self.storage_groups
        ):
            raise LimitExceededError("the disk already holds more than the new limits allow")
        return replace(self, limits=limits)

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "version": LAYOUT_VERSION,
                    "limits": {
                        "storage_groups": self.limits.storage_groups,
                        "databases_per_group": self.limits.databases_per_group,
                    },
                    "storage_groups": [
                        {"name": g.name, "databases": list(g.databases)}
                        | ({"log_path": g.log_path} if g.log_path is not None else {})
                        for g in self.storage_groups
                    ],
                },
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def from_json(cls, text: str, source: str) -> Layout:
        """Parse and validate; errors name the file, the key and what was expected."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LayoutError(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(d, dict) or d.get("version") != LAYOUT_VERSION:
            raise LayoutError(f'{source}: expected an object with "version": {LAYOUT_VERSION}')
        try:
            lim = d.get("limits", {})
            layout = cls(
                Limits(int(lim.get("storage_groups", 4)), int(lim.get("databases_per_group", 5)))
            )
            for i, g in enumerate(d.get("storage_groups", [])):
                if not isinstance(g, dict) or not isinstance(g.get("name"), str):
                    raise LayoutError(
                        f'storage_groups[{i}]: expected an object with a "name" string'
                    )
                layout = layout.with_storage_group(g["name"])
                for db in g.get("databases", []):
                    if not isinstance(db, str):
                        raise LayoutError(
                            f"storage_groups[{i}].databases: expected strings, got {db!r}"
                        )
                    layout = layout.with_database(g["name"], db)
                if g.get("log_path") is not None:
                    layout = layout.with_log_path(g["name"], g["log_path"])
        except (LayoutError, ValueError, TypeError, AttributeError) as exc:
            raise LayoutError(f"{source}: {exc}") from None
        return layout


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise LayoutError(
            f"invalid {kind} name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )


def default_layout(limits: Limits | None = None) -> Layout:
    """One storage group SG1 holding one database DB1."""
    return Layout(limits or Limits()).with_storage_group("SG1").with_database("SG1", "DB1")


def database_path(disk: Path, group: str, database: str) -> Path:
    return disk / group / f"{database}.sqlite"


def log_path(disk: Path, group: StorageGroupLayout) -> Path:
    """The directory of a storage group's transaction logs."""
    if group.log_path is None:
        return disk / LOGS_DIR / group.name
    return disk / group.log_path  # an absolute log_path replaces the disk


def load(disk: Path) -> Layout | None:
    path = disk / LAYOUT_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise LayoutError(f"{path}: cannot read ({exc})") from None
    return Layout.from_json(text, str(path))


def save(disk: Path, layout: Layout) -> None:
    """Atomically: temp file, fsync, rename, fsync the directory."""
    path = disk / LAYOUT_FILE
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # private, as all mail
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(layout.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(disk)
