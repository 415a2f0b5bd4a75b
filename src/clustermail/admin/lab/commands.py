"""`lab up`, `down`, `status`, `exec`, `power-off`, `power-on`, `partition`, `heal`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from clustermail.admin import local, sample_cluster
from clustermail.admin.errors import AdminError
from clustermail.admin.lab import cluster_file, machines
from clustermail.admin.lab.machines import LabError
from clustermail.admin.lab.state import LabState, Machine, load, remove, require, save
from clustermail.admin.status import build_status
from clustermail.cluster.config import render_toml
from clustermail.cluster.view import read_view
from clustermail.coord import CoordError, Store, open_store
from clustermail.private_files import make_private_dir, write_private_text

CLIENT = "client"
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
READY_TIMEOUT = 60.0
STORE_TIMEOUT = 10.0
DISK_MIB = 256
TOOLS = ("ip", "nsenter", "unshare", "arping", "etcd", "losetup", "mkfs.ext4")


def require_root() -> None:
    if os.geteuid() != 0:
        raise AdminError("the lab needs root (network namespaces, bridges, mounts): "
                         "run it with sudo")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise AdminError(f"the lab needs {', '.join(missing)} on PATH (Debian: apt-get install "
                         "iproute2 util-linux iputils-arping etcd-server e2fsprogs)")


# --------------------------------------------------------------------------- up


async def up(data_dir: Path, count: int, etcd: int, console: Console,
             timing: str = "default") -> int:
    require_root()
    if count < 2:
        raise AdminError(f"--machines {count}: the lab needs at least 2 machines")
    if etcd < 1 or etcd % 2 == 0 or etcd > count:
        raise AdminError(f"--etcd {etcd}: give an odd number of members, at most --machines "
                         f"({count})")
    existing = load(data_dir)
    if existing is not None:
        raise AdminError(f"a lab already exists in {data_dir.resolve()} (bridge "
                         f"{existing.bridge}): `clustermail lab down --data {data_dir}` first")
    stale = [d for d in ("etcd", "disks", "images", "undo") if (data_dir / d).exists()]
    if stale:
        # A new etcd cluster restarts fencing epochs: the old disks would refuse it.
        raise AdminError(f"{data_dir.resolve()} holds a previous lab's data ({', '.join(stale)}"
                         "); delete that folder or give another --data")
    make_private_dir(data_dir)
    make_private_dir(data_dir / "logs")
    tag = f"{random.randrange(16**4):04x}"
    subnet = machines.unused_subnet()
    state = LabState(tag=tag, subnet=subnet, bridge=f"cml{tag}br")
    names = cluster_file.node_names(count)
    for i, name in enumerate([*names, CLIENT], 1):
        roles = ["client"] if name == CLIENT else (["etcd"] if i <= etcd else []) + ["node"]
        address = (cluster_file.client_address(subnet) if name == CLIENT
                   else cluster_file.machine_address(subnet, i))
        state.machines[name] = Machine(name=name, netns=f"cml{tag}-{name}",
                                       port=f"cml{tag}v{i}", address=address, roles=roles)
    state.etcd_members = names[:etcd]
    state.store_url = "etcd://" + ",".join(
        f"{state.machines[n].address}:{ETCD_CLIENT_PORT}" for n in state.etcd_members)
    images = {vs: data_dir.resolve() / "images" / f"{vs}.img"
              for vs in sample_cluster.VIRTUAL_SERVERS}
    state.images = [str(p) for p in images.values()]
    state.addresses = {vs: cluster_file.vs_address(subnet, i)
                       for i, vs in enumerate(sample_cluster.VIRTUAL_SERVERS, 1)}
    # Listed before made: `lab down` removes whatever exists of it.
    save(data_dir, state)
    try:
        console.print(f"network: bridge {state.bridge}, {subnet}.0/24 (this machine: "
                      f"{state.host_address})")
        machines.make_bridge(state.bridge, state.host_address)
        for m in state.machines.values():
            machines.make_machine(m, state.bridge)
            m.init_pid = machines.start_init(m)
            save(data_dir, state)
            console.print(f"machine {m.name}: {m.address} ({', '.join(m.roles)})")
        make_private_dir(data_dir / "images")
        devices: dict[str, str] = {}
        for vs, image in images.items():
            devices[vs] = machines.make_disk(image, DISK_MIB)
            state.loop_devices.append(devices[vs])
            save(data_dir, state)
            console.print(f"disk of {vs}: {devices[vs]} (ext4 on {image})")
        config = cluster_file.lab_config(subnet, count, devices, timing)
        for name in state.etcd_members:
            start_etcd(data_dir, state, state.machines[name])
        await wait_etcd(state, console)
        write_private_text(data_dir / "cluster.toml", render_toml(config))
        store = await open_lab_store(state)
        try:
            await local.apply_config(store, config)
            console.print(f"applied the lab's cluster ({data_dir / 'cluster.toml'}) to "
                          f"{state.store_url}")
            for name in names:
                start_node(data_dir, state, state.machines[name])
                console.print(f"{name}: node agent started (log {data_dir / 'logs' / name}.log)")
            await wait_online(store, len(config.virtual_servers), console)
            await local._seed_users(store, config, data_dir, console)
        finally:
            await store.close()
    except BaseException:
        console.print(f"[red]lab up failed; `clustermail lab down --data {data_dir}` "
                      "removes what was made[/]")
        raise
    console.print(reach_lines(state))
    console.print(f"the store: --store {state.store_url}  (e.g. clustermail status --store "
                  f"{state.store_url})")
    console.print(f"try: clustermail lab exec client --data {data_dir} -- swaks --server "
                  f"{state.addresses.get('mail3', '?')}:2525 --to carol@example.test")
    return 0


def etcd_argv(data_dir: Path, state: LabState, m: Machine) -> list[str]:
    peers = ",".join(f"{n}=http://{state.machines[n].address}:{ETCD_PEER_PORT}"
                     for n in state.etcd_members)
    client = f"http://{m.address}:{ETCD_CLIENT_PORT}"
    peer = f"http://{m.address}:{ETCD_PEER_PORT}"
    return ["etcd", "--name", m.name, "--data-dir", str(data_dir.resolve() / "etcd" / m.name),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", peers, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"clustermail-lab-{state.tag}",
            # A member back from a partition has raised its term campaigning alone;
            # without the pre-vote phase it deposes the healthy leader on return, and
            # the leaderless seconds expire healthy nodes' leases (etcd 3.4's default
            # is off; 3.5 turns it on).
            "--pre-vote"]


def start_etcd(data_dir: Path, state: LabState, m: Machine) -> None:
    make_private_dir(data_dir / "etcd")
    machines.spawn(m, etcd_argv(data_dir, state, m), data_dir / "logs" / f"{m.name}-etcd.log")


def start_node(data_dir: Path, state: LabState, m: Machine) -> None:
    argv = [sys.executable, "-m", "clustermail", "node", "run", "--store", state.store_url,
            "--name", m.name, "--data", str(data_dir.resolve())]
    machines.spawn(m, argv, data_dir / "logs" / f"{m.name}.log")


def etcd_healthy(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:{ETCD_CLIENT_PORT}/health",
                                    timeout=1) as resp:
            return b'"true"' in resp.read()
    except OSError:
        return False


async def wait_etcd(state: LabState, console: Console) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    for name in state.etcd_members:
        address = state.machines[name].address
        while not await asyncio.to_thread(etcd_healthy, address):
            if time.monotonic() > deadline:
                raise LabError(f"etcd on {name} ({address}) not healthy in "
                               f"{READY_TIMEOUT:.0f} s: see its log under logs/")
            await asyncio.sleep(0.1)
    console.print(f"etcd: {len(state.etcd_members)} member(s) healthy on "
                  f"{', '.join(state.etcd_members)}")


async def open_lab_store(state: LabState) -> Store:
    try:
        async with asyncio.timeout(STORE_TIMEOUT):
            return await open_store(state.store_url)
    except TimeoutError:
        raise AdminError(f"the lab's store {state.store_url} did not answer in "
                         f"{STORE_TIMEOUT:.0f} s") from None


async def wait_online(store: Store, total: int, console: Console) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    shown = -1
    while time.monotonic() < deadline:
        status = build_status(await read_view(store))
        online = sum(1 for v in status["virtual_servers"] if v["state"] == "online")
        if online != shown:
            console.print(f"virtual servers online: {online}/{total}")
            shown = online
        if online == total:
            return
        await asyncio.sleep(0.2)
    console.print(f"[yellow]not every virtual server came online in {READY_TIMEOUT:.0f} s; "
                  "see `clustermail lab status` and the logs[/]")


def reach_lines(state: LabState) -> str:
    p = sample_cluster.PORTS
    lines = ["reach the virtual servers from this machine or from the client machine:"]
    lines += [f"  {vs}: {address}  (SMTP {address}:{p['smtp']}, IMAP {address}:{p['imap']}, "
              f"POP3 {address}:{p['pop3']})" for vs, address in state.addresses.items()]
    return "\n".join(lines)


# --------------------------------------------------------------------------- down


def down(data_dir: Path, console: Console) -> int:
    require_root()
    state = require(data_dir)
    problems: list[str] = []
    for m in state.machines.values():
        try:
            machines.remove_machine(m)
            console.print(f"removed machine {m.name}")
        except LabError as exc:
            problems.append(str(exc))
    # After the machines: their mount namespaces (and so the mounts) are gone. Only
    # devices still attached to our images: a number may have been reused since.
    for device in sorted({d for image in state.images for d in machines.loops_of(image)}):
        machines.detach_loop(device)
        console.print(f"detached {device}")
    try:
        machines.remove_bridge(state.bridge)
        console.print(f"removed bridge {state.bridge}")
    except LabError as exc:
        problems.append(str(exc))
    if problems:
        raise AdminError("lab down left something behind (run it again): "
                         + "; ".join(problems))
    remove(data_dir)
    console.print(f"the lab is gone; its data stays in {data_dir} (delete it before the next "
                  "lab up there)")
    return 0


# --------------------------------------------------------------------------- status


async def status_data(state: LabState) -> dict[str, Any]:
    rows = []
    for m in state.machines.values():
        running = machines.commands([p for p in machines.pids(m) if p != m.init_pid])
        rows.append({"name": m.name, "address": m.address, "roles": m.roles,
                     "state": m.power if machines.is_on(m) else "off",
                     "processes": [{"pid": p, "command": c} for p, c in sorted(running.items())]})
    cluster: dict[str, Any] | None = None
    error: str | None = None
    try:
        store = await open_lab_store(state)
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                cluster = build_status(await read_view(store))
        finally:
            await store.close()
    except (CoordError, AdminError, TimeoutError) as exc:
        error = str(exc) or "the store did not answer"
    return {"bridge": state.bridge, "subnet": f"{state.subnet}.0/24",
            "store": state.store_url, "machines": rows, "addresses": state.addresses,
            "cluster": cluster, "cluster_error": error}


def short(command: str) -> str:
    """What a process is, in a word or two."""
    if " node run " in command:
        return "node agent"
    if "cluster.host_main" in command:
        return "resource host"
    return Path(command.split(" ", 1)[0]).name


def status_tables(data: dict[str, Any]) -> list[Table | str]:
    table = Table(title=f"lab on bridge {data['bridge']} ({data['subnet']})")
    for col in ("machine", "address", "roles", "state", "processes"):
        table.add_column(col)
    for m in data["machines"]:
        procs = "\n".join(f"{p['pid']} {short(p['command'])}" for p in m["processes"])
        table.add_row(m["name"], m["address"], ", ".join(m["roles"]), m["state"], procs)
    out: list[Table | str] = [table]
    if data["cluster"] is None:
        out.append(f"cluster: {data['cluster_error']}")
    else:
        vs_table = Table(title="virtual servers")
        for col in ("name", "address", "state", "owner"):
            vs_table.add_column(col)
        for vs in data["cluster"]["virtual_servers"]:
            vs_table.add_row(vs["name"], data["addresses"].get(vs["name"], ""), vs["state"],
                             vs["owner"] or "-")
        out.append(vs_table)
    return out


# --------------------------------------------------------------------------- faults


def exec_in(data_dir: Path, name: str, argv: list[str]) -> int:
    require_root()
    state = require(data_dir)
    if not argv:
        raise AdminError("lab exec: give a command after --")
    prefix = machines.enter(state.machine(name))
    try:
        return subprocess.run([*prefix, *argv]).returncode
    except OSError as exc:
        raise AdminError(f"lab exec {name}: {exc}") from None


def power_off(data_dir: Path, name: str, console: Console) -> int:
    require_root()
    state = require(data_dir)
    m = state.machine(name)
    # The cable first, then every process at once: nothing gets to say goodbye.
    machines.set_link(m, False)
    machines.kill_all(m)
    m.init_pid, m.power = 0, "off"
    save(data_dir, state)
    console.print(f"{name} is powered off")
    return 0


def power_on(data_dir: Path, name: str, console: Console) -> int:
    require_root()
    state = require(data_dir)
    m = state.machine(name)
    if machines.is_on(m):
        raise AdminError(f"{name} is already on")
    machines.kill_all(m)
    machines.reset_interface(m)  # a booted machine has forgotten the addresses it held
    m.init_pid = machines.start_init(m)
    m.power = "on"
    save(data_dir, state)
    machines.set_link(m, True)
    if "etcd" in m.roles:
        start_etcd(data_dir, state, m)
    if "node" in m.roles:
        start_node(data_dir, state, m)
    console.print(f"{name} is powered on ({', '.join(m.roles)} started)")
    return 0


def freeze(data_dir: Path, name: str, thaw: bool, console: Console) -> int:
    """SIGSTOP (or SIGCONT) of every process on the machine: a machine that hangs
    with its cable in, then wakes up believing it still owns what it ran."""
    require_root()
    m = require(data_dir).machine(name)
    for pid in machines.pids(m):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT if thaw else signal.SIGSTOP)
    console.print(f"{name} is {'running again' if thaw else 'frozen'}")
    return 0


def partition(data_dir: Path, names: list[str], console: Console) -> int:
    require_root()
    state = require(data_dir)
    chosen = [state.machine(n) for n in names]
    for m in chosen:
        machines.set_link(m, False)
        if m.power == "on":
            m.power = "partitioned"
    save(data_dir, state)
    console.print(f"cut off from the bridge: {', '.join(names)}")
    return 0


def heal(data_dir: Path, console: Console) -> int:
    require_root()
    state = require(data_dir)
    healed = []
    for m in state.machines.values():
        if m.power == "partitioned":
            machines.set_link(m, True)
            m.power = "on"
            healed.append(m.name)
    save(data_dir, state)
    console.print(f"reconnected: {', '.join(healed) or 'nothing was partitioned'}")
    return 0


def cleanup_after_failure(data_dir: Path) -> None:
    """For tests: remove a lab whatever state it is in."""
    with contextlib.suppress(AdminError):
        down(data_dir, Console(quiet=True))
