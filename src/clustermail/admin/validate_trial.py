"""`clustermail validate --cluster`, on each node: could this node bring up each virtual
server it may own, without disturbing the one that runs?

For every virtual server this node is a possible owner of and does not own, a trial:

* **disk** — folder mode: the folder exists (or can be created), is ours and private,
  and we may write it. Block-device mode: the device is there, holds the filesystem the
  resource names, the mount point exists (or can be created). It never mounts: a device
  a live owner holds is reported "held by its owner" (the reservation record says who).
* **address** — loopback mode: the address can be bound (port 0, no listen). Interface
  mode: the interface exists, the address is *not* up here (it would be a second
  copy of the owner's), and we may add addresses (root or CAP_NET_ADMIN). The address
  is never added.
* **ports** — nothing of ours, or of anyone's, listens on the virtual server's ports
  here, except its owner's own resource host when owner and node share this machine.
  A test bind (no listen, no wildcard) is made only when nobody owns or is assigned the
  virtual server and the address is up here.

Runs on a thread of the node agent: blocking calls are fine, each one short.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clustermail.admin.validate_report import FAIL, PASS, WARN, Check
from clustermail.cluster import ports
from clustermail.cluster.hostspec import substitute
from clustermail.cluster.model import ClusterConfig, VirtualServer
from clustermail.cluster.resources.block_device import Reservation
from clustermail.cluster.view import ClusterView

PORT_PROPERTIES = ("port", "submission_port", "submissions_port", "tls_port")
CAP_NET_ADMIN = 12
#: Filesystem signatures (offset, magic) for when blkid is missing.
_MAGIC = (("ext4", 1080, b"\x53\xef"), ("xfs", 0, b"XFSB"), ("btrfs", 0x10040, b"_BHRfS_M"))
_EXT = ("ext2", "ext3", "ext4")


@dataclass(frozen=True, slots=True)
class Site:
    """What the trials need to know about this node and the cluster right now."""

    #: "" for a machine whose node is not named: every virtual server is tried.
    node: str
    data_dir: Path
    config: ClusterConfig
    view: ClusterView
    #: device -> its reservation record (None: not reserved), read beforehand.
    reservations: Mapping[str, Reservation | None]
    hostname: str = ""

    def owner_of(self, vs: str) -> str | None:
        rec = self.view.owner.get(vs)
        return None if rec is None else rec.node


def trial_checks(site: Site) -> list[Check]:
    checks: list[Check] = []
    for vs in site.config.virtual_servers:
        if site.node and vs.possible_owners is not None and site.node not in vs.possible_owners:
            continue
        owner = site.owner_of(vs.name)
        if owner == site.node:
            epoch = site.view.owner[vs.name].epoch
            checks.append(Check(f"{vs.name}", PASS, f"online here (epoch {epoch}): not tried"))
            continue
        checks.extend(vs_trial(site, vs, owner))
    return checks


def vs_trial(site: Site, vs: VirtualServer, owner: str | None) -> list[Check]:
    values = {"data": str(site.data_dir.resolve()), "vs": vs.name, "node": site.node}
    where = f"online on {owner}" if owner else "not online anywhere"
    out: list[Check] = []
    address: str | None = None
    interface_mode = False
    for r in vs.resources:
        props = {k: substitute(v, values) for k, v in r.properties.items()}
        if r.type == "ip_address":
            address = str(props["address"])
            interface_mode = props.get("mode") == "interface"
            out.append(address_trial(vs.name, address, props, owner))
        elif r.type == "disk":
            out.append(disk_trial(site, vs.name, props, owner))
    if address is not None:
        wanted = ports_of(vs, address)
        if wanted:
            free_to_bind = (owner is None and vs.name not in site.view.assign
                            and (not interface_mode or _address_is_up(address)))
            out.append(ports_trial(site, vs.name, address, wanted, owner, free_to_bind))
    return [Check(c.name, c.result, f"{c.detail} [{where}]") for c in out]


def ports_of(vs: VirtualServer, address: str) -> list[int]:
    """The TCP ports the virtual server listens on at its address: the mail resources'
    port properties, and a process resource's ``tcp_check = "ADDRESS:PORT"``."""
    found: set[int] = set()
    for r in vs.resources:
        for k, v in r.properties.items():
            if k in PORT_PROPERTIES and isinstance(v, int):
                found.add(v)
            elif k == "tcp_check" and isinstance(v, str):
                host, _, port = v.rpartition(":")
                if host.strip("[]") == address and port.isdigit():
                    found.add(int(port))
    return sorted(found)


