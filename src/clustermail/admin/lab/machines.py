"""Machines as namespaces: the bridge, veth pairs, init processes, power and links.

Every function here runs a command (``ip``, ``nsenter``) and raises
:class:`LabError` with the command's own message when it fails.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from clustermail.admin.errors import AdminError
from clustermail.admin.lab.state import Machine

COMMAND_TIMEOUT = 15.0
INIT_TIMEOUT = 10.0


class LabError(AdminError):
    """A command that builds or changes the lab failed."""


def run(*argv: str, check: bool = True) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{' '.join(argv)}: {exc}") from None
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def unused_subnet() -> str:
    """A /24 of 198.18.0.0/15 (RFC 2544: for test networks, never a real LAN) that this
    machine routes nowhere but through its default route."""
    for _ in range(100):
        subnet = f"198.{random.randint(18, 19)}.{random.randint(0, 255)}"
        routes = run("ip", "-4", "route", "show", "to", "match", f"{subnet}.1").splitlines()
        if all(line.startswith("default") for line in routes):
            return subnet
    raise LabError("no unused /24 in 198.18.0.0/15 on this machine")


def make_bridge(bridge: str, host_address: str) -> None:
    run("ip", "link", "add", bridge, "type", "bridge")
    run("ip", "addr", "add", f"{host_address}/24", "dev", bridge)
    run("ip", "link", "set", bridge, "up")


def make_machine(m: Machine, bridge: str) -> None:
    """The machine's netns and its eth0 on the bridge (its address, link up)."""
    run("ip", "netns", "add", m.netns)
    inner = f"{m.port}p"
    run("ip", "link", "add", m.port, "type", "veth", "peer", "name", inner)
    run("ip", "link", "set", m.port, "master", bridge)
    run("ip", "link", "set", m.port, "up")
    run("ip", "link", "set", inner, "netns", m.netns)
    run("ip", "-n", m.netns, "link", "set", inner, "name", "eth0")
    run("ip", "-n", m.netns, "link", "set", "lo", "up")
    reset_interface(m)


def reset_interface(m: Machine) -> None:
    """eth0 as after a boot: only the machine's own address, link up."""
    run("ip", "-n", m.netns, "addr", "flush", "dev", "eth0")
    run("ip", "-n", m.netns, "addr", "add", f"{m.address}/24", "dev", "eth0")
    run("ip", "-n", m.netns, "link", "set", "eth0", "up")


def start_init(m: Machine) -> int:
    """Starts the process that holds the machine's mount and UTS namespaces: mounts made
    on the machine stay private to it and disappear when it loses power."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", m.netns, "unshare", "--mount", "--uts", "--propagation",
         "private", "sh", "-c", f"hostname {m.name} && exec sleep infinity"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    # ip, unshare and sh exec one another: the pid is sleep's once its namespaces exist.
    deadline = time.monotonic() + INIT_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise LabError(f"machine {m.name}: cannot start its namespaces: {err.strip()}")
        with contextlib.suppress(OSError):
            if Path(f"/proc/{proc.pid}/comm").read_text().strip() == "sleep":
                return proc.pid
        time.sleep(0.01)
    proc.kill()
    raise LabError(f"machine {m.name}: its namespaces were not ready in {INIT_TIMEOUT:.0f} s")


def is_on(m: Machine) -> bool:
    """The machine's init process is alive and in the machine's netns (a recorded pid
    may belong to another process by now)."""
    return bool(m.init_pid) and alive(m.init_pid) and m.init_pid in pids(m)


def enter(m: Machine) -> list[str]:
    """The command prefix that runs a program on the machine."""
    if not is_on(m):
        raise LabError(f"machine {m.name} is powered off (clustermail lab power-on {m.name})")
    return ["nsenter", "--target", str(m.init_pid), "--net", "--mount", "--uts", "--"]


def spawn(m: Machine, argv: list[str], log: Path) -> int:
    """Starts a long-running program on the machine, in its own session; its pid."""
    with open(log, "ab") as out:
        os.chmod(log, 0o600)
        proc = subprocess.Popen([*enter(m), *argv], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=out, start_new_session=True)
    return proc.pid


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pids(m: Machine) -> list[int]:
    """Every process on the machine (in its network namespace)."""
    out = run("ip", "netns", "pids", m.netns, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def commands(pid_list: list[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    for pid in pid_list:
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            found[pid] = " ".join(c.decode(errors="replace") for c in cmd if c)[:120]
    return found


def kill_all(m: Machine, timeout: float = 5.0) -> None:
    """kill -9 of everything on the machine, until nothing is left (new processes
    forked meanwhile are killed too)."""
    deadline = time.monotonic() + timeout
    while True:
        # Only what is in the machine's netns (its init too): never a recorded pid that
        # may have been reused since.
        left = [p for p in pids(m) if alive(p)]
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise LabError(f"machine {m.name}: processes {left} survive kill -9")
        time.sleep(0.02)


def set_link(m: Machine, up: bool) -> None:
    """The machine's cable: its bridge port down cuts it off, both directions."""
    run("ip", "link", "set", m.port, "up" if up else "down")


def netns_exists(netns: str) -> bool:
    return Path("/run/netns", netns).exists()


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def remove_machine(m: Machine) -> None:
    """Kills everything on the machine and deletes its netns (and so its veth pair)."""
    if netns_exists(m.netns):
        kill_all(m)
        run("ip", "netns", "del", m.netns)
    if link_exists(m.port):
        # Deleting the netns deletes the pair too, but the kernel does it in the background.
        run("ip", "link", "del", m.port, check=False)


def remove_bridge(bridge: str) -> None:
    if link_exists(bridge):
        run("ip", "link", "del", bridge)


def make_disk(image: Path, size_mib: int) -> str:
    """An ext4 image attached to a free loop device; the device's path."""
    with open(image, "wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    os.chmod(image, 0o600)
    run("mkfs.ext4", "-q", "-F", str(image))
    return run("losetup", "-f", "--show", str(image)).strip()


def loops_of(image: str) -> list[str]:
    """The loop devices an image is attached to."""
    out = run("losetup", "-j", image, check=False)
    return [line.split(":", 1)[0] for line in out.splitlines() if ":" in line]


def detach_loop(device: str) -> None:
    if Path(device).exists():
        run("losetup", "-d", device, check=False)
