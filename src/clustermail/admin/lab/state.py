"""The lab's state file, ``DIR/lab.json``: what the lab made, written before making it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clustermail.admin.errors import AdminError

STATE_FILE = "lab.json"


@dataclass
class Machine:
    name: str
    netns: str
    #: The host side of the machine's veth pair (a port of the bridge).
    port: str
    address: str
    roles: list[str]
    #: The process holding the machine's mount and UTS namespaces (0: powered off).
    init_pid: int = 0
    #: "on", "off" (powered off) or "partitioned".
    power: str = "on"


@dataclass
class LabState:
    tag: str
    subnet: str  # "198.18.X": the lab's /24
    bridge: str
    machines: dict[str, Machine] = field(default_factory=dict)
    #: Disk images, each attached to a loop device (found again with `losetup -j`).
    images: list[str] = field(default_factory=list)
    loop_devices: list[str] = field(default_factory=list)
    etcd_members: list[str] = field(default_factory=list)
    store_url: str = ""
    #: Virtual server → its address on the bridge.
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def host_address(self) -> str:
        return f"{self.subnet}.1"

    def machine(self, name: str) -> Machine:
        try:
            return self.machines[name]
        except KeyError:
            raise AdminError(
                f"no machine {name!r} in the lab (machines: {', '.join(self.machines)})"
            ) from None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabState:
        machines = {k: Machine(**v) for k, v in data.pop("machines", {}).items()}
        return cls(machines=machines, **data)


def state_path(data_dir: Path) -> Path:
    return data_dir / STATE_FILE


def load(data_dir: Path) -> LabState | None:
    path = state_path(data_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AdminError(f"cannot read the lab's state {path}: {exc}") from None
    try:
        return LabState.from_json(json.loads(text))
    except (ValueError, TypeError, KeyError) as exc:
        raise AdminError(f"the lab's state {path} is unreadable ({exc}); remove what it "
                         "lists by hand (ip netns, ip link, losetup) and delete it") from None


def require(data_dir: Path) -> LabState:
    state = load(data_dir)
    if state is None:
        raise AdminError(f"no lab in {data_dir.resolve()}: start one with `clustermail lab up "
                         f"--data {data_dir}`")
    return state


def save(data_dir: Path, state: LabState) -> None:
    """Durably (temp file, fsync, rename): a crash must not lose what was made."""
    path = state_path(data_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state.to_json(), f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove(data_dir: Path) -> None:
    state_path(data_dir).unlink(missing_ok=True)