# --------------------------------------------------------------------------- address


def address_trial(vs: str, address: str, props: Mapping[str, object],
                  owner: str | None) -> Check:
    name = f"{vs} address"
    if props.get("mode") != "interface":
        problem = _bind_problem(address, 0)
        if problem:
            return Check(name, FAIL, f"cannot bind {address}: {problem}")
        return Check(name, PASS, f"{address} can be bound (loopback mode)")
    interface = str(props.get("interface", ""))
    if not Path("/sys/class/net", interface).exists():
        return Check(name, FAIL, f"no interface {interface!r} on this machine")
    if _address_is_up(address):
        return Check(name, FAIL, f"{address} is already up on this machine, which does not "
                     f"own {vs}: remove it (ip addr del) or find who added it")
    if not _may_add_addresses():
        return Check(name, FAIL, "adding addresses needs root or CAP_NET_ADMIN")
    missing = [t for t in ("ip", "arping") if shutil.which(t) is None]
    if missing:
        return Check(name, FAIL, f"missing tools: {', '.join(missing)}")
    return Check(name, PASS, f"{address} can be added on {interface} (not added: "
                 + ("its owner serves it)" if owner else "validate never adds it)"))


def _address_is_up(address: str) -> bool:
    return _bind_problem(address, 0, kind=socket.SOCK_DGRAM) is None


def _bind_problem(address: str, port: int, kind: int = socket.SOCK_STREAM) -> str | None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, kind) as s:
            if port:
                # As the servers bind (asyncio sets it): TIME_WAIT leftovers do not count.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _may_add_addresses() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


# --------------------------------------------------------------------------- ports


def ports_trial(site: Site, vs: str, address: str, wanted: list[int], owner: str | None,
                free_to_bind: bool) -> Check:
    name = f"{vs} ports"
    owner_pid = _owner_agent_pid(site, owner)
    listening = {p: inodes for p in wanted if (inodes := ports.listening_inodes(address, p))}
    holders = _socket_pids(set().union(*listening.values())) if listening else {}
    served, foreign = [], []
    for port, inodes in listening.items():
        # Every socket on it held by the owner's processes (a resource host of its agent).
        if owner_pid is not None and inodes <= holders.keys() and all(
                _descends_from(holders[i], owner_pid) for i in inodes):
            served.append(port)
        else:
            foreign.append(f"{port}{ports.holder_note(address, port)}")
    if foreign:
        return Check(name, FAIL, f"in use on this machine: {'; '.join(foreign)}")
    listed = ", ".join(map(str, wanted))
    if served:
        return Check(name, PASS, f"{listed}: served by its owner {owner}, which runs on this "
                     "machine too")
    if free_to_bind:
        busy = [f"{p}: {problem}" for p in wanted if (problem := _bind_problem(address, p))]
        if busy:
            return Check(name, FAIL, f"cannot bind {address} on {'; '.join(busy)}")
        return Check(name, PASS, f"{listed} free (test bind on {address})")
    return Check(name, PASS, f"{listed}: nothing listens on them here")


def _socket_pids(inodes: set[int]) -> dict[int, int]:
    """socket inode -> a process holding it (one pass over /proc)."""
    links = {f"socket:[{inode}]": inode for inode in inodes}
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(entry / "fd")
        except OSError:
            continue  # gone, or not ours to read
        for fd in fds:
            try:
                inode = links.get(os.readlink(entry / "fd" / fd))
            except OSError:
                continue
            if inode is not None:
                found.setdefault(inode, int(entry.name))
        if len(found) == len(links):
            break
    return found


def _owner_agent_pid(site: Site, owner: str | None) -> int | None:
    """The owner's node agent's PID, if it runs on this very machine."""
    rec = None if owner is None else site.view.nodes.get(owner)
    if rec is None or not rec.pid or rec.host != (site.hostname or socket.gethostname()):
        return None
    return rec.pid


def _descends_from(pid: int, ancestor: int, depth: int = 6) -> bool:
    for _ in range(depth):
        if pid == ancestor:
            return True
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        ppid = next((int(line.split()[1]) for line in status.splitlines()
                     if line.startswith("PPid:")), 0)
        if ppid <= 1:
            return False
        pid = ppid
    return False


# --------------------------------------------------------------------------- disk


def disk_trial(site: Site, vs: str, props: Mapping[str, object], owner: str | None) -> Check:
    name = f"{vs} disk"
    path = Path(str(props["path"]))
    create = props.get("create", True) is not False
    device = props.get("device")
    if device is not None:
        return device_trial(site, name, vs, str(device), path, str(props.get("fstype", "ext4")),
                            create)
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), Path("/"))
        if not create:
            return Check(name, FAIL, f"{path} does not exist (create = false)")
        if not os.access(parent, os.W_OK | os.X_OK):
            return Check(name, FAIL, f"{path} does not exist and {parent} is not writable here")
        return Check(name, PASS, f"{path} can be created")
    return folder_check(name, path, owner)


def folder_check(name: str, path: Path, owner: str | None) -> Check:
    try:
        st = path.stat()
    except OSError as exc:
        return Check(name, FAIL, f"{path}: {exc.strerror or exc}")
    if not stat.S_ISDIR(st.st_mode):
        return Check(name, FAIL, f"{path} is not a folder")
    if st.st_uid != os.geteuid():
        return Check(name, FAIL, f"{path} belongs to uid {st.st_uid}, not to this node's "
                     f"uid {os.geteuid()}")
    if not os.access(path, os.W_OK | os.X_OK):
        return Check(name, FAIL, f"{path} is not writable here")
    if st.st_mode & 0o022:
        return Check(name, FAIL, f"{path} is writable by group or others")
    if st.st_mode & 0o044:
        return Check(name, WARN, f"{path} is readable by group or others (online takes "
                     "that away)")
    return Check(name, PASS, f"{path} present, ours, private and writable"
                 + (f" (not written: {owner} uses it)" if owner else ""))


def device_trial(site: Site, name: str, vs: str, device: str, path: Path, fstype: str,
                 create: bool) -> Check:
    try:
        mode = os.stat(device).st_mode
    except OSError as exc:
        return Check(name, FAIL, f"device {device}: {exc.strerror or exc}")
    if not (stat.S_ISBLK(mode) or stat.S_ISREG(mode)):
        return Check(name, FAIL, f"{device} is neither a block device nor an image file")
    found, problem = filesystem_of(device)
    if found is None:
        return Check(name, WARN if problem else FAIL,
                     f"{device}: {problem}" if problem else
                     f"{device} holds no filesystem recognised (want {fstype})")
    if found != fstype and not (found in _EXT and fstype in _EXT):
        return Check(name, FAIL, f"{device} holds {found}, the resource mounts it as {fstype}")
    if not path.is_dir() and not create:
        return Check(name, FAIL, f"mount point {path} does not exist (create = false)")
    missing = [t for t in ("mount", "umount") if shutil.which(t) is None]
    if missing:
        return Check(name, FAIL, f"missing tools: {', '.join(missing)}")
    if os.geteuid() != 0:
        return Check(name, FAIL, f"mounting {device} needs root")
    held = site.reservations.get(device)
    note = "not mounted: validate never mounts"
    if held is not None:
        live = site.owner_of(held.vs)
        if held.vs != vs and live is not None:
            return Check(name, FAIL, f"{device} is reserved by virtual server {held.vs}, "
                         f"online on {live}: two virtual servers share one device")
        if live is not None:
            note = f"skipped the mount: held by owner {live} (epoch {held.epoch})"
    return Check(name, PASS, f"device {device} present ({found}), mount point {path}; {note}")


def filesystem_of(device: str) -> tuple[str | None, str]:
    """(filesystem type, "") or (None, why it could not be read); (None, "") when the
    device holds nothing recognised."""
    if shutil.which("blkid"):
        try:
            done = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", device],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=10)
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.strip(), ""
            if done.returncode == 2 and not done.stderr.strip():  # blkid: nothing found
                return None, ""
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        with open(device, "rb") as f:
            head = f.read(0x10040 + 8)
    except OSError as exc:
        return None, f"cannot read it to find its filesystem: {exc.strerror or exc}"
    for fs, offset, magic in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return fs, ""
    return None, ""


__all__ = ["Site", "filesystem_of", "trial_checks"]
